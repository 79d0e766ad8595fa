"""Region pooling, contrastive region sampling and the region loss of LRC.

LRC ("localized region contrast", docs/methods.md, "LRC") average-pools local (decoder) features
over each superpixel region; a region in view 1 is positive with the *same* region in view 2 and
negative with the other regions of the image and of the batch. Its "contrastive sampling" loss
draws R regions per image instead of using all of them. In the one-idea table
(docs/design.md, "The one idea") the positive mask is the instance mask over the sampled regions,
so the loss is plain :func:`medcl_lite.losses.nt_xent` on the pooled, projected region vectors.

Not published, our choices (exposed as parameters; defaults in :func:`region_loss`): R = 8 regions
per image, regions smaller than 16 feature-map pixels in either view are skipped, τ = 0.1.

Shapes: ``B`` images, ``C`` feature channels, ``(h, w)`` feature map, ``(H, W)`` region map,
``K`` region ids per image, ``M`` sampled regions in the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medcl_lite.losses import nt_xent

__all__ = ["region_loss", "region_pool", "region_positive_mask", "resize_regions", "sample_regions"]


def resize_regions(regions: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a region map ``[B, H, W]`` to ``size = (h, w)``.

    The source pixel whose centre is nearest is taken (the rule of
    ``F.interpolate(mode="nearest-exact")``), by integer indexing, so ids are never rounded and
    ``-1`` (no region) survives. Returns the map unchanged when it already has that size.
    """
    if regions.ndim != 3:
        raise ValueError(f"regions must be [B, H, W], got shape {tuple(regions.shape)}")
    (big_h, big_w), (h, w) = regions.shape[-2:], size
    if (big_h, big_w) == (h, w):
        return regions
    if h < 1 or w < 1:
        raise ValueError(f"resize_regions: size must be positive, got {size}")
    rows = _nearest_index(big_h, h, regions.device)
    cols = _nearest_index(big_w, w, regions.device)
    return regions[:, rows][:, :, cols]


def _nearest_index(src: int, dst: int, device: torch.device) -> Tensor:
    """Source index of each of ``dst`` output positions: floor((i + 0.5) · src / dst)."""
    pos = (torch.arange(dst, dtype=torch.float64, device=device) + 0.5) * (src / dst)
    return pos.floor().long().clamp_(max=src - 1)


def region_pool(
    features: Tensor, regions: Tensor, num_regions: int | None = None
) -> tuple[Tensor, Tensor]:
    """Mean feature vector of every region of every image (LRC's region average pooling).

    Args:
        features: ``[B, C, h, w]`` local features (any float dtype; accumulated in float32, so
            it is safe under AMP).
        regions: ``[B, H, W]`` integer region ids, ``-1`` = no region (e.g. padding after a
            crop). If ``(H, W) != (h, w)`` the *region map* is resized to ``(h, w)`` with nearest
            neighbour (:func:`resize_regions`); features are never upsampled.
        num_regions: K; default ``regions.max() + 1``. Ids must be ``< K``.
    Returns:
        ``pooled [B, K, C]`` float32 (0 for a region with no pixel) and ``counts [B, K]`` long,
        pixels per region at the feature resolution. One ``index_add`` over the flattened
        ``b * K + id`` index; differentiable w.r.t. ``features``.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be [B, C, h, w], got shape {tuple(features.shape)}")
    b, c, h, w = features.shape
    if regions.ndim != 3 or regions.shape[0] != b:
        raise ValueError(
            f"regions must be [B, H, W] with B = {b} (features' batch), got {tuple(regions.shape)}"
        )
    if regions.dtype.is_floating_point or regions.dtype == torch.bool:
        raise ValueError(f"regions must hold integer ids, got dtype {regions.dtype}")
    ids = resize_regions(regions.to(features.device), (h, w)).reshape(b, h * w).long()
    top = int(ids.max()) if ids.numel() else -1
    k = top + 1 if num_regions is None else int(num_regions)
    if k < 0 or top >= k:
        raise ValueError(f"region id {top} found but num_regions = {num_regions} (ids must be < K)")
    if int(ids.min()) < -1:
        raise ValueError(f"regions hold id {int(ids.min())}; only ids >= 0 and -1 (none) allowed")
    offset = torch.arange(b, device=ids.device)[:, None] * k
    dump = b * k  # one extra slot collects the -1 pixels, then is dropped
    flat = torch.where(ids >= 0, ids + offset, torch.full_like(ids, dump)).reshape(-1)
    vectors = features.permute(0, 2, 3, 1).reshape(b * h * w, c).float()
    sums = vectors.new_zeros(dump + 1, c).index_add(0, flat, vectors)
    counts = torch.bincount(flat, minlength=dump + 1)
    pooled = sums[:dump] / counts[:dump].clamp(min=1).unsqueeze(1).float()
    return pooled.reshape(b, k, c), counts[:dump].reshape(b, k)


def sample_regions(
    counts1: Tensor,
    counts2: Tensor,
    per_image: int,
    min_pixels: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """LRC's contrastive sampling: up to ``per_image`` regions per image, uniformly, no repeats.

    A region is eligible when it has at least ``min_pixels`` pixels in *both* views (small
    regions and regions cropped away in one view are skipped). Vectorised: a uniform random key
    per (image, region), ineligible keys masked to -1, ``topk`` per row.

    Args:
        counts1, counts2: ``[B, K]`` pixels per region in each view (from :func:`region_pool`).
        per_image: R >= 1.
        min_pixels: >= 1.
        generator: makes the draw reproducible (keys drawn on its device).
    Returns:
        ``image_idx [M]`` and ``region_idx [M]`` (long, on the counts' device), image-major.
    """
    if counts1.shape != counts2.shape or counts1.ndim != 2:
        raise ValueError(
            f"counts1 and counts2 must both be [B, K], got {tuple(counts1.shape)} and {tuple(counts2.shape)}"
        )
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    b, k = counts1.shape
    device = counts1.device
    eligible = (counts1 >= min_pixels) & (counts2.to(device) >= min_pixels)
    key_device = generator.device if generator is not None else device
    keys = torch.rand(b, k, generator=generator, device=key_device).to(device)
    keys = keys.masked_fill(~eligible, -1.0)
    top_keys, top_idx = keys.topk(min(per_image, k), dim=1)  # [B, R]
    chosen = top_keys >= 0
    image_idx = torch.arange(b, device=device)[:, None].expand_as(top_idx)
    return image_idx[chosen], top_idx[chosen]


def region_positive_mask(image_idx: Tensor, region_idx: Tensor) -> Tensor:
    """``[M, M]`` bool: sampled entries i and j are the same region of the same image.

    With sampling without replacement (:func:`sample_regions`) this is the identity, i.e. the
    instance mask of the shared InfoNCE: each region's only positive is itself in the other view.
    """
    same_image = image_idx[:, None] == image_idx[None, :]
    return same_image & (region_idx[:, None] == region_idx[None, :])


def region_loss(
    f1: Tensor,
    f2: Tensor,
    regions1: Tensor,
    regions2: Tensor,
    head: nn.Module,
    per_image: int = 8,
    min_pixels: int = 16,
    temperature: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """LRC's region contrastive loss between two views.

    Pools ``f1``/``f2`` over ``regions1``/``regions2`` (:func:`region_pool`, one K for both
    views), samples regions present in both views (:func:`sample_regions`), projects the pooled
    vectors with ``head`` (``[M, C] -> [M, D]``, e.g. :class:`medcl_lite.models.RegionHead`) and
    returns NT-Xent over the M regions: positive = the same region of the same image in the other
    view, negatives = all other sampled regions of the batch, both views.

    Our choices, not published: ``per_image`` (R) = 8, ``min_pixels`` = 16 feature-map pixels,
    ``temperature`` (τ) = 0.1.

    Args:
        f1, f2: ``[B, C, h, w]`` local features of view 1 and view 2.
        regions1, regions2: ``[B, H, W]`` region ids of each view (-1 = none); the same id means
            the same superpixel in both views.
    Returns:
        ``(loss, M)``. With ``M < 2`` the loss is ``(f1.sum() + f2.sum()) * 0``: zero, yet in
        the graph, so ``backward`` still runs.
    """
    if f1.shape != f2.shape:
        raise ValueError(
            f"f1 and f2 must have the same shape, got {tuple(f1.shape)} and {tuple(f2.shape)}"
        )
    top = max(
        int(regions1.max()) if regions1.numel() else -1,
        int(regions2.max()) if regions2.numel() else -1,
    )
    pooled1, counts1 = region_pool(f1, regions1, top + 1)
    pooled2, counts2 = region_pool(f2, regions2, top + 1)
    image_idx, region_idx = sample_regions(counts1, counts2, per_image, min_pixels, generator)
    m = int(image_idx.numel())
    if m < 2:
        return (f1.sum() + f2.sum()) * 0, m
    z1 = head(pooled1[image_idx, region_idx])
    z2 = head(pooled2[image_idx, region_idx])
    return nt_xent(z1, z2, temperature), m
