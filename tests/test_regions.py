"""Region pooling, contrastive region sampling and the LRC region loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcl_lite.losses import nt_xent
from medcl_lite.models import RegionHead
from medcl_lite.regions import (
    region_loss,
    region_pool,
    region_positive_mask,
    resize_regions,
    sample_regions,
)


def loop_pool(features, regions, k):
    """Plain double loop over images and regions (the reference); regions already at (h, w)."""
    b, c = features.shape[:2]
    pooled = torch.zeros(b, k, c, dtype=torch.float64)
    counts = torch.zeros(b, k, dtype=torch.long)
    for i in range(b):
        for r in range(k):
            mask = regions[i] == r
            counts[i, r] = int(mask.sum())
            if counts[i, r] > 0:
                pooled[i, r] = features[i].double()[:, mask].mean(dim=1)
    return pooled, counts


def random_case(seed, b=3, c=4, h=6, w=5, k=7):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, c, h, w, generator=g)
    regions = torch.randint(-1, k - 2, (b, h, w), generator=g)  # ids k-2, k-1 stay empty
    return features, regions


def test_region_pool_matches_double_loop_with_empty_and_unlabelled_pixels():
    features, regions = random_case(0)
    regions[0] = regions[0].clamp(max=3)
    regions[0, 2, 3] = 4  # a one-pixel region
    assert (regions == -1).any()
    pooled, counts = region_pool(features, regions, num_regions=7)
    ref, ref_counts = loop_pool(features, regions, 7)
    assert pooled.shape == (3, 7, 4) and pooled.dtype == torch.float32
    assert torch.equal(counts, ref_counts)
    assert torch.allclose(pooled.double(), ref, atol=1e-6)
    assert (counts[:, 5:] == 0).all() and (pooled[:, 5:] == 0).all()
    assert counts.sum() == (regions >= 0).sum()  # -1 pixels counted nowhere
    assert counts[0, 4] == 1 and torch.equal(pooled[0, 4], features[0, :, 2, 3])


def test_region_pool_default_k_is_max_plus_one():
    features, regions = random_case(1)
    pooled, counts = region_pool(features, regions)
    assert pooled.shape[1] == int(regions.max()) + 1 == counts.shape[1]


@pytest.mark.parametrize("big, small", [((12, 10), (6, 5)), ((13, 7), (6, 5)), ((3, 4), (6, 5))])
def test_resize_path_uses_nearest_exact_region_map(big, small):
    g = torch.Generator().manual_seed(2)
    regions = torch.randint(-1, 6, (2, *big), generator=g)
    features = torch.randn(2, 3, *small, generator=g)
    small_map = resize_regions(regions, small)
    ref_map = F.interpolate(regions[:, None].double(), size=small, mode="nearest-exact")[
        :, 0
    ].long()
    assert torch.equal(small_map, ref_map)
    pooled, counts = region_pool(features, regions, num_regions=6)
    ref, ref_counts = loop_pool(features, ref_map, 6)
    assert torch.equal(counts, ref_counts)
    assert torch.allclose(pooled.double(), ref, atol=1e-6)


def test_gradient_reaches_features_only_through_labelled_pixels():
    features, regions = random_case(3)
    features.requires_grad_(True)
    pooled, counts = region_pool(features, regions, 7)
    pooled.sum().backward()
    grad = features.grad
    # d(sum of means)/d(pixel) = 1 / size of its region, 0 for -1 pixels
    size = counts.gather(1, regions.clamp(min=0).flatten(1)).reshape(regions.shape).float()
    expected = torch.where(regions >= 0, 1.0 / size, torch.zeros_like(size))
    assert torch.allclose(grad, expected[:, None].expand_as(grad))


def test_region_pool_rejects_bad_input():
    features, regions = random_case(4)
    with pytest.raises(ValueError, match="num_regions"):
        region_pool(features, regions, num_regions=2)
    with pytest.raises(ValueError, match="integer"):
        region_pool(features, regions.float())
    with pytest.raises(ValueError, match="B = 3"):
        region_pool(features, regions[:2])
    with pytest.raises(ValueError, match="-2"):
        region_pool(features, regions - 1)


def test_half_precision_features_accumulate_in_float32():
    features, regions = random_case(5, h=64, w=64, k=3)
    pooled, _ = region_pool(features.to(torch.bfloat16), regions, 3)
    ref, _ = loop_pool(features.to(torch.bfloat16).float(), regions, 3)
    assert pooled.dtype == torch.float32
    assert torch.allclose(pooled.double(), ref, atol=1e-5)


def counts_case():
    counts1 = torch.tensor(
        [[20, 20, 5, 20, 30, 16], [0, 100, 100, 100, 100, 100], [3, 3, 3, 3, 3, 3]]
    )
    counts2 = torch.tensor(
        [[20, 0, 20, 20, 30, 40], [100, 100, 15, 100, 16, 100], [3, 3, 3, 3, 3, 3]]
    )
    return counts1, counts2


def test_sample_regions_respects_min_pixels_in_both_views_and_per_image():
    counts1, counts2 = counts_case()
    eligible = (counts1 >= 16) & (counts2 >= 16)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        img, reg = sample_regions(counts1, counts2, per_image=2, min_pixels=16, generator=g)
        assert eligible[img, reg].all()
        assert torch.equal(torch.bincount(img, minlength=3), torch.tensor([2, 2, 0]))
        pairs = set(zip(img.tolist(), reg.tolist(), strict=True))
        assert len(pairs) == len(img)  # no duplicates
    # per_image above the eligible count: every eligible region once
    img, reg = sample_regions(counts1, counts2, per_image=10, min_pixels=16)
    assert (
        sorted(map(list, zip(img.tolist(), reg.tolist(), strict=True)))
        == eligible.nonzero().tolist()
    )


def test_sample_regions_is_uniform_over_eligible_regions():
    counts = torch.full((1, 5), 50)
    counts[0, 2] = 1  # ineligible
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(5)
    for _ in range(400):
        _, reg = sample_regions(counts, counts, per_image=1, min_pixels=16, generator=g)
        hits[reg] += 1
    assert hits[2] == 0
    assert (hits[[0, 1, 3, 4]] > 60).all()  # 100 expected each; 60 is > 4 sd below


def test_sample_regions_deterministic_given_generator():
    counts = torch.randint(0, 60, (4, 30), generator=torch.Generator().manual_seed(1))

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return sample_regions(counts, counts, per_image=5, min_pixels=16, generator=g)

    a, b, c = draw(7), draw(7), draw(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_sample_regions_rejects_bad_arguments():
    counts1, counts2 = counts_case()
    with pytest.raises(ValueError, match="per_image"):
        sample_regions(counts1, counts2, per_image=0, min_pixels=16)
    with pytest.raises(ValueError, match="min_pixels"):
        sample_regions(counts1, counts2, per_image=2, min_pixels=0)
    with pytest.raises(ValueError, match="counts1 and counts2"):
        sample_regions(counts1, counts2[:2], per_image=2, min_pixels=16)


def test_positive_mask_is_identity_without_replacement():
    counts1, counts2 = counts_case()
    img, reg = sample_regions(counts1, counts2, per_image=3, min_pixels=16)
    assert torch.equal(region_positive_mask(img, reg), torch.eye(len(img), dtype=torch.bool))
    dup = region_positive_mask(torch.tensor([0, 0, 1, 0]), torch.tensor([2, 3, 2, 2]))
    assert dup[0, 3] and dup[3, 0] and not dup[0, 2] and not dup[0, 1]


def two_view_case(seed=0):
    """Two 8x8 views of 2 images with 4 quadrant regions each; view 2 loses region 3 of image 1."""
    g = torch.Generator().manual_seed(seed)
    quad = torch.zeros(8, 8, dtype=torch.long)
    quad[:4, 4:], quad[4:, :4], quad[4:, 4:] = 1, 2, 3
    regions1 = torch.stack([quad, quad])
    regions2 = regions1.flip(-1).clone()  # a horizontal flip moves the regions with the image
    regions2[1][regions2[1] == 3] = -1  # cropped away in view 2
    f1 = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    f2 = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    return f1, f2, regions1, regions2


def seeded_head() -> RegionHead:
    """A RegionHead drawn from a fixed seed: its 3 hidden ReLU units can all be dead for the 7
    regions of the case (3 of 40 seeds: every gradient exactly 0), so the draw must not depend on
    what the tests before it consumed from the global generator."""
    torch.manual_seed(0)
    return RegionHead(3, 5)


def test_region_loss_equals_nt_xent_of_hand_pooled_regions():
    f1, f2, regions1, regions2 = two_view_case()
    head = seeded_head()
    g = torch.Generator().manual_seed(3)
    loss, m = region_loss(f1, f2, regions1, regions2, head, per_image=8, min_pixels=16, generator=g)
    assert m == 7  # 4 quadrants (16 px) in image 0, 3 in image 1
    # reference: every eligible region, pooled by hand, in the order the sampler drew them
    g = torch.Generator().manual_seed(3)
    counts = torch.full((2, 4), 16)
    counts[1, 3] = 0
    img, reg = sample_regions(torch.full((2, 4), 16), counts, 8, 16, generator=g)
    p1 = torch.stack(
        [
            f1[i][:, regions1[i] == r].mean(1)
            for i, r in zip(img.tolist(), reg.tolist(), strict=True)
        ]
    )
    p2 = torch.stack(
        [
            f2[i][:, regions2[i] == r].mean(1)
            for i, r in zip(img.tolist(), reg.tolist(), strict=True)
        ]
    )
    expected = nt_xent(head(p1), head(p2), 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the loss does not depend on sampling order (a permutation of the regions)
    loss_other, _ = region_loss(
        f1, f2, regions1, regions2, head, generator=torch.Generator().manual_seed(99)
    )
    assert loss_other.item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert f1.grad.abs().sum() > 0 and f2.grad.abs().sum() > 0
    assert f2.grad[1][:, regions2[1] == -1].abs().sum() == 0


def test_identical_region_embeddings_give_log_2m_minus_1():
    f1, f2, regions1, regions2 = two_view_case()
    const_head = nn.Linear(3, 4)  # zero weights: every region gets the same embedding
    nn.init.zeros_(const_head.weight)
    nn.init.ones_(const_head.bias)
    for per_image in (1, 2, 8):
        loss, m = region_loss(f1, f2, regions1, regions2, const_head, per_image=per_image)
        assert m == min(per_image, 4) + min(per_image, 3)
        assert loss.item() == pytest.approx(math.log(2 * m - 1), rel=1e-6)


def test_fewer_than_two_regions_gives_zero_with_graph():
    f1, f2, regions1, regions2 = two_view_case()
    head = seeded_head()
    loss, m = region_loss(f1, f2, regions1, regions2, head, min_pixels=17)  # all regions too small
    assert m == 0 and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(f1.grad, torch.zeros_like(f1))
    one = regions1.clone()
    one[one > 0] = -1
    one[1] = -1  # a single region (image 0, region 0) left
    loss, m = region_loss(f1, f2, one, one, head)
    assert m == 1 and loss.item() == 0.0 and loss.requires_grad


def test_region_loss_resizes_region_maps_to_feature_size():
    f1, f2, regions1, regions2 = two_view_case()
    big1 = regions1.repeat_interleave(2, 1).repeat_interleave(2, 2)
    big2 = regions2.repeat_interleave(2, 1).repeat_interleave(2, 2)
    head = seeded_head()
    g = torch.Generator().manual_seed(0)
    a, m_a = region_loss(f1, f2, regions1, regions2, head, generator=g)
    b, m_b = region_loss(f1, f2, big1, big2, head, generator=torch.Generator().manual_seed(0))
    assert m_a == m_b == 7 and a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_amp_matches_cpu():
    features, regions = random_case(6, b=4, c=8, h=32, w=32, k=9)
    ref, ref_counts = region_pool(features, regions, 9)
    with torch.autocast("cuda", dtype=torch.float16):
        pooled, counts = region_pool(features.cuda().half(), regions.cuda(), 9)
    assert pooled.dtype == torch.float32 and torch.equal(counts.cpu(), ref_counts)
    assert torch.allclose(pooled.cpu(), ref, atol=5e-3)
    f1, f2, regions1, regions2 = two_view_case()
    head = seeded_head().cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.autocast("cuda", dtype=torch.float16):
        loss, m = region_loss(
            f1.cuda(), f2.cuda(), regions1.cuda(), regions2.cuda(), head, generator=g
        )
    loss.backward()
    assert m == 7 and torch.isfinite(loss)
