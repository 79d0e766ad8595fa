"""Patient-aware batches: every image once per epoch, k images of a patient side by side."""

import numpy as np
import pytest
import torch

from medcl_lite.data.samplers import PatientBatchSampler, same_patient_rate

PATIENTS = np.repeat(np.arange(10), 4)  # 10 patients x 4 time points, grouped in order


def _epoch(sampler):
    return [list(b) for b in sampler]


def test_every_image_once_and_groups_of_k():
    sampler = PatientBatchSampler(PATIENTS, batch_size=8, k=2, generator=torch.Generator().manual_seed(0))
    batches = _epoch(sampler)
    assert len(batches) == len(sampler) == 5
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(flat), np.arange(40))  # 40 images, 40 = 5 x 8: none dropped
    for batch in batches:  # consecutive pairs come from one patient
        codes = PATIENTS[np.asarray(batch)].reshape(-1, 2)
        assert (codes[:, 0] == codes[:, 1]).all()
    assert same_patient_rate(batches, PATIENTS) == 1.0


def test_shuffled_per_epoch_and_seeded():
    a = PatientBatchSampler(PATIENTS, 8, 2, torch.Generator().manual_seed(1))
    b = PatientBatchSampler(PATIENTS, 8, 2, torch.Generator().manual_seed(1))
    first, second = _epoch(a), _epoch(a)
    assert first == _epoch(b) and first != second


def test_plain_shuffle_rarely_meets_the_same_patient():
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(PATIENTS), generator=gen).numpy()
    plain = [order[s : s + 8] for s in range(0, 40, 8)]
    assert same_patient_rate(plain, PATIENTS) < same_patient_rate(
        _epoch(PatientBatchSampler(PATIENTS, 8, 2, gen)), PATIENTS
    )


def test_same_patient_rate_hand_computed():
    assert same_patient_rate([[0, 1, 4]], PATIENTS) == pytest.approx(2 / 3)  # 0, 1: patient 0
    assert same_patient_rate([[0, 4, 8]], PATIENTS) == 0.0


def test_short_patients_and_dropped_last_batch():
    patients = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3])  # 9 images, a patient with one image
    sampler = PatientBatchSampler(patients, batch_size=4, k=3, generator=torch.Generator().manual_seed(0))
    batches = _epoch(sampler)
    assert len(batches) == 2 and all(len(b) == 4 for b in batches)
    assert len(set(np.concatenate(batches))) == 8


@pytest.mark.parametrize("kw, match", [({"k": 0}, "images_per_patient"), ({"k": 9}, "images_per_patient"),
                                       ({"batch_size": 50}, "exceeds")])
def test_bad_arguments(kw, match):
    args = {"patients": PATIENTS, "batch_size": 8, "k": 2} | kw
    with pytest.raises(ValueError, match=match):
        PatientBatchSampler(**args)
