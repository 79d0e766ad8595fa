"""Tests of medcl_lite.data.datasets: item contents, splits by patient, label budgets, protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from medcl_lite.data.datasets import (
    ITEM_META_KEYS,
    LabelledDataset,
    Protocol,
    TwoViewDataset,
    _split_counts,
    choose_labelled,
    choose_labelled_by,
    choose_labelled_patients,
    choose_labelled_volumes,
    cross_validation_folds,
    make_protocol,
    split_by_patient,
)
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.transforms import joint_transform, view_transform

SIZE = 32


@pytest.fixture(scope="module")
def xrays() -> SliceSet:
    """2 sites x 6 patients x 3 time points of 32 x 32 "chest X-rays" with lungs 1 and 2."""
    rng = np.random.default_rng(0)
    images, masks, rows = [], [], []
    for site in ("A", "B"):
        for p in range(6):
            width = 4 + p  # a patient keeps their anatomy over time
            for t in range(3):
                mask = np.zeros((SIZE, SIZE), np.uint8)
                mask[6:26, 16 - 2 - width : 14] = 1
                mask[6:26, 18 : 18 + width + 2] = 2
                image = 0.2 + 0.5 * (mask > 0) + 0.05 * rng.standard_normal((SIZE, SIZE))
                images.append(np.clip(image, 0, 1).astype(np.float32))
                masks.append(mask)
                rows.append(
                    {
                        "sample_id": f"{site}{p}-t{t}",
                        "patient_id": f"{site}{p}",
                        "site": site,
                        "time": t,
                        "volume_id": "",
                        "slice_index": 0,
                        "n_slices": 1,
                        "depth": np.nan,
                    }
                )
    return SliceSet(
        images=np.stack(images),
        masks=np.stack(masks),
        meta=pd.DataFrame(rows),
        classes=("background", "right lung", "left lung"),
        name="tiny-xray",
    )


@pytest.fixture(scope="module")
def volumes() -> SliceSet:
    """4 patients (2 per site) x 2 volumes (ED, ES) x 5 slices, with depth (PCL eq. 1)."""
    rows, images = [], []
    for p in range(4):
        for phase in ("ED", "ES"):
            for i in range(5):
                images.append(np.full((SIZE, SIZE), (i + 1) / 5, np.float32))
                rows.append(
                    {
                        "sample_id": f"v{p}{phase}-{i}",
                        "patient_id": f"v{p}",
                        "site": "AB"[p % 2],
                        "time": int(phase == "ES"),
                        "volume_id": f"v{p}{phase}",
                        "slice_index": i,
                        "n_slices": 5,
                        "depth": (i + 1) / 5,
                    }
                )
    images = np.stack(images)
    return SliceSet(images, (images > 0.5).astype(np.uint8), pd.DataFrame(rows), name="tiny-vol")


def patients_of(meta: pd.DataFrame, rows: np.ndarray) -> set[str]:
    return set(meta["patient_id"].iloc[rows])


# --------------------------------------------------------------------------- TwoViewDataset
def test_two_view_item_shapes_dtypes_and_metadata(xrays):
    dataset = TwoViewDataset(xrays, view_transform(24))
    assert len(dataset) == 36
    item = dataset[7]
    assert set(item) == {"view1", "view2", *ITEM_META_KEYS}
    for key in ("view1", "view2"):
        assert item[key].shape == (1, 24, 24) and item[key].dtype == torch.float32
    assert not torch.equal(item["view1"], item["view2"])
    assert item["index"] == 7
    assert item["patient"] == xrays.codes("patient_id")[7]
    assert item["site"] == 0 and item["time"] == 1 and item["volume"] == -1
    assert item["depth"].dtype == torch.float32 and torch.isnan(item["depth"])


def test_codes_agree_across_subsets(xrays):
    rows = np.array([35, 3, 20])
    part = TwoViewDataset(xrays, view_transform(16), index=rows)
    whole = TwoViewDataset(xrays, view_transform(16))
    for i, row in enumerate(rows):
        for key in ("index", "patient", "site", "time", "volume"):
            assert part[i][key] == whole[int(row)][key]
    assert part[2]["site"] == 1 and part[0]["patient"] != part[1]["patient"]


def test_default_collate_batches_two_views(volumes):
    dataset = TwoViewDataset(volumes, view_transform(16, "pcl"))
    batch = next(iter(DataLoader(dataset, batch_size=10, shuffle=False)))
    assert batch["view1"].shape == (10, 1, 16, 16) and batch["view1"].dtype == torch.float32
    assert batch["patient"].dtype == torch.int64 and batch["patient"].shape == (10,)
    assert batch["depth"].dtype == torch.float32
    torch.testing.assert_close(batch["depth"], torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0] * 2))
    assert batch["volume"].tolist() == [0] * 5 + [1] * 5
    assert batch["time"].tolist() == [0] * 5 + [1] * 5


def test_two_view_accepts_boolean_index_and_rejects_bad_input(xrays):
    keep = np.zeros(len(xrays), bool)
    keep[[1, 4]] = True
    assert TwoViewDataset(xrays, view_transform(16), index=keep).index.tolist() == [1, 4]
    with pytest.raises(ValueError, match="transform"):
        TwoViewDataset(xrays, None)
    with pytest.raises(ValueError, match="index"):
        TwoViewDataset(xrays, view_transform(16), index=[0, 36])
    with pytest.raises(ValueError, match="index"):
        TwoViewDataset(xrays, view_transform(16), index=[0.5])
    with pytest.raises(IndexError):
        TwoViewDataset(xrays, view_transform(16), index=[0, 1])[2]


# --------------------------------------------------------------------------- LabelledDataset
def test_labelled_item_without_transform_is_the_data(xrays):
    dataset = LabelledDataset(xrays, index=np.arange(5, 10))
    item = dataset[2]
    assert item["image"].shape == (1, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (SIZE, SIZE) and item["mask"].dtype == torch.int64
    np.testing.assert_array_equal(item["image"][0].numpy(), xrays.images[7])
    np.testing.assert_array_equal(item["mask"].numpy(), xrays.masks[7])
    assert item["index"] == 7 and set(ITEM_META_KEYS) <= set(item)
    item["image"] += 1  # items must not alias the SliceSet
    assert xrays.images[7].max() <= 1.0


def test_labelled_with_joint_transform_keeps_labels(xrays):
    torch.manual_seed(0)
    dataset = LabelledDataset(xrays, joint_transform(24, "light"))
    batch = next(iter(DataLoader(dataset, batch_size=12)))
    assert batch["image"].shape == (12, 1, 24, 24) and batch["mask"].shape == (12, 24, 24)
    assert set(batch["mask"].unique().tolist()) == {0, 1, 2}


def test_labelled_needs_masks(xrays):
    unlabelled = SliceSet(xrays.images, None, xrays.meta, name="no-masks")
    with pytest.raises(ValueError, match="no-masks"):
        LabelledDataset(unlabelled)


# --------------------------------------------------------------------------- split_by_patient
@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        (6, [0.55, 0.15, 0.3], [3, 1, 2]),
        (10, [0.5, 0.5], [5, 5]),
        (3, [0.9, 0.1], [2, 1]),  # a split with a positive fraction gets a patient
        (1, [0.5, 0.5], [1, 0]),
        (0, [0.7, 0.3], [0, 0]),
    ],
)
def test_split_counts(n, fractions, expected):
    assert _split_counts(n, fractions) == expected


def test_split_by_patient_is_disjoint_complete_and_stratified(xrays):
    fractions = {"train": 0.55, "val": 0.15, "test": 0.3}
    split = split_by_patient(xrays.meta, fractions, seed=0)
    all_rows = np.concatenate(list(split.values()))
    assert sorted(all_rows.tolist()) == list(range(len(xrays)))
    names = list(split)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not patients_of(xrays.meta, split[a]) & patients_of(xrays.meta, split[b])
    for name, n_patients in zip(names, (3, 1, 2), strict=True):
        sites = xrays.meta["site"].iloc[split[name]]
        assert sites.value_counts().to_dict() == {"A": 3 * n_patients, "B": 3 * n_patients}


def test_split_by_patient_is_deterministic_by_seed(xrays):
    fractions = {"train": 0.5, "test": 0.5}
    first = split_by_patient(xrays.meta, fractions, seed=4)
    assert all(
        np.array_equal(first[k], split_by_patient(xrays.meta, fractions, 4)[k]) for k in first
    )
    # the patients' splits do not depend on the order of the rows
    shuffled = xrays.meta.sample(frac=1, random_state=1).reset_index(drop=True)
    again = split_by_patient(shuffled, fractions, seed=4)
    for k in fractions:
        assert patients_of(shuffled, again[k]) == patients_of(xrays.meta, first[k])
    others = [split_by_patient(xrays.meta, fractions, seed=s)["test"] for s in range(5)]
    assert len({tuple(o) for o in others}) > 1


def test_split_without_stratification_can_unbalance_sites(xrays):
    split = split_by_patient(xrays.meta, {"a": 0.5, "b": 0.5}, seed=0, stratify=None)
    assert len(patients_of(xrays.meta, split["a"])) == 6
    assert not patients_of(xrays.meta, split["a"]) & patients_of(xrays.meta, split["b"])


def test_split_errors(xrays):
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_patient(xrays.meta, {"train": 0.5, "test": 0.4}, seed=0)
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_patient(xrays.meta, {"train": 1.2, "test": -0.2}, seed=0)
    with pytest.raises(ValueError, match="scanner"):
        split_by_patient(xrays.meta, {"all": 1.0}, seed=0, stratify="scanner")


# --------------------------------------------------------------------------- label budgets
def test_choose_labelled_one_image_per_patient_first(xrays):
    pool = np.arange(len(xrays))  # 12 patients x 3 time points
    patients = xrays.meta["patient_id"].to_numpy()
    for n in (1, 5, 12):
        chosen = choose_labelled(xrays.meta, pool, n, seed=0)
        assert len(chosen) == n and len(set(patients[chosen])) == n
    chosen = choose_labelled(xrays.meta, pool, 15, seed=0)
    counts = pd.Series(patients[chosen]).value_counts()
    assert len(counts) == 12 and counts.max() == 2 and counts.sum() == 15  # spread evenly
    assert choose_labelled(xrays.meta, pool[::-1], "all", seed=0).tolist() == pool.tolist()


def test_choose_labelled_is_nested_and_seeded(xrays):
    pool = np.flatnonzero(xrays.meta["site"] == "A")
    previous: set[int] = set()
    for n in range(1, len(pool) + 1):
        chosen = set(choose_labelled(xrays.meta, pool, n, seed=3).tolist())
        assert previous < chosen and chosen <= set(pool.tolist())
        previous = chosen
    assert np.array_equal(
        choose_labelled(xrays.meta, pool, 4, seed=3), choose_labelled(xrays.meta, pool, 4, seed=3)
    )
    draws = {tuple(choose_labelled(xrays.meta, pool, 2, seed=s)) for s in range(6)}
    assert len(draws) > 1


@pytest.mark.parametrize("n", [0, 19, -1, "some", True, 2.0])
def test_choose_labelled_rejects_bad_budgets(xrays, n):
    with pytest.raises(ValueError, match="n_labelled"):
        choose_labelled(xrays.meta, np.arange(18), n, seed=0)


def test_choose_labelled_volumes_takes_whole_volumes(volumes):
    meta = volumes.meta
    pool = np.arange(len(volumes))
    one = choose_labelled_volumes(meta, pool, 1, seed=0)
    assert len(one) == 5 and meta["volume_id"].iloc[one].nunique() == 1
    assert sorted(meta["slice_index"].iloc[one]) == [0, 1, 2, 3, 4]
    previous: set[int] = set()
    for n in range(1, 9):
        chosen = choose_labelled_volumes(meta, pool, n, seed=2)
        assert len(chosen) == 5 * n and previous < set(chosen.tolist())
        previous = set(chosen.tolist())
        if n <= 4:  # different patients first
            assert meta["patient_id"].iloc[chosen].nunique() == n
    assert len(choose_labelled_volumes(meta, pool, "all", seed=0)) == 40


def test_choose_labelled_volumes_errors(volumes, xrays):
    with pytest.raises(ValueError, match="n_volumes"):
        choose_labelled_volumes(volumes.meta, np.arange(40), 9, seed=0)
    with pytest.raises(ValueError, match="volume_id"):
        choose_labelled_volumes(xrays.meta, np.arange(36), 1, seed=0)



def test_choose_labelled_patients_takes_every_volume_of_a_patient(volumes):
    meta = volumes.meta
    pool = np.arange(len(volumes))
    previous: set[int] = set()
    for n in range(1, 5):
        chosen = choose_labelled_patients(meta, pool, n, seed=1)
        assert meta["patient_id"].iloc[chosen].nunique() == n
        assert len(chosen) == 10 * n  # ED and ES, 5 slices each
        assert previous < set(chosen.tolist())  # nested
        previous = set(chosen.tolist())
    draws = {tuple(choose_labelled_patients(meta, pool, 1, seed=s)) for s in range(8)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="n_patients"):
        choose_labelled_patients(meta, pool, 5, seed=0)


def test_choose_labelled_by_dispatches_on_the_unit(volumes):
    meta, pool = volumes.meta, np.arange(len(volumes))
    assert len(choose_labelled_by("images", meta, pool, 2, seed=0)) == 2
    assert len(choose_labelled_by("volumes", meta, pool, 2, seed=0)) == 10
    assert len(choose_labelled_by("patients", meta, pool, 2, seed=0)) == 20
    with pytest.raises(ValueError, match="label unit 'slices'"):
        choose_labelled_by("slices", meta, pool, 2, seed=0)

# --------------------------------------------------------------------------- protocol
def test_protocol_keeps_test_patients_out_of_everything_else(xrays):
    protocol = make_protocol(xrays.meta, labelled_sites=("A",), seed=1)
    meta = xrays.meta
    test_patients = patients_of(meta, protocol.test)
    for rows in (protocol.pretrain, protocol.label_pool, protocol.val):
        assert not patients_of(meta, rows) & test_patients
    assert not patients_of(meta, protocol.val) & patients_of(meta, protocol.pretrain)
    assert set(protocol.label_pool) <= set(protocol.pretrain)
    assert set(meta["site"].iloc[protocol.label_pool]) == {"A"}
    assert set(meta["site"].iloc[protocol.val]) == {"A"}
    assert set(meta["site"].iloc[protocol.test]) == {"A", "B"}
    assert set(meta["site"].iloc[protocol.pretrain]) == {"A", "B"}


def test_protocol_summary_and_per_site_test(xrays):
    protocol = make_protocol(xrays.meta, labelled_sites="A", seed=0)
    assert isinstance(protocol, Protocol)
    summary = protocol.summary()
    assert list(summary.columns) == ["split", "images", "patients", "sites"]
    assert summary["split"].tolist() == ["pretrain", "label_pool", "val", "test"]
    # per site 6 patients -> 3 train, 1 val, 2 test; 3 images per patient
    assert summary["patients"].tolist() == [6, 3, 1, 4]
    assert summary["images"].tolist() == [18, 9, 3, 12]
    assert summary["sites"].tolist() == ["A, B", "A", "A", "A, B"]
    by_site = protocol.test_by_site()
    assert list(by_site) == ["A", "B"]
    assert sorted(np.concatenate(list(by_site.values()))) == sorted(protocol.test)
    assert set(xrays.meta["site"].iloc[by_site["B"]]) == {"B"}


def test_protocol_errors(xrays):
    with pytest.raises(ValueError, match=r"'C'.*\['A', 'B'\]"):
        make_protocol(xrays.meta, labelled_sites=("C",))
    with pytest.raises(ValueError, match="val_fraction"):
        make_protocol(xrays.meta, val_fraction=-0.1)
    with pytest.raises(ValueError, match="< 1"):
        make_protocol(xrays.meta, val_fraction=0.5, test_fraction=0.5)


# --------------------------------------------------------------------------- k-fold
def test_folds_partition_patients_and_keep_val_apart(xrays):
    meta = xrays.meta
    folds = cross_validation_folds(meta, k=5, seed=0, val_fraction=0.2)
    assert [f.number for f in folds] == list(range(5))
    np.testing.assert_array_equal(np.sort(np.concatenate([f.test for f in folds])), np.arange(len(meta)))
    patients = meta["patient_id"].to_numpy()
    for fold in folds:
        parts = [set(patients[fold.test]), set(patients[fold.val]), set(patients[fold.label_pool])]
        assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(fold.test) + len(fold.val) + len(fold.label_pool) == len(meta)
        assert len(parts[1]) == round(0.2 * (12 - len(parts[0])))
    sizes = [len(set(patients[f.test])) for f in folds]
    assert max(sizes) - min(sizes) <= 1  # 12 patients in 5 folds: 3, 3, 2, 2, 2


def test_folds_seeded_and_restricted_to_rows(xrays):
    rows = np.flatnonzero(xrays.meta["site"].to_numpy() == "A")
    a = cross_validation_folds(xrays.meta, rows, k=3, seed=4)
    b = cross_validation_folds(xrays.meta, rows, k=3, seed=4)
    c = cross_validation_folds(xrays.meta, rows, k=3, seed=5)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=True))
    assert set(np.concatenate([f.test for f in a])) == set(rows)
    assert cross_validation_folds(xrays.meta, rows, k=3, val_fraction=0.0)[0].val.size == 0


def test_fold_errors(xrays):
    with pytest.raises(ValueError, match="k=13"):
        cross_validation_folds(xrays.meta, k=13)
    with pytest.raises(ValueError, match="val_fraction"):
        cross_validation_folds(xrays.meta, k=2, val_fraction=1.0)


# --------------------------------------------------------------------------- check_finetune_set
def _volumes(n_patients: int, volumes_per_patient: int = 1, slices: int = 3, masks: bool = True):
    rows = []
    for p in range(n_patients):
        for v in range(volumes_per_patient):
            for k in range(slices):
                rows.append({"sample_id": f"p{p}v{v}s{k}", "patient_id": f"p{p}", "site": "A",
                             "time": 0, "volume_id": f"p{p}v{v}", "slice_index": k,
                             "n_slices": slices, "depth": (k + 1) / slices})  # fmt: skip
    n = len(rows)
    images = np.zeros((n, 4, 4), np.float32)
    return SliceSet(images, np.zeros((n, 4, 4), np.uint8) if masks else None, pd.DataFrame(rows),
                    ("background", "x"), "tiny")  # fmt: skip


def test_check_finetune_set_accepts_a_set_that_fits():
    from medcl_lite.data.datasets import check_finetune_set

    data = _volumes(12)
    check_finetune_set(data, np.arange(len(data)), role="semi_data", n_folds=3,
                       label_counts=[1, 6, "all"], unit="volumes")  # fmt: skip


def test_check_finetune_set_names_what_it_has_and_needs():
    from medcl_lite.data.datasets import check_finetune_set, cross_validation_folds

    data = _volumes(3)  # as three real volumes through 02_pcl: one per patient
    rows = np.arange(len(data))
    with pytest.raises(ValueError, match=r"semi_data \(tiny: 3 patients, 3 volumes, 9 images\).*"
                       r"leaves 0 labelled volumes.*label_counts \[1, 6\] need 6"):  # fmt: skip
        check_finetune_set(data, rows, role="semi_data", n_folds=2, label_counts=[1, 6],
                           unit="volumes")  # fmt: skip
    with pytest.raises(ValueError, match=r"5-fold cross-validation by patient needs at least 5"):
        check_finetune_set(data, rows, role="semi_data", n_folds=5, label_counts=[1])
    with pytest.raises(ValueError, match="has no masks"):
        check_finetune_set(_volumes(6, masks=False), np.arange(18), role="finetune_data",
                           n_folds=2, label_counts=[1])  # fmt: skip
    # the number it reports is the smallest label pool of the folds the grid will use
    folds = cross_validation_folds(data.meta, rows, k=2, seed=0)
    assert min(data.meta.iloc[f.label_pool]["volume_id"].nunique() for f in folds) == 0


def test_check_finetune_set_counts_in_the_budget_unit():
    from medcl_lite.data.datasets import check_finetune_set

    data = _volumes(4, volumes_per_patient=2)  # 2 folds: 2 patients minus 1 val = 1 patient
    rows = np.arange(len(data))
    check_finetune_set(data, rows, role="r", n_folds=2, label_counts=[2], unit="volumes")
    check_finetune_set(data, rows, role="r", n_folds=2, label_counts=[6], unit="images")
    with pytest.raises(ValueError, match="leaves 1 labelled patients"):
        check_finetune_set(data, rows, role="r", n_folds=2, label_counts=[2], unit="patients")
    with pytest.raises(ValueError, match="leaves 6 labelled images"):
        check_finetune_set(data, rows, role="r", n_folds=2, label_counts=[7], unit="images")
