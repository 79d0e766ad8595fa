"""Tests of the abdominal CT phantom: contract, anatomy by depth and side, sites, determinism."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from medcl_lite.data.phantoms import (
    ABDOMEN_CLASSES,
    PHANTOM_KINDS,
    make_abdominal_volumes,
    write_phantoms,
)
from medcl_lite.data.phantoms import abdomen as abdomen_module
from medcl_lite.data.prepared import read_prepared
from medcl_lite.data.sliceset import META_COLUMNS

LIVER, SPLEEN, KIDNEY_RIGHT, KIDNEY_LEFT, STOMACH = range(1, 6)


@pytest.fixture(scope="module")
def abdomen_and_seconds():
    start = time.perf_counter()
    data = make_abdominal_volumes(n_patients=8, size=64, seed=0)
    return data, time.perf_counter() - start


@pytest.fixture(scope="module")
def abdomen(abdomen_and_seconds):
    return abdomen_and_seconds[0]


def _areas(data, label: int) -> np.ndarray:
    return (data.masks == label).sum(axis=(1, 2))


def test_contract(abdomen):
    assert abdomen.images.dtype == np.float32 and abdomen.images.shape[1:] == (64, 64)
    assert abdomen.masks.dtype == np.uint8 and abdomen.masks.shape == abdomen.images.shape
    assert 0.0 <= abdomen.images.min() and abdomen.images.max() <= 1.0
    assert abdomen.classes == ABDOMEN_CLASSES
    assert ABDOMEN_CLASSES == ("background", "liver", "spleen", "kidney_right", "kidney_left",
                               "stomach")  # fmt: skip
    assert set(np.unique(abdomen.masks)) == set(range(6))  # every class occurs
    meta = abdomen.meta
    assert all(c in meta.columns for c in (*META_COLUMNS, "spacing_x", "spacing_y", "spacing_z"))
    assert meta["sample_id"].is_unique
    assert meta["patient_id"].nunique() == meta["volume_id"].nunique() == 8
    for _, rows in meta.groupby("volume_id"):
        n = rows["n_slices"].iloc[0]
        assert 16 <= n <= 28 and len(rows) == n
        assert rows["slice_index"].tolist() == list(range(n))
        np.testing.assert_allclose(rows["depth"], (np.arange(n) + 1) / n)
    assert meta["n_slices"].nunique() > 2
    assert (meta["time"] == 0).all() and (meta["modality"] == "ct").all()
    assert (meta["spacing_z"] == 5.0).all()
    # in-plane spacing ~ body width (300-380 mm) over the pixels it spans
    assert meta["spacing_x"].between(300 / 64, 380 / 0.6 / 64).all()
    assert (meta["spacing_x"] == meta["spacing_y"]).all()
    assert meta.groupby("site")["patient_id"].nunique().to_dict() == {"A": 4, "B": 4}
    assert abdomen.name == "phantom_abdomen_ct"
    lo, hi = abdomen.info["hu_window"]
    assert lo < -100 and 200 < hi  # fat and enhanced organs inside the window
    assert set(abdomen.info["sites"]) == {"A", "B"}


def test_generation_is_fast(abdomen_and_seconds):
    data, seconds = abdomen_and_seconds
    assert len(data) >= 8 * 16
    assert seconds < 5.0  # ~0.3 s on one core; loose so that it never flakes


def test_organs_appear_in_their_depth_ranges(abdomen):
    depth = abdomen.meta["depth"].to_numpy()
    top, bottom, lower_half = depth <= 1 / 3, depth > 2 / 3, depth > 0.5
    liver = _areas(abdomen, LIVER)
    assert liver[top].mean() > 3 * liver[bottom].mean()  # large at the top, tapering down
    assert np.corrcoef(depth, liver)[0, 1] < -0.5
    for label in (KIDNEY_RIGHT, KIDNEY_LEFT):
        area = _areas(abdomen, label)
        assert area[lower_half].sum() > 0.7 * area.sum()  # kidneys mostly in the lower half
        assert area[depth < 0.25].sum() == 0
    for label in (SPLEEN, STOMACH):
        area = _areas(abdomen, label)
        assert area[depth <= 0.6].sum() > 0.9 * area.sum()  # upper abdomen
        assert area[depth > 0.8].sum() == 0
    first = abdomen.meta.groupby("volume_id")["slice_index"].idxmin().to_numpy()
    assert (_areas(abdomen, KIDNEY_LEFT)[first] == 0).all()  # the dome: no kidneys yet
    # the right kidney sits lower than the left one (under the liver)
    mean_depth = {
        label: np.average(depth, weights=_areas(abdomen, label))
        for label in (KIDNEY_RIGHT, KIDNEY_LEFT)
    }
    assert mean_depth[KIDNEY_RIGHT] > mean_depth[KIDNEY_LEFT]


def test_radiological_left_right_and_anterior_posterior(abdomen):
    centre = (abdomen.image_size[1] - 1) / 2
    cols = np.arange(abdomen.image_size[1])
    rows = np.arange(abdomen.image_size[0])[:, None]

    def centroid(label: int) -> tuple[float, float]:
        mask = abdomen.masks == label
        return float((mask * cols).sum() / mask.sum()), float((mask * rows).sum() / mask.sum())

    liver, spleen, stomach = centroid(LIVER), centroid(SPLEEN), centroid(STOMACH)
    kidney_right, kidney_left = centroid(KIDNEY_RIGHT), centroid(KIDNEY_LEFT)
    assert liver[0] < centre - 5 and kidney_right[0] < centre - 5  # patient's right: image left
    assert spleen[0] > centre + 5 and kidney_left[0] > centre + 5 and stomach[0] > centre
    assert stomach[1] < spleen[1]  # anterior is up: the stomach lies in front of the spleen
    assert stomach[1] < kidney_left[1]


def test_tissues_match_ct_densities(abdomen):
    lo, hi = abdomen.info["hu_window"]
    hu = lo + abdomen.images * (hi - lo)
    site_a = (abdomen.meta["site"] == "A").to_numpy()[:, None, None]
    liver = ndimage.binary_erosion(abdomen.masks == LIVER, np.ones((1, 3, 3))) & site_a
    kidney = (abdomen.masks == KIDNEY_RIGHT) & site_a
    assert 85 < np.median(hu[liver]) < 125  # liver ~105 HU in the portal venous phase
    assert np.median(hu[kidney]) > np.median(hu[liver]) + 30  # enhancing renal parenchyma
    body = (abdomen.images > 0.0).mean()
    assert 0.2 < body < 0.8  # air around the body, not a filled square


def test_has_texture_and_boundaries_for_superpixels():
    data = make_abdominal_volumes(n_patients=2, size=128, seed=4)
    depth = data.meta["depth"].to_numpy()
    for i in np.flatnonzero((depth > 0.25) & (depth < 0.35)):
        image = data.images[i]
        liver = data.masks[i] == LIVER
        assert image[ndimage.binary_erosion(liver, iterations=2)].std() > 0.01  # textured
        regions = felzenszwalb(image, scale=100, sigma=0.5, min_size=20)
        assert 8 <= len(np.unique(regions)) <= 400
        # the liver is mostly one region that does not leak far into its surroundings
        main = np.bincount(regions[liver]).argmax()
        assert (regions[liver] == main).mean() > 0.5 and (regions == main).sum() < 2 * liver.sum()


def test_deterministic_by_seed_and_patients_differ():
    a = make_abdominal_volumes(n_patients=2, size=48, seed=1)
    b = make_abdominal_volumes(n_patients=2, size=48, seed=1)
    c = make_abdominal_volumes(n_patients=2, size=48, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.meta.equals(b.meta)
    assert not np.array_equal(a.masks, c.masks)  # False for different shapes too
    # patient p does not depend on how many patients are drawn
    more = make_abdominal_volumes(n_patients=3, size=48, seed=1)
    n0 = int(a.meta["n_slices"].iloc[0])
    np.testing.assert_array_equal(more.images[:n0], a.images[:n0])


def test_windowed_drawing_equals_full_image_drawing(monkeypatch):
    kwargs = {"n_patients": 2, "size": 128, "slices": (10, 12), "seed": 5}  # warp > 2 px here
    fast = make_abdominal_volumes(**kwargs)
    full = (slice(None), slice(None))
    monkeypatch.setattr(abdomen_module._Canvas, "window", lambda self, center, reach: full)
    slow = make_abdominal_volumes(**kwargs)
    np.testing.assert_array_equal(fast.masks, slow.masks)
    np.testing.assert_allclose(fast.images, slow.images, atol=1e-6)


def test_sites_differ_in_noise_and_contrast_timing(abdomen):
    site = abdomen.meta["site"].to_numpy()
    lo, hi = abdomen.info["hu_window"]
    noise, cortex_minus_liver, spleen_sd = {}, {}, {}
    for s in ("A", "B"):
        images, masks = abdomen.images[site == s], abdomen.masks[site == s]
        # noise: residual of a 3x3 median inside the (eroded) liver, in window units
        residual = images - ndimage.median_filter(images, size=(1, 3, 3))
        liver = ndimage.binary_erosion(masks == LIVER, np.ones((1, 5, 5)))
        noise[s] = residual[liver].std()
        kidneys = (masks == KIDNEY_RIGHT) | (masks == KIDNEY_LEFT)
        cortex = np.percentile(images[kidneys], 90)
        cortex_minus_liver[s] = (cortex - np.median(images[liver])) * (hi - lo)  # HU
        spleen = ndimage.binary_erosion(masks == SPLEEN, np.ones((1, 3, 3)))
        spleen_sd[s] = images[spleen].std() * (hi - lo)  # HU
    assert noise["B"] > 1.4 * noise["A"], noise  # other scanner: noisier
    # arterial timing at site B: brighter renal cortex against the liver, patchy spleen
    assert cortex_minus_liver["B"] > cortex_minus_liver["A"] + 25, cortex_minus_liver
    assert spleen_sd["B"] > 2 * spleen_sd["A"], spleen_sd


def test_anatomy_varies_beyond_light_augmentation():
    # Fine-tuning's light augmentation zooms 0.9-1.1: body habitus and organ size spread further.
    data = make_abdominal_volumes(n_patients=16, sites=("A",), size=64, slices=(12, 12), seed=0)
    liver = pd.Series(_areas(data, LIVER)).groupby(data.meta["patient_id"].to_numpy()).max()
    assert liver.quantile(0.9) / liver.quantile(0.1) > 1.1**2 * 1.3


def test_liver_lesions_are_dark_and_labelled_liver():
    share = abdomen_module.LIVER_LESIONS["share"]
    anatomies = [abdomen_module._sample_anatomy(np.random.default_rng(s)) for s in range(200)]
    with_lesions = np.mean([len(a.liver_lesions) > 0 for a in anatomies])
    assert abs(with_lesions - share) < 0.1
    # Painted inside the liver only, keeping its label, darker than the enhanced liver around it.
    data = make_abdominal_volumes(n_patients=16, sites=("A",), size=64, seed=0)  # 2 with lesions
    dark_slices = 0
    for i in range(len(data.images)):
        liver = data.masks[i] == LIVER
        if liver.sum() < 100:
            continue
        values = data.images[i][liver]
        dark = values < np.median(values) - 0.1  # lesions: 30 HU vs liver 105 HU (0.15 in the window)
        dark_slices += int(dark.sum() > 5)
    assert dark_slices > 0


def test_sites_subset_and_order():
    data = make_abdominal_volumes(n_patients=3, size=32, slices=(4, 5), sites=("B",))
    assert (data.meta["site"] == "B").all() and list(data.info["sites"]) == ["B"]
    data = make_abdominal_volumes(n_patients=3, size=32, slices=(4, 4), sites=("B", "A"))
    assert data.meta.groupby("volume_id")["site"].first().tolist() == ["B", "A", "B"]
    assert (data.meta["n_slices"] == 4).all()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"sites": ("C",)}, "sites"),
        ({"sites": ()}, "sites"),
        ({"sites": ("A", "A")}, "sites"),
        ({"slices": (5, 3)}, "slices"),
        ({"slices": (1, 3)}, "slices"),
        ({"slices": (4,)}, "slices"),
        ({"n_patients": 0}, "n_patients"),
        ({"n_patients": 2.5}, "n_patients"),
        ({"size": 16}, "size"),
    ],  # fmt: skip
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_abdominal_volumes(**kwargs)


def test_write_phantoms_abdomen_round_trip(tmp_path):
    assert "abdomen" in PHANTOM_KINDS
    folders = write_phantoms(tmp_path, kind="abdomen", size=32, seed=3)
    assert folders == [tmp_path / "phantom_abdomen_ct"]
    back = read_prepared(folders[0])
    expected = make_abdominal_volumes(size=32, seed=3)
    np.testing.assert_allclose(back.images, expected.images, atol=0.5 / 65535 + 1e-7)
    np.testing.assert_array_equal(back.masks, expected.masks)
    assert back.classes == ABDOMEN_CLASSES and back.name == "phantom_abdomen_ct"
    assert back.meta["volume_id"].nunique() == 24
    assert back.info["hu_window"] == list(expected.info["hu_window"])
    assert back.meta["depth"].tolist() == expected.meta["depth"].tolist()
