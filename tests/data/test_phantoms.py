"""Tests of the built-in phantoms: contract, determinism, and the premises the methods rely on."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from medcl_lite.data.phantoms import (
    CARDIAC_SITES,
    XRAY_SITES,
    make_cardiac_volumes,
    make_chest_xrays,
)
from medcl_lite.data.phantoms import cardiac as cardiac_module
from medcl_lite.data.phantoms.cardiac import CARDIAC_GROUPS
from medcl_lite.data.sliceset import META_COLUMNS

XRAY_EXTRA = ("finding", "finding_side", "finding_zone", "devices", "report", "exposure",
              "rotation_deg", "inspiration")  # fmt: skip


@pytest.fixture(scope="module")
def xrays_and_seconds():
    start = time.perf_counter()
    data = make_chest_xrays()  # the default: 60 patients x 4 time points, 128 px
    return data, time.perf_counter() - start


@pytest.fixture(scope="module")
def xrays(xrays_and_seconds):
    return xrays_and_seconds[0]


@pytest.fixture(scope="module")
def cardiac():
    return make_cardiac_volumes()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# --- chest X-rays ------------------------------------------------------------------------------


def test_xray_generation_is_fast(xrays_and_seconds):
    data, seconds = xrays_and_seconds
    assert len(data) >= 200
    assert seconds < 20.0  # ~2-3 s on a 2-core CPU; loose so that it never flakes


def test_xray_contract(xrays):
    assert xrays.images.shape == (240, 128, 128) and xrays.images.dtype == np.float32
    assert xrays.masks.shape == xrays.images.shape and xrays.masks.dtype == np.uint8
    assert 0.0 <= xrays.images.min() and xrays.images.max() <= 1.0
    assert set(np.unique(xrays.masks)) == {0, 1, 2}
    assert xrays.classes == ("background", "right_lung", "left_lung")
    meta = xrays.meta
    assert all(c in meta.columns for c in (*META_COLUMNS, *XRAY_EXTRA))
    assert meta["sample_id"].is_unique
    assert (meta["volume_id"] == "").all() and (meta["slice_index"] == 0).all()
    assert (meta["n_slices"] == 1).all() and meta["depth"].isna().all()
    assert sorted(meta["time"].unique()) == [0, 1, 2, 3]
    assert meta.groupby("patient_id")["site"].nunique().max() == 1  # one site per patient
    assert meta.groupby("site")["patient_id"].nunique().to_dict() == {"A": 20, "B": 20, "C": 20}


def test_xray_findings_and_reports(xrays):
    meta = xrays.meta
    assert set(meta["finding"]) == {"none", "opacity", "nodule"}
    assert 0.55 < (meta["finding"] != "none").mean() < 0.8  # ~70 %, a few hidden by the heart
    assert (meta["finding"] == "opacity").sum() > 2 * (meta["finding"] == "nodule").sum()
    has = meta["finding"] != "none"
    assert set(meta.loc[has, "finding_side"]) == {"right", "left"}
    assert set(meta.loc[has, "finding_zone"]) == {"upper", "middle", "lower"}
    assert (meta.loc[~has, ["finding_side", "finding_zone"]] == "").all().all()
    for row in meta[has].itertuples():
        assert f"{row.finding_side} {row.finding_zone} zone" in row.report
        assert row.finding in row.report.lower()
    per_site = meta.groupby("site")["devices"].mean()
    assert per_site["C"] > 1.0 > per_site["A"]  # the ICU site has more tubes and lines


def test_xray_anatomy_varies_beyond_light_augmentation(xrays):
    # Fine-tuning's light augmentation zooms 0.9-1.1: one labelled patient cannot show the spread
    # of body size and lung shape, which the unlabelled pool does (the phantom's headroom).
    lung_area = pd.Series((xrays.masks > 0).mean(axis=(1, 2))).groupby(xrays.meta["patient_id"]).median()
    assert lung_area.quantile(0.9) / lung_area.quantile(0.1) > 1.1**2 * 1.3
    # Consolidations are dense: inside the lung they are brighter than the patient's clear lung.
    opacity = (xrays.meta["finding"] == "opacity").to_numpy()
    lungs = xrays.masks > 0
    brightest = [np.percentile(img[m], 95) - np.median(img[m]) for img, m in zip(xrays.images, lungs, strict=True)]
    assert np.median(np.array(brightest)[opacity]) > 1.5 * np.median(np.array(brightest)[~opacity])


def test_xray_is_deterministic_by_seed():
    a = make_chest_xrays(n_patients=3, n_times=2, size=64, seed=5)
    b = make_chest_xrays(n_patients=3, n_times=2, size=64, seed=5)
    c = make_chest_xrays(n_patients=3, n_times=2, size=64, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.meta.equals(b.meta)
    assert np.abs(a.images - c.images).mean() > 0.01


def test_xray_patient_does_not_depend_on_dataset_size():
    small = make_chest_xrays(n_patients=2, n_times=2, size=64, seed=3)
    large = make_chest_xrays(n_patients=4, n_times=2, size=64, seed=3)
    np.testing.assert_array_equal(small.images, large.images[:4])


def test_xray_sites_subset_and_order():
    data = make_chest_xrays(n_patients=4, n_times=1, sites=("C", "A"), size=64)
    assert data.meta["site"].tolist() == ["C", "A", "C", "A"]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"sites": ("A", "Z")}, "sites"),
        ({"sites": ()}, "sites"),
        ({"n_patients": 0}, "n_patients"),
        ({"n_times": 0}, "n_times"),
        ({"size": 8}, "size"),
    ],  # fmt: skip
)
def test_xray_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_chest_xrays(**kwargs)


def test_xray_radiological_left_right(xrays):
    _, x = np.mgrid[0:128, 0:128]
    for mask in xrays.masks:
        right, left = mask == 1, mask == 2
        if right.sum() > 50 and left.sum() > 50:
            assert x[right].mean() < x[left].mean()  # patient's right lung on the image left
    assert (xrays.masks == 1).sum() > 0.8 * (xrays.masks == 2).sum()


def test_xray_patient_keeps_anatomy(xrays):
    lungs = xrays.masks > 0
    patients = xrays.meta["patient_id"].to_numpy()
    sites = xrays.meta["site"].to_numpy()
    same, other = [], []
    for i in range(0, len(lungs), 3):
        for j in range(i + 1, len(lungs), 5):
            if sites[i] == sites[j]:
                (same if patients[i] == patients[j] else other).append(_iou(lungs[i], lungs[j]))
    assert len(same) > 10 and len(other) > 100
    assert np.mean(same) > np.mean(other) + 0.15  # measured: 0.69 vs 0.46


def test_xray_nearest_neighbour_is_often_but_not_always_same_patient(xrays):
    x = xrays.images.reshape(len(xrays), -1).astype(np.float64)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    squared = (x**2).sum(1)
    distance = squared[:, None] + squared[None] - 2 * x @ x.T
    np.fill_diagonal(distance, np.inf)
    patients = xrays.meta["patient_id"].to_numpy()
    rate = (patients[distance.argmin(1)] == patients).mean()
    assert 0.4 <= rate <= 0.9, rate


def test_xray_sites_differ_in_intensity(xrays):
    site = xrays.meta["site"].to_numpy()
    contrast = {s: xrays.images[site == s].std(axis=(1, 2)).mean() for s in XRAY_SITES}
    darkest = {s: np.percentile(xrays.images[site == s], 5) for s in XRAY_SITES}
    noise = {
        s: np.mean(
            [np.std(im - ndimage.median_filter(im, 3)) for im in xrays.images[site == s][:12]]
        )
        for s in XRAY_SITES
    }
    assert contrast["A"] > contrast["B"] + 0.05 and contrast["A"] > contrast["C"] + 0.05
    assert noise["B"] > 1.5 * noise["A"]  # other detector: noisier
    assert darkest["C"] > darkest["A"] + 0.1  # scatter haze lifts the blacks at the ICU site


# --- cardiac volumes ---------------------------------------------------------------------------


def test_cardiac_contract(cardiac):
    assert cardiac.images.dtype == np.float32 and cardiac.images.shape[1:] == (128, 128)
    assert 0.0 <= cardiac.images.min() and cardiac.images.max() <= 1.0
    assert cardiac.classes == ("background", "lv", "myocardium", "rv")
    assert set(np.unique(cardiac.masks)) == {0, 1, 2, 3}
    meta = cardiac.meta
    assert meta["patient_id"].nunique() == meta["volume_id"].nunique() == 24
    for _, rows in meta.groupby("volume_id"):
        n = rows["n_slices"].iloc[0]
        assert 10 <= n <= 18 and len(rows) == n
        assert rows["slice_index"].tolist() == list(range(n))
        np.testing.assert_allclose(rows["depth"], (np.arange(n) + 1) / n)
        assert rows["spacing_z"].nunique() == 1
    assert meta["n_slices"].nunique() > 3  # varies per volume
    assert (meta[["spacing_x", "spacing_y", "spacing_z"]] > 0).all().all()
    assert (meta["modality"] == "mri").all()


def test_cardiac_depth_carries_meaning(cardiac):
    meta = cardiac.meta
    area = {c: (cardiac.masks == c).sum(axis=(1, 2)) for c in (1, 2, 3)}
    first = meta.groupby("volume_id")["slice_index"].idxmin().to_numpy()
    last = meta.groupby("volume_id")["slice_index"].idxmax().to_numpy()
    assert (cardiac.masks[first] == 0).all()  # above the base: atria / vessels, no labels
    assert (area[3][last] == 0).all()  # the RV ends before the apex
    depth = meta["depth"].to_numpy()
    basal = (depth > 0.3) & (depth < 0.45)
    apical = (depth > 0.65) & (depth < 0.8)
    assert area[1][basal].mean() > 1.5 * area[1][apical].mean()  # LV shrinks towards the apex
    labelled = area[1] > 0
    assert np.corrcoef(depth[labelled], area[1][labelled])[0, 1] < -0.5


def test_cardiac_has_texture_and_boundaries_for_superpixels(cardiac):
    depth = cardiac.meta["depth"].to_numpy()
    for i in np.flatnonzero((depth > 0.45) & (depth < 0.55))[:3]:
        regions = felzenszwalb(cardiac.images[i], scale=100, sigma=0.5, min_size=20)
        assert 8 <= len(np.unique(regions)) <= 400
        lv = cardiac.masks[i] == 1
        # the LV cavity is covered by a few regions that do not leak into its surroundings: most
        # of its pixels lie in regions at least 70 % inside it (a dilated cavity may take several)
        inside = np.bincount(regions[lv], minlength=regions.max() + 1)
        total = np.bincount(regions.ravel(), minlength=regions.max() + 1)
        pure = inside >= 0.7 * total
        assert inside[pure].sum() > 0.6 * lv.sum()
        assert (inside > 0.05 * lv.sum()).sum() <= 6


def test_cardiac_anatomy_varies_beyond_light_augmentation(cardiac):
    # Fine-tuning's light augmentation zooms 0.9-1.1: the heart's size in the image (diagnostic
    # group and field of view) spreads further, so one labelled patient cannot show it all.
    depth = cardiac.meta["depth"].to_numpy()
    mid = (depth > 0.45) & (depth < 0.6)
    heart = pd.Series((cardiac.masks[mid] > 0).sum(axis=(1, 2))).groupby(cardiac.meta["patient_id"][mid].to_numpy())
    area = heart.median()
    assert area.quantile(0.9) / area.quantile(0.1) > 1.1**2 * 1.8  # 2.9 here; 1.7 before the groups
    # Hypertrophic hearts have thick walls around small cavities, dilated ones thin walls.
    wall_per_cavity = {}
    for patient_seed in np.random.SeedSequence(0).spawn(200):
        anat = cardiac_module._sample_anatomy(np.random.default_rng(patient_seed))
        wall_per_cavity.setdefault(anat.group, []).append(anat.wall_thickness / anat.heart_size)
    assert set(wall_per_cavity) == set(CARDIAC_GROUPS)
    assert min(wall_per_cavity["HCM"]) > max(wall_per_cavity["DCM"])
    assert min(len(v) for v in wall_per_cavity.values()) > 20  # each group ~ 1 in 5


def test_cardiac_is_deterministic_and_fast():
    start = time.perf_counter()
    a = make_cardiac_volumes(n_patients=3, size=64, seed=1, modality="ct")
    assert time.perf_counter() - start < 10.0
    b = make_cardiac_volumes(n_patients=3, size=64, seed=1, modality="ct")
    c = make_cardiac_volumes(n_patients=3, size=64, seed=2, modality="ct")
    np.testing.assert_array_equal(a.images, b.images)
    assert a.meta.equals(b.meta)
    assert not np.array_equal(a.masks, c.masks)  # False for different shapes too
    assert a.info["hu_window"][0] < -100 < 300 < a.info["hu_window"][1]


def test_cardiac_sites_differ():
    for modality in CARDIAC_SITES:
        data = make_cardiac_volumes(n_patients=6, size=64, seed=0, modality=modality)
        site = data.meta["site"].to_numpy()
        blood_myo = {}
        for s in ("A", "B"):
            images, masks = data.images[site == s], data.masks[site == s]
            blood_myo[s] = images[masks == 1].mean() - images[masks == 2].mean()
        assert blood_myo["A"] > blood_myo["B"] + 0.05, (modality, blood_myo)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"modality": "pet"}, "modality"),
        ({"sites": ("C",)}, "sites"),
        ({"slices": (5, 3)}, "slices"),
        ({"n_patients": 0}, "n_patients"),
    ],  # fmt: skip
)
def test_cardiac_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_cardiac_volumes(**kwargs)


def test_xray_finding_centres_lie_in_the_named_lung():
    from medcl_lite.data.phantoms import chest_xray

    seen = 0
    for p, patient_seed in enumerate(np.random.SeedSequence(0).spawn(30)):
        anat = chest_xray._sample_anatomy(np.random.default_rng(patient_seed))
        site = XRAY_SITES["ABC"[p % 3]]
        for study_seed in patient_seed.spawn(4):
            study = chest_xray._sample_study(anat, site, np.random.default_rng(study_seed))
            if study.finding == "none":
                continue
            px, py = (np.array([v]) for v in study.finding_center)
            masks = chest_xray._lung_masks(anat, study.inspiration, site, px, py)
            assert masks[("right", "left").index(study.finding_side)][0]
            seen += 1
    assert seen > 20
