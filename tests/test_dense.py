"""IDEAL's dense loss: pixel correspondence, matching, sampling, the loss, head and dataset option."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from medcl_lite.data.datasets import TwoViewDataset
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.transforms import RandomViewGeometry, view_transform
from medcl_lite.dense import (
    default_max_distance,
    dense_loss,
    dense_positive_mask,
    feature_pixels,
    match_locations,
    pixel_coordinates,
    sample_locations,
)
from medcl_lite.models import DenseProjectionHead

#: view_transform overrides that leave only the geometry (no intensity change).
GEOMETRY_ONLY = {
    "brightness": 0.0,
    "contrast": 0.0,
    "gamma": None,
    "blur_p": 0.0,
    "noise_p": 0.0,
}


def index_map(h, w):
    return torch.arange(h * w).reshape(h, w)


# --------------------------------------------------------------------------- reference loops
def loop_match(pix_q, pix_k, width, radius):
    """Nearest key cell by a double loop over cells (first one on ties), -1 beyond radius."""
    flat_q, flat_k = pix_q.reshape(-1).tolist(), pix_k.reshape(-1).tolist()
    out = []
    for pq in flat_q:
        best, best_d = -1, math.inf
        for ck, pk in enumerate(flat_k):
            if pq < 0 or pk < 0:
                continue
            dist = math.hypot(pq // width - pk // width, pq % width - pk % width)
            if dist < best_d:
                best, best_d = ck, dist
        out.append(best if best_d <= radius else -1)
    return out


def loop_dense_loss(q_map, k_map, pix1, pix2, width, radius, tau, queue=None):
    """Every matched query cell of every image, the loss written out with scalars (float64)."""
    b, _, h, w = q_map.shape
    pairs = []
    for i in range(b):
        for cq, ck in enumerate(loop_match(pix1[i], pix2[i], width, radius)):
            if ck >= 0:
                pairs.append((i, cq, ck))
    q = [F.normalize(q_map[i, :, cq // w, cq % w].double(), dim=0) for i, cq, _ in pairs]
    keys = [F.normalize(k_map[i, :, ck // w, ck % w].double(), dim=0) for i, _, ck in pairs]
    if queue is not None:
        keys += [F.normalize(k.double(), dim=0) for k in queue]
    total = 0.0
    for n, (i, _, ck) in enumerate(pairs):
        logits = [float(q[n].detach() @ k) / tau for k in keys]
        lse = math.log(sum(math.exp(v) for v in logits))
        positives = [m for m, (j, _, cj) in enumerate(pairs) if j == i and cj == ck]
        total += -sum(logits[m] - lse for m in positives) / len(positives)
    return total / len(pairs), len(pairs)


def two_view_maps():
    """Pixel maps of two 4x4 views of 2 images of a 6x6 slice (width 6), at feature size.

    Image 0: view 1 = rows 0-3, cols 0-3; view 2 = rows 1-4, cols 2-5, mirrored. Image 1: view
    1 = rows 2-5, cols 1-4 with one cell padded (-1); view 2 = the pixels with even row and
    column in its top-left 3x3 cells (a zoomed-out view), -1 elsewhere.
    """
    full = index_map(6, 6)
    pix1 = torch.stack([full[0:4, 0:4], full[2:6, 1:5]]).clone()
    pix1[1, 0, 0] = -1
    pix2 = torch.stack([full[1:5, 2:6].flip(-1), torch.full((4, 4), -1)])
    pix2[1, :3, :3] = full[0::2, 0::2]
    return pix1, pix2


def random_maps(seed, b=2, d=4, h=4, w=4):
    g = torch.Generator().manual_seed(seed)
    q_map = torch.randn(b, d, h, w, generator=g, requires_grad=True)
    k_map = torch.randn(b, d, h, w, generator=g)
    return q_map, k_map, g


# --------------------------------------------------------------------------- coordinates
def test_pixel_coordinates_decode_index_and_nan_outside():
    pixels = torch.tensor([[0, 7, -1], [13, 5, 20]])
    coords = pixel_coordinates(pixels, width=7)
    assert coords.shape == (2, 3, 2) and coords.dtype == torch.float32
    assert coords[0, 1].tolist() == [1.0, 0.0] and coords[1, 0].tolist() == [1.0, 6.0]
    assert coords[1, 2].tolist() == [2.0, 6.0]
    assert torch.isnan(coords[0, 2]).all() and not torch.isnan(coords[1]).any()
    with pytest.raises(ValueError, match="image_width"):
        pixel_coordinates(pixels, width=0)
    with pytest.raises(ValueError, match="integer"):
        pixel_coordinates(pixels.float(), width=7)
    with pytest.raises(ValueError, match="-2"):
        pixel_coordinates(pixels - 1, width=7)


def test_feature_pixels_is_nearest_exact_and_keeps_minus_one():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(-1, 200, (2, 12, 10), generator=g)
    small = feature_pixels(pixels, (6, 5))
    ref = F.interpolate(pixels[:, None].double(), size=(6, 5), mode="nearest-exact")[:, 0]
    assert small.dtype == torch.long and torch.equal(small, ref.long())
    with pytest.raises(ValueError, match="3 dimensions"):
        feature_pixels(pixels[0], (6, 5))


# --------------------------------------------------------------------------- matching
@pytest.mark.parametrize("size, cells", [(8, 8), (8, 4), (12, 3)])
def test_identity_geometry_matches_every_cell_to_itself(size, cells):
    pixels = index_map(size, size).expand(2, size, size)
    fp = feature_pixels(pixels, (cells, cells))
    match = match_locations(fp, fp, image_width=size)
    assert torch.equal(match, torch.arange(cells * cells).expand(2, -1))


@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5, 2.3, None])
def test_match_locations_is_the_nearest_key_within_radius(radius):
    g = torch.Generator().manual_seed(int(10 * (radius or 9)))
    width = 10
    pix_q = torch.randint(-1, 100, (2, 5, 6), generator=g)
    pix_k = torch.randint(-1, 100, (2, 4, 5), generator=g)
    match = match_locations(pix_q, pix_k, width, radius)
    r = default_max_distance(width, 5) if radius is None else radius
    assert r == (1.0 if radius is None else radius)
    cq, ck = pixel_coordinates(pix_q, width), pixel_coordinates(pix_k, width)
    for i in range(2):
        ref = torch.tensor(loop_match(pix_q[i], pix_k[i], width, r))
        assert torch.equal(match[i] >= 0, ref >= 0)
        keys = ck[i].reshape(-1, 2).nan_to_num(1e6)
        dist = torch.cdist(cq[i].reshape(-1, 2), keys, compute_mode="donot_use_mm_for_euclid_dist")
        got = dist.gather(1, match[i].clamp(min=0)[:, None])[:, 0]
        want = dist.gather(1, ref.clamp(min=0)[:, None])[:, 0]
        valid = ref >= 0
        assert valid.any() and torch.equal(got[valid], want[valid])  # equally near (ties)


def mirrored_views(crop_scale, hflip, seed=0):
    """Pixel map through RandomViewGeometry (view 2) and unchanged (view 1), 16x16 slice."""
    pixels = index_map(16, 16)
    torch.manual_seed(seed)
    geometry = RandomViewGeometry(16, crop_scale=crop_scale, hflip=hflip)
    view = geometry(tv_tensors.Mask(pixels[None] + 1)).as_subclass(torch.Tensor)[0] - 1
    return pixels[None], view.long()[None]


def test_horizontal_flip_matches_the_mirrored_locations():
    pix1, pix2 = mirrored_views((1.0, 1.0), hflip=1.0)
    assert torch.equal(pix2, pix1.flip(-1))
    match = match_locations(pix1, pix2, image_width=16).reshape(16, 16)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    assert torch.equal(match, rows * 16 + (15 - cols))


@pytest.mark.parametrize("hflip", [1.0, 0.0])
def test_crop_and_flip_match_exact_pixels_in_mirrored_order(hflip):
    pix1, pix2 = mirrored_views((0.3, 0.3), hflip=hflip, seed=3)
    match = match_locations(pix1, pix2, image_width=16)[0]
    shown = torch.zeros(256, dtype=torch.bool)
    shown[pix2[pix2 >= 0]] = True
    assert torch.equal(match >= 0, shown)  # the zoomed-in view 2 shows every pixel it covers
    assert 10 < int(shown.sum()) < 256
    matched = match >= 0
    assert torch.equal(pix2.reshape(-1)[match[matched]], pix1.reshape(-1)[matched])
    key_cols = torch.where(matched, match % 16, -1).reshape(16, 16)
    for row in key_cols[(key_cols >= 0).any(dim=1)]:  # key columns along a row of queries
        steps = row[row >= 0].diff()
        assert (steps <= 0).all() if hflip else (steps >= 0).all()
        assert (steps != 0).any()


def test_match_locations_rejects_bad_arguments():
    pix = index_map(4, 4)[None]
    with pytest.raises(ValueError, match="max_distance"):
        match_locations(pix, pix, 4, max_distance=-1.0)
    with pytest.raises(ValueError, match="batch size"):
        match_locations(pix, pix.expand(2, 4, 4), 4)
    with pytest.raises(ValueError, match="pix_k"):
        match_locations(pix, pix.float(), 4)
    with pytest.raises(ValueError, match="image_width"):
        match_locations(pix, pix, 0)


# --------------------------------------------------------------------------- sampling, mask
def test_sample_locations_takes_matched_cells_per_image_without_repeats():
    valid = torch.zeros(3, 20, dtype=torch.bool)
    valid[0, [1, 4, 7, 9, 15]] = True
    valid[1, :] = True
    for seed in range(5):
        img, cell = sample_locations(valid, 3, torch.Generator().manual_seed(seed))
        assert valid[img, cell].all()
        assert torch.bincount(img, minlength=3).tolist() == [3, 3, 0]
        assert len(set(zip(img.tolist(), cell.tolist(), strict=True))) == 6
    img, cell = sample_locations(valid, 50)
    assert sorted(zip(img.tolist(), cell.tolist(), strict=True)) == [
        tuple(x) for x in valid.nonzero().tolist()
    ]
    with pytest.raises(ValueError, match="per_image"):
        sample_locations(valid, 0)
    with pytest.raises(ValueError, match="valid"):
        sample_locations(valid.long(), 3)


def test_dense_positive_mask_same_key_cell_and_queue_negative():
    mask = dense_positive_mask(torch.tensor([0, 0, 1, 0]), torch.tensor([5, 6, 5, 5]), 3)
    assert mask.shape == (4, 7) and not mask[:, 4:].any()
    assert mask[0, 0] and mask[0, 3] and mask[3, 0] and not mask[0, 2] and not mask[0, 1]


# --------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("queue_size", [0, 5])
def test_dense_loss_equals_loop_reference(queue_size):
    q_map, k_map, g = random_maps(0)
    queue = torch.randn(queue_size, 4, generator=g) if queue_size else None
    pix1, pix2 = two_view_maps()
    for radius in (None, 1.5):
        r = 0.75 if radius is None else radius  # default: 0.5 * 6 / 4
        out = dense_loss(q_map, k_map, pix1, pix2, 16, 0.2, queue, radius, image_width=6)
        ref, n = loop_dense_loss(q_map, k_map, pix1, pix2, 6, r, 0.2, queue)
        assert out.n_pairs == n and n > 0
        assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    assert n == 12 + 15  # radius 1.5: one pixel around view 2's footprint, the zoomed-out gaps


def test_exact_matches_in_the_two_view_case():
    pix1, pix2 = two_view_maps()
    match = match_locations(pix1, pix2, 6)
    assert int((match[0] >= 0).sum()) == 6  # rows 1-3 x cols 2-3 overlap
    assert int((match[1] >= 0).sum()) == 4  # even pixels (2, 2), (2, 4), (4, 2), (4, 4)
    i, c = (match >= 0).nonzero(as_tuple=True)
    assert torch.equal(pix2.reshape(2, -1)[i, match[i, c]], pix1.reshape(2, -1)[i, c])


def test_constant_embeddings_give_log_of_key_count():
    pix1, pix2 = two_view_maps()
    q_map = torch.ones(2, 4, 4, 4)
    for queue in (None, torch.ones(7, 4)):
        out = dense_loss(q_map, q_map, pix1, pix2, per_image=4, queue=queue, image_width=6)
        n_keys = out.n_pairs + (0 if queue is None else 7)
        assert out.n_pairs == 4 + 4
        assert out.loss.item() == pytest.approx(math.log(n_keys), rel=1e-6)


def test_gradient_reaches_only_sampled_query_cells():
    q_map, k_map, _ = random_maps(1)
    k_map.requires_grad_(True)
    pix1, pix2 = two_view_maps()
    out = dense_loss(q_map, k_map, pix1, pix2, per_image=2, image_width=6)
    out.loss.backward()
    touched = q_map.grad.abs().sum(dim=1).flatten(1) > 0
    expected = torch.zeros_like(touched)
    expected[out.pairs[:, 0], out.pairs[:, 1]] = True
    assert out.n_pairs == 4 and torch.equal(touched, expected)
    assert k_map.grad.abs().sum() > 0  # detaching the momentum keys is the caller's job


def test_sampled_pairs_keys_and_reproducibility():
    q_map, k_map, _ = random_maps(2)
    pix1, pix2 = two_view_maps()
    a = dense_loss(
        q_map, k_map, pix1, pix2, 3, generator=torch.Generator().manual_seed(5), image_width=6
    )
    b = dense_loss(
        q_map, k_map, pix1, pix2, 3, generator=torch.Generator().manual_seed(5), image_width=6
    )
    assert torch.equal(a.pairs, b.pairs) and a.loss.item() == b.loss.item()
    img, query, key = a.pairs.T
    match = match_locations(pix1, pix2, 6)
    assert torch.equal(match[img, query], key)
    assert torch.bincount(img).tolist() == [3, 3]
    expected = F.normalize(k_map.flatten(2)[img, :, key], dim=1)
    assert torch.allclose(a.keys, expected) and not a.keys.requires_grad


def test_pixel_maps_at_view_resolution_are_resized_to_the_features():
    q_map, k_map, _ = random_maps(3)
    pix1, pix2 = two_view_maps()
    big1 = pix1.repeat_interleave(2, 1).repeat_interleave(2, 2)
    big2 = pix2.repeat_interleave(2, 1).repeat_interleave(2, 2)
    a = dense_loss(q_map, k_map, pix1, pix2, 16, image_width=6)
    b = dense_loss(q_map, k_map, big1, big2, 16, image_width=6)
    assert a.n_pairs == b.n_pairs and a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)


def test_no_matched_cell_gives_zero_loss_in_the_graph():
    q_map, k_map, _ = random_maps(4)
    pix1, _ = two_view_maps()
    out = dense_loss(q_map, k_map, pix1, torch.full_like(pix1, -1), image_width=6)
    assert out.n_pairs == 0 and out.loss.item() == 0.0 and out.loss.requires_grad
    assert out.keys.shape == (0, 4) and out.pairs.shape == (0, 3)
    out.loss.backward()
    assert torch.equal(q_map.grad, torch.zeros_like(q_map))


def test_dense_loss_rejects_bad_arguments():
    q_map, k_map, _ = random_maps(5)
    pix1, pix2 = two_view_maps()
    cases = [
        ({"per_image": 0}, "per_image"),
        ({"temperature": 0.0}, "temperature"),
        ({"queue": torch.randn(3, 5)}, "queue"),
        ({"max_distance": -1.0}, "max_distance"),
        ({"image_width": 0}, "image_width"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            dense_loss(q_map, k_map, pix1, pix2, **{"image_width": 6, **kwargs})
    with pytest.raises(ValueError, match="q_map and k_map"):
        dense_loss(q_map, k_map[:, :2], pix1, pix2, image_width=6)
    with pytest.raises(ValueError, match="pix2"):
        dense_loss(q_map, k_map, pix1, pix2[:1], image_width=6)
    with pytest.raises(ValueError, match="pix1"):
        dense_loss(q_map, k_map, pix1.float(), pix2, image_width=6)
    with pytest.raises(TypeError, match="image_width"):
        dense_loss(q_map, k_map, pix1, pix2)


# --------------------------------------------------------------------------- head
def test_dense_projection_head_shapes_and_locality():
    x = torch.randn(2, 8, 5, 6)
    for hidden in (None, 16):
        head = DenseProjectionHead(8, dim=12, hidden=hidden)
        y = head(x)
        assert y.shape == (2, 12, 5, 6)
        x2 = x.clone()
        x2[1, :, 3, 2] += 1.0
        changed = (head(x2) - y).abs().sum(dim=1) > 0
        assert changed.nonzero().tolist() == [[1, 3, 2]]  # 1x1: no spatial mixing
        assert all(
            isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
            for m in head.layers
            if hasattr(m, "kernel_size")
        )
    assert (
        len(DenseProjectionHead(8).layers) == 1
        and len(DenseProjectionHead(8, hidden=4).layers) == 3
    )
    for kwargs, name in [
        ({"in_channels": 0}, "in_channels"),
        ({"dim": 0}, "dim"),
        ({"hidden": 0}, "hidden"),
    ]:
        with pytest.raises(ValueError, match=name):
            DenseProjectionHead(**{"in_channels": 8, **kwargs})
    with pytest.raises(ValueError, match="features"):
        DenseProjectionHead(8)(torch.randn(2, 8))


# --------------------------------------------------------------------------- dataset option
def ramp_set(tiny_set: SliceSet) -> SliceSet:
    """``tiny_set`` with smooth ramps as images, so bilinear ~ nearest sampling."""
    n, h, w = tiny_set.images.shape
    yy, xx = np.mgrid[:h, :w]
    ramp = ((xx + 2 * yy) / (3 * (w - 1))).astype(np.float32)
    images = np.stack([ramp if i % 2 else ramp[::-1, ::-1] for i in range(n)])
    return dataclasses.replace(tiny_set, images=np.ascontiguousarray(images))


def test_pixels_align_with_the_flipped_image_exactly(tiny_set):
    flip = view_transform(
        32,
        "quickstart",
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        degrees=0.0,
        hflip=1.0,
        **GEOMETRY_ONLY,
    )
    item = TwoViewDataset(tiny_set, flip, correspondence=True)[4]
    image = torch.from_numpy(tiny_set.images[4])
    assert item["pixels1"].dtype == torch.long and item["pixels1"].shape == (32, 32)
    assert torch.equal(item["pixels1"], index_map(32, 32).flip(-1))
    sampled = image.reshape(-1)[item["pixels1"]]
    torch.testing.assert_close(item["view1"][0], sampled, atol=1e-5, rtol=0)


def test_pixels_align_with_randomly_warped_views(tiny_set):
    data = ramp_set(tiny_set)
    transform = view_transform(32, "quickstart", hflip=0.5, degrees=30.0, **GEOMETRY_ONLY)
    ds = TwoViewDataset(data, transform, correspondence=True)
    torch.manual_seed(0)
    gradient = math.hypot(1, 2) / (3 * 31)  # |grad| of the ramp per pixel
    for i in (0, 1, 2):
        item, image = ds[i], torch.from_numpy(data.images[i])
        for v in "12":
            pixels, view = item[f"pixels{v}"], item[f"view{v}"][0]
            y, x = pixels // 32, pixels % 32
            inner = (pixels >= 0) & (y > 0) & (y < 31) & (x > 0) & (x < 31)
            assert inner.sum() > 100
            error = (view - image.reshape(-1)[pixels.clamp(min=0)])[inner].abs()
            assert error.max() <= gradient * 0.75 + 1e-5  # nearest pixel <= sqrt(2)/2 away
        wrong = (item["view1"][0] - image.reshape(-1)[item["pixels2"].clamp(min=0)]).abs()
        assert wrong.max() > 5 * gradient  # the other view's map does not fit: test can fail


def test_correspondence_works_with_regions_and_masks(tiny_set):
    g = np.random.default_rng(0)
    regions = g.integers(0, 50, size=tiny_set.images.shape)
    ds = TwoViewDataset(
        tiny_set, view_transform(32), regions=regions, masks=True, correspondence=True
    )
    torch.manual_seed(1)
    for i in (0, 5):
        item = ds[i]
        assert {"regions1", "regions2", "mask1", "mask2", "pixels1", "pixels2"} <= set(item)
        for v in "12":
            pixels = item[f"pixels{v}"]
            inside = pixels >= 0
            ref_regions = torch.from_numpy(regions[i]).reshape(-1)[pixels.clamp(min=0)]
            ref_mask = torch.from_numpy(tiny_set.masks[i]).long().reshape(-1)[pixels.clamp(min=0)]
            assert torch.equal(item[f"regions{v}"], torch.where(inside, ref_regions, -1))
            assert torch.equal(item[f"mask{v}"], torch.where(inside, ref_mask, 0))
        assert not torch.equal(item["pixels1"], item["pixels2"])
    plain = TwoViewDataset(tiny_set, view_transform(32), regions=regions)[0]
    assert "pixels1" not in plain and "regions1" in plain


def test_correspondence_option_errors(tiny_set):
    with pytest.raises(TypeError, match="transform must accept"):
        TwoViewDataset(tiny_set, lambda image: image, correspondence=True)[0]
    huge = dataclasses.replace(
        tiny_set.subset([0]),
        images=np.broadcast_to(np.zeros((1, 1, 1), np.float32), (1, 4096, 4097)),
        masks=None,
    )
    with pytest.raises(ValueError, match="2\\*\\*24"):
        TwoViewDataset(huge, view_transform(32), correspondence=True)
