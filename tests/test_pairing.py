"""Pairing strategies: each one's mask on hand-made metadata."""

import pytest
import torch

from medcl_lite import pairing


def test_instance_is_identity():
    assert torch.equal(pairing.instance(3), torch.eye(3, dtype=torch.bool))
    assert pairing.instance(2, 4).shape == (2, 4)


def test_temporal_same_patient_and_unknown_codes():
    mask = pairing.temporal(torch.tensor([0, 1, 0, -1]))
    expected = torch.tensor(
        [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(mask, expected)
    assert pairing.temporal([0, 1], [1, 1, 0]).tolist() == [[False, False, True], [True, True, False]]


def test_positional_threshold_and_nan():
    depth = torch.tensor([0.1, 0.15, 0.5, float("nan")])
    mask = pairing.positional(depth, threshold=0.1)
    assert mask[0, 1] and mask[1, 0] and not mask[0, 2]
    assert not mask[3].any() and not mask[:, 3].any()
    assert pairing.positional(depth, threshold=0.5)[0, 2]
    with pytest.raises(ValueError, match="threshold"):
        pairing.positional(depth, threshold=0)


def test_partition_bins_match_slice_runs():
    n = 8
    depth = torch.tensor([(i + 1) / n for i in range(n)])
    assert pairing.partition_index(depth, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # volumes of different lengths share bins by relative position
    other = torch.tensor([(i + 1) / 12 for i in range(12)])
    assert pairing.partition_index(other, 4).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    mask = pairing.partition(depth, other, parts=4)
    assert mask[0, 2] and not mask[0, 3]
    # 4 bins over 6 slices: bin k holds the depths in (k/4, (k+1)/4], i.e. ceil(4 d) - 1
    six = torch.tensor([(i + 1) / 6 for i in range(6)])
    assert pairing.partition_index(six, 4).tolist() == [0, 1, 1, 2, 3, 3]


def test_positives_dispatch_and_keys():
    meta_q = {"patient": torch.tensor([0, 1]), "depth": torch.tensor([0.2, 0.9])}
    meta_k = {"patient": torch.tensor([1, 0, 0]), "depth": torch.tensor([0.25, 0.85, 0.5])}
    assert not pairing.positives("instance", meta_q, meta_k).any()
    assert pairing.positives("temporal", meta_q, meta_k).tolist() == [[False, True, True], [True, False, False]]
    assert pairing.positives("positional", meta_q, meta_k, threshold=0.1).tolist() == [
        [True, False, False],
        [False, True, False],
    ]
    assert pairing.positives("partition", meta_q, parts=2).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown pairing"):
        pairing.positives("spatial", meta_q)


def test_equal_codes_matches_known_equal_codes_only():
    mask = pairing.equal_codes(torch.tensor([3, -1, 4]), torch.tensor([3, -1, 5, 4]))
    assert mask.tolist() == [[True, False, False, False], [False] * 4, [False, False, False, True]]


def test_positional_slices_exactly_theta_apart_are_negatives_on_both_sides():
    """In float32, 0.5 - 0.4 < 0.1 < 0.6 - 0.5: without a tolerance one neighbour would be positive."""
    depth = torch.arange(1, 11, dtype=torch.float32) / 10  # a 10-slice volume
    mask = pairing.positional(depth, threshold=0.1)
    assert mask.sum(dim=1).tolist() == [1] * 10  # each slice only with itself
    wider = pairing.positional(depth, threshold=0.2)
    assert wider[4].nonzero().flatten().tolist() == [3, 4, 5]  # 0.4, 0.5, 0.6; not 0.3 or 0.7
    assert pairing.positional(torch.tensor([0.5, 0.5 + 1e-7]), threshold=1e-6).all()  # tiny θ still works


def test_read_only_arrays_are_accepted_without_a_warning():
    import warnings

    import numpy as np

    depth = np.linspace(0.1, 1.0, 10, dtype=np.float32)
    depth.setflags(write=False)  # as a pandas column's values can be
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pairing.positional(depth, threshold=0.15).sum() == 10 + 2 * 9
