"""Tests of medcl_lite.data.superpixels (Felzenszwalb regions, disk cache) and of the region maps
that TwoViewDataset warps with each view (LRC)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as nnf
from conftest import single_image_meta
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader

import medcl_lite.data.superpixels as sp
from medcl_lite.data.datasets import ITEM_META_KEYS, TwoViewDataset
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.superpixels import (
    FelzenszwalbParams,
    cache_path,
    felzenszwalb_regions,
    images_fingerprint,
    region_counts,
    region_sizes,
    superpixels,
)
from medcl_lite.data.transforms import view_transform

SIZE = 64
BLOCK = 16  # 4 x 4 blocks of 16 x 16 pixels
#: Stronger geometry than the quickstart preset: rotation +-30 deg and flips (plus its crop).
GEOMETRY = {"degrees": 30.0, "hflip": 0.5, "vflip": 0.5}
#: No intensity change (view values stay the block values).
NO_INTENSITY = {"brightness": 0.0, "contrast": 0.0, "gamma": None, "blur_p": 0.0, "noise_p": 0.0}
#: Piecewise-constant images need no smoothing: sigma 0 finds their blocks exactly.
SHARP = FelzenszwalbParams(sigma=0.0)


def make_slices(images: np.ndarray, name: str = "test") -> SliceSet:
    """A SliceSet of 2-D images (one patient each)."""
    meta = single_image_meta(len(images))
    return SliceSet(np.asarray(images, dtype=np.float32), None, meta, name=name)


def block_ids(shift: int = 0) -> np.ndarray:
    """``[SIZE, SIZE]`` ids 0..15 of a 4 x 4 grid of blocks, plus ``shift``."""
    rows, cols = np.indices((SIZE, SIZE)) // BLOCK
    return (rows * (SIZE // BLOCK) + cols + shift).astype(np.int32)


def block_value(ids: np.ndarray) -> np.ndarray:
    """The image value of region ``ids``: ``(id % 7 + 1) / 8`` (neighbouring blocks differ)."""
    return ((ids % 7 + 1) / 8).astype(np.float32)


@pytest.fixture(scope="module")
def blocks() -> tuple[SliceSet, np.ndarray]:
    """3 images whose intensity is a function of their (blocky) region id, and the region maps;
    the ids of image k start at 3 k, so maps differ between images."""
    regions = np.stack([block_ids(3 * k) for k in range(3)])
    return make_slices(block_value(regions), "blocks"), regions


@pytest.fixture(scope="module")
def textured() -> SliceSet:
    """4 smooth random textures in [0, 1] (many regions at small scale)."""
    rng = np.random.default_rng(0)
    images = [gaussian_filter(rng.random((SIZE, SIZE)), 2.0) for _ in range(4)]
    images = [(im - im.min()) / (im.max() - im.min()) for im in images]
    return make_slices(np.stack(images), "texture")


# --------------------------------------------------------------------------- params, one slice
def test_params_validate_and_key():
    assert FelzenszwalbParams().key() == "scale50-sigma0.5-min20"
    assert (
        FelzenszwalbParams(scale=120, sigma=0.75, min_size=40).key() == "scale120-sigma0.75-min40"
    )
    for bad, name in (
        ({"scale": 0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": "0.5"}, "sigma"),
        ({"min_size": 0}, "min_size"),
        ({"min_size": 2.5}, "min_size"),
        ({"min_size": True}, "min_size"),
    ):
        with pytest.raises(ValueError, match=name):
            FelzenszwalbParams(**bad)


def test_regions_are_consecutive_int32_and_find_the_blocks(blocks):
    data, regions = blocks
    found = felzenszwalb_regions(data.images[0], SHARP)
    assert found.dtype == np.int32 and found.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(np.unique(found), np.arange(found.max() + 1))
    # a piecewise-constant image: the superpixels are its 16 blocks (up to the numbering);
    # with sigma 0.5 (the default) the blurred block borders form thin extra regions
    assert found.max() + 1 == 16
    pairs = np.unique(np.stack([found.ravel(), regions[0].ravel()]), axis=1)
    assert pairs.shape[1] == 16


def test_regions_reject_bad_images():
    with pytest.raises(ValueError, match="2-D"):
        felzenszwalb_regions(np.zeros((2, SIZE, SIZE), np.float32))
    with pytest.raises(ValueError, match="finite"):
        felzenszwalb_regions(np.full((SIZE, SIZE), np.nan, np.float32))
    with pytest.raises(ValueError, match="params"):
        felzenszwalb_regions(np.zeros((SIZE, SIZE), np.float32), {"scale": 50})


def test_fewer_regions_with_larger_scale_or_min_size(textured):
    def median_count(params: FelzenszwalbParams) -> float:
        return float(np.median(region_counts(superpixels(textured, params))))

    small = median_count(FelzenszwalbParams(scale=5, min_size=5))
    assert small > median_count(FelzenszwalbParams(scale=100, min_size=5)) >= 1
    assert small > median_count(FelzenszwalbParams(scale=5, min_size=100)) >= 1


def test_region_sizes_and_counts():
    regions = np.array([[0, 0, 1], [2, 2, 2], [-1, -1, 1]], dtype=np.int32)
    np.testing.assert_array_equal(region_sizes(regions), [2, 2, 3])
    np.testing.assert_array_equal(region_counts(np.stack([regions, regions + 1])), [3, 4])
    with pytest.raises(ValueError, match="regions"):
        region_sizes(regions.astype(float))
    with pytest.raises(ValueError, match="regions"):
        region_counts(regions)


# --------------------------------------------------------------------------- cache
def test_superpixels_rows_follow_order_and_match_per_slice(textured):
    every = superpixels(textured)
    assert every.shape == (4, SIZE, SIZE) and every.dtype == np.int32
    np.testing.assert_array_equal(superpixels(textured, rows=[2, 0]), every[[2, 0]])
    keep = np.array([False, True, False, True])
    np.testing.assert_array_equal(superpixels(textured, rows=keep), every[[1, 3]])
    np.testing.assert_array_equal(every[1], felzenszwalb_regions(textured.images[1]))
    with pytest.raises(ValueError, match="index"):
        superpixels(textured, rows=[0, 4])
    with pytest.raises(ValueError, match="SliceSet"):
        superpixels(textured.images)


def count_calls(monkeypatch) -> list[int]:
    """Count calls of the per-slice function that superpixels uses."""
    calls: list[int] = []
    real = sp.felzenszwalb_regions

    def counted(image, params=None):
        calls.append(1)
        return real(image, params)

    monkeypatch.setattr(sp, "felzenszwalb_regions", counted)
    return calls


def test_cache_hit_loads_without_computing(textured, tmp_path, monkeypatch):
    first = superpixels(textured, cache_dir=tmp_path / "superpixels")
    files = list((tmp_path / "superpixels").iterdir())
    params = FelzenszwalbParams()
    assert [f.name for f in files] == [
        cache_path(tmp_path, params, images_fingerprint(textured.images)).name
    ]
    assert files[0].name.startswith("felzenszwalb-scale50-sigma0.5-min20-")
    umask = os.umask(0)
    os.umask(umask)
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~umask  # the umask's mode, not mkstemp's 0600

    def fail(image, params=None):
        raise AssertionError("computed despite a cache hit")

    monkeypatch.setattr(sp, "felzenszwalb_regions", fail)
    again = superpixels(textured, cache_dir=tmp_path / "superpixels")
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.int32


def test_cache_misses_when_params_or_images_change(textured, tmp_path, monkeypatch):
    superpixels(textured, cache_dir=tmp_path)
    calls = count_calls(monkeypatch)
    superpixels(textured, FelzenszwalbParams(scale=80), cache_dir=tmp_path)
    assert len(calls) == 4
    changed = make_slices(textured.images.copy())
    changed.images[2, 5, 5] = 1.0 - changed.images[2, 5, 5]
    superpixels(changed, cache_dir=tmp_path)
    assert len(calls) == 8
    superpixels(textured, cache_dir=tmp_path, rows=[0, 1])  # other rows: other images
    assert len(calls) == 10
    assert len(list(tmp_path.glob("felzenszwalb-*.npz"))) == 4
    superpixels(textured, FelzenszwalbParams(scale=80), cache_dir=tmp_path)  # all hits now
    superpixels(changed, cache_dir=tmp_path)
    assert len(calls) == 10


def test_cache_write_is_atomic(textured, tmp_path, monkeypatch):
    superpixels(textured, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".npz")] == []

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sp.np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        superpixels(textured, FelzenszwalbParams(scale=80), cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # no temp file, no half-written cache


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_is_recomputed_and_replaced(textured, tmp_path, monkeypatch, damage):
    expected = superpixels(textured, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        fingerprint = images_fingerprint(textured.images)
        np.savez(path, regions=expected[:2], fingerprint=np.array(fingerprint), version=np.array(1))
    calls = count_calls(monkeypatch)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        recomputed = superpixels(textured, cache_dir=tmp_path)
    np.testing.assert_array_equal(recomputed, expected)
    assert len(calls) == 4
    np.testing.assert_array_equal(superpixels(textured, cache_dir=tmp_path), expected)  # replaced
    assert len(calls) == 4


def test_no_cache_dir_writes_nothing(textured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    superpixels(textured, rows=[0])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- TwoViewDataset
def interior(regions: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose ``(2 radius + 1)^2`` neighbourhood lies in the view and in one region (not -1):
    their bilinear samples cannot reach another region."""
    r = nnf.pad(regions[None, None].float(), (radius,) * 4, value=-2.0)  # -2 = beyond the view
    k = 2 * radius + 1
    high = nnf.max_pool2d(r, k, stride=1)[0, 0]
    low = -nnf.max_pool2d(-r, k, stride=1)[0, 0]
    return (high == low) & (regions >= 0)


@pytest.mark.parametrize(
    "transform",
    [
        lambda: view_transform(48, "quickstart", **GEOMETRY, **NO_INTENSITY),
        lambda: view_transform(48, "pcl", affine_p=1.0),
        lambda: view_transform(48, "pcl_elastic", p_spatial=1.0),
    ],
    ids=["quickstart_geometry", "pcl", "pcl_elastic"],
)
def test_region_maps_follow_each_views_geometry(blocks, transform):
    data, regions = blocks
    torch.manual_seed(0)
    dataset = TwoViewDataset(data, transform(), regions=regions)
    differ = 0
    for i in range(len(dataset)):
        for _ in range(3):
            item = dataset[i]
            assert set(item) == {"view1", "view2", "regions1", "regions2", *ITEM_META_KEYS}
            for view_key, region_key in (("view1", "regions1"), ("view2", "regions2")):
                view, mapped = item[view_key][0], item[region_key]
                assert mapped.shape == (48, 48) and mapped.dtype == torch.int64
                ids = set(mapped.unique().tolist())
                assert ids <= set(np.unique(regions[i]).tolist()) | {-1}
                assert len(ids - {-1}) >= 2
                inside = interior(mapped)
                assert inside.float().mean() > 0.1
                expected = torch.from_numpy(block_value(mapped.clamp(min=0).numpy()))
                torch.testing.assert_close(view[inside], expected[inside], atol=1e-4, rtol=0)
            differ += not torch.equal(item["regions1"], item["regions2"])
    assert differ >= 7  # two views, two geometries (9 items)


def test_intensity_steps_leave_region_maps_alone(blocks):
    data, regions = blocks
    plain = view_transform(48, "quickstart", **GEOMETRY, **NO_INTENSITY)
    plain = TwoViewDataset(data, plain, regions=regions)
    full = TwoViewDataset(data, view_transform(48, "quickstart", **GEOMETRY), regions=regions)
    torch.manual_seed(3)
    a = plain[1]
    torch.manual_seed(3)
    b = full[1]
    torch.testing.assert_close(a["regions1"], b["regions1"], rtol=0, atol=0)  # same geometry
    assert not torch.allclose(a["view1"], b["view1"])  # intensity changed the view only


def test_region_maps_mark_outside_pixels_and_collate(blocks):
    data, regions = blocks
    torch.manual_seed(1)
    # zooming out (scale 0.7) with a rotation always brings in pixels from outside the image
    transform = view_transform(32, "pcl", affine_p=1.0, scale=(0.7, 0.7), degrees=45.0)
    dataset = TwoViewDataset(data, transform, index=[2, 0], regions=regions)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["regions1"].shape == (2, 32, 32) and batch["regions1"].dtype == torch.int64
    assert batch["view1"].shape == (2, 1, 32, 32)
    assert batch["index"].tolist() == [2, 0]
    for key in ("regions1", "regions2"):
        outside = batch[key] == -1
        assert outside.float().mean() > 0.05
        # -1 pixels away from the image's edge (3 x 3 all -1) see only the zero padding
        far = nnf.max_pool2d((~outside).float()[:, None], 3, stride=1, padding=1)[:, 0] == 0
        assert far.any() and torch.all(batch[key.replace("regions", "view")][:, 0][far] == 0)
    assert set(batch["regions1"][0].unique().tolist()) <= set(range(6, 22)) | {-1}


def test_without_regions_items_are_unchanged(blocks):
    data, _ = blocks
    item = TwoViewDataset(data, view_transform(24))[0]
    assert set(item) == {"view1", "view2", *ITEM_META_KEYS}


def test_regions_from_superpixels_end_to_end(blocks, tmp_path):
    data, _ = blocks
    found = superpixels(data, SHARP, cache_dir=tmp_path / "superpixels")
    dataset = TwoViewDataset(data, view_transform(48, "pcl_elastic"), regions=found)
    item = dataset[1]
    assert set(item["regions2"].unique().tolist()) <= set(range(16)) | {-1}


def test_bad_regions_are_named(blocks):
    data, regions = blocks
    transform = view_transform(24)
    with pytest.raises(ValueError, match="regions"):
        TwoViewDataset(data, transform, regions=regions[:2])
    with pytest.raises(ValueError, match="regions"):
        TwoViewDataset(data, transform, regions=regions.astype(np.float32))
    with pytest.raises(ValueError, match="regions"):
        TwoViewDataset(data, transform, regions=regions - 5)
    with pytest.raises(TypeError, match="transform must accept"):
        TwoViewDataset(data, lambda image: image, regions=regions)[0]
    with pytest.raises(ValueError, match="view_transform"):
        TwoViewDataset(data, lambda image, mask: image, regions=regions)[0]


def test_two_views_carry_regions_and_masks_with_the_same_geometry():
    """Supervised pretraining (LRC Sec. 4): masks follow each view exactly as its regions do."""
    images = np.zeros((2, 32, 32), np.float32)
    masks = np.zeros((2, 32, 32), np.uint8)
    images[:, 4:20, 6:26], masks[:, 4:20, 6:26] = 1.0, 2
    regions = np.zeros((2, 32, 32), np.int32)
    regions[:, 4:20, 6:26] = 5
    meta = pd.DataFrame({"sample_id": ["a", "b"], "patient_id": ["p", "q"], "site": "A", "time": 0,
                         "volume_id": "", "slice_index": 0, "n_slices": 1, "depth": np.nan})
    data = SliceSet(images, masks, meta, ("background", "x", "organ"), "toy")
    transform = view_transform(32, "quickstart", degrees=30.0, brightness=0.0, contrast=0.0, gamma=None,
                               blur_p=0.0, noise_p=0.0)
    torch.manual_seed(0)
    item = TwoViewDataset(data, transform, regions=regions, masks=True)[0]
    for k in ("1", "2"):
        assert item[f"mask{k}"].dtype == torch.int64 and set(item[f"mask{k}"].unique().tolist()) <= {0, 2}
        np.testing.assert_array_equal((item[f"mask{k}"] == 2).numpy(), (item[f"regions{k}"] == 5).numpy())
    only_masks = TwoViewDataset(data, transform, masks=True)[1]
    assert "regions1" not in only_masks and only_masks["mask1"].shape == (32, 32)
    with pytest.raises(ValueError, match="masks=True needs a labelled dataset"):
        TwoViewDataset(SliceSet(images, None, meta, ("background",), "unlabelled"), transform, masks=True)
