"""IDEAL's dense contrastive loss with exact geometric correspondence (docs/methods.md, "IDEAL").

IDEAL projects the encoder's feature map with a 1x1 convolution
(:class:`medcl_lite.models.DenseProjectionHead`) and contrasts *locations*: a location of the
query map is positive with the corresponding location of the key map (the same place of the
slice after undoing the geometric augmentation); the other locations and the queue are negatives.

The correspondence trick: the "region map" of an unaugmented slice is its pixel index map
``y * W + x``. ``TwoViewDataset(..., correspondence=True)`` warps it with each view's geometry
(nearest sampling, the same transform call as the image), so every view pixel holds the original
pixel it shows (``pixels1`` / ``pixels2``, -1 outside the slice). :func:`feature_pixels` brings
the maps to the feature resolution, :func:`match_locations` pairs each query cell with the key cell
whose original pixel is nearest, and :func:`dense_loss` samples matched query cells and applies the
shared :func:`medcl_lite.losses.info_nce` (MoCo form) with a boolean positive mask.

Not published, our choices (exposed as parameters, defaults in :func:`dense_loss`):

* correspondence by geometry (nearest original coordinates), not DenseCL's "most similar key
  location": exact, because the augmentation is known;
* ``max_distance`` (pixels of the original slice) = half a feature cell of a view that shows the
  whole slice, ``0.5 * image_width / w`` (``w`` the feature map width); query cells without a key
  cell that close (outside view 2, or where views zoom differently) are not used;
* ``per_image`` = 64 query cells per image, drawn uniformly among the matched cells, no repeats;
* ``temperature`` τ = 0.2 (DenseCL's and MoCo v2's value);
* negatives: every other sampled key of the batch (other locations of the same image and of other
  images) and the queue (optional ``[Q, D]`` keys; enqueue :attr:`DenseLoss.keys`). A key cell
  matched by two queries is in the keys twice and positive for both (averaged, as info_nce does).

Memory is linear in ``h * w``: matching scans a small window of offsets around each query's
original pixel in a key lookup table (``[B, H * W]``, chunked over offsets), and the softmax is over
the N sampled pairs (+ queue), never ``(h * w)^2``.

Shapes: ``B`` images, ``D`` embedding channels, ``(h, w)`` feature map, ``(H', W')`` view,
``W`` width of the original slice, ``N`` sampled pairs, ``Q`` queue entries.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl_lite.losses import info_nce
from medcl_lite.regions import region_positive_mask, resize_regions, sample_regions

__all__ = [
    "DenseLoss",
    "default_max_distance",
    "dense_loss",
    "dense_positive_mask",
    "feature_pixels",
    "match_locations",
    "pixel_coordinates",
    "sample_locations",
]

#: Window offsets scanned per chunk by :func:`match_locations` (memory ``B * h * w * chunk``).
_OFFSET_CHUNK = 16


class DenseLoss(NamedTuple):
    """What :func:`dense_loss` returns (unpack as ``loss, n_pairs, keys, pairs = ...``)."""

    #: scalar loss (0, still in the graph, when no pair was found)
    loss: Tensor
    #: N, the number of sampled query/key pairs
    n_pairs: int
    #: ``[N, D]`` float32 normalised, detached keys of the sampled pairs (for the MoCo queue)
    keys: Tensor
    #: ``[N, 3]`` long: image, query cell and key cell (flat indices into ``h * w``)
    pairs: Tensor


# --------------------------------------------------------------------------- checks
def _check_pixel_map(name: str, pixels: Tensor, ndim: int | None = None) -> None:
    """Integer index map with values >= -1 (and ``ndim`` dimensions when given)."""
    if not isinstance(pixels, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(pixels).__name__}")
    if ndim is not None and pixels.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(pixels.shape)}")
    if pixels.dtype.is_floating_point or pixels.dtype.is_complex or pixels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer pixel indices, got dtype {pixels.dtype}")
    if pixels.numel() and int(pixels.min()) < -1:
        raise ValueError(f"{name} holds {int(pixels.min())}; only indices >= 0 and -1 allowed")


def _check_width(image_width: int) -> int:
    if isinstance(image_width, bool) or not isinstance(image_width, int) or image_width < 1:
        raise ValueError(f"image_width must be an int >= 1, got {image_width!r}")
    return image_width


# --------------------------------------------------------------------------- coordinates
def pixel_coordinates(pixels: Tensor, width: int) -> Tensor:
    """Original ``(y, x)`` of an index map: ``[...]`` ints ``y * W + x`` -> ``[..., 2]`` float32.

    ``-1`` (outside the slice) gives ``(NaN, NaN)``. ``width`` is the original slice's W.
    """
    _check_pixel_map("pixels", pixels)
    width = _check_width(width)
    p = pixels.long()
    coords = torch.stack([torch.div(p, width, rounding_mode="floor"), p % width], dim=-1)
    return coords.float().masked_fill((p < 0).unsqueeze(-1), float("nan"))


def feature_pixels(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """The pixel map ``[B, H', W']`` at feature resolution ``size = (h, w)``: ``[B, h, w]`` long.

    Nearest neighbour (the view pixel nearest each cell centre, as
    :func:`medcl_lite.regions.resize_regions`), so indices stay exact and -1 survives.
    """
    _check_pixel_map("pixels", pixels, ndim=3)
    return resize_regions(pixels, tuple(size)).long()


def default_max_distance(image_width: int, feature_width: int) -> float:
    """Our default match radius in original pixels: half a feature cell of a view that shows the
    whole slice, ``0.5 * image_width / feature_width``."""
    return 0.5 * _check_width(image_width) / feature_width


# --------------------------------------------------------------------------- matching
def _window_offsets(radius: float, device: torch.device) -> Tensor:
    """``[K, 2]`` integer ``(dy, dx)`` with ``dy² + dx² <= radius²``, nearest first (ties by
    ``dy``, then ``dx``), so the first key found in this order is the nearest one."""
    r = math.floor(radius)
    steps = torch.arange(-r, r + 1)
    dy, dx = (t.reshape(-1) for t in torch.meshgrid(steps, steps, indexing="ij"))
    d2 = dy**2 + dx**2
    side = 2 * r + 1  # (d2, dy, dx) ordered as one integer key
    order = torch.argsort(d2 * side * side + (dy + r) * side + (dx + r))
    order = order[d2[order] <= radius * radius]
    return torch.stack([dy[order], dx[order]], dim=1).to(device)


def _key_lookup(pix_k: Tensor, width: int) -> Tensor:
    """``[B, rows * W + 1]`` long: at each original pixel the key cell showing it (-1: none).

    ``rows`` = the last original row any key shows, + 1. Several cells showing one pixel (a
    zoomed-in view) are equally near; the highest cell index is kept (deterministic). The extra
    last slot is -1, a target for out-of-range lookups.
    """
    b, n_keys = pix_k.shape
    rows = int(pix_k.max()) // width + 1 if bool((pix_k >= 0).any()) else 0
    dump = rows * width
    lookup = torch.full((b, dump + 1), -1, dtype=torch.long, device=pix_k.device)
    cells = torch.arange(n_keys, device=pix_k.device).expand(b, n_keys)
    target = torch.where(pix_k >= 0, pix_k, torch.full_like(pix_k, dump))
    lookup.scatter_reduce_(1, target, cells, reduce="amax")
    lookup[:, dump] = -1
    return lookup


def match_locations(
    pix_q: Tensor, pix_k: Tensor, image_width: int, max_distance: float | None = None
) -> Tensor:
    """For each query cell, the key cell (same image) whose original pixel is nearest.

    Exact nearest neighbour within ``max_distance``: the key cells are written into a lookup
    table over the original slice (:func:`_key_lookup`) and each query scans the integer offsets
    of its radius, nearest first, in chunks. Memory ``O(B * (H * W + h * w * chunk))``, never
    ``(h * w)^2``.

    Args:
        pix_q: ``[B, hq, wq]`` original pixel per query cell (-1 = outside), e.g. from
            :func:`feature_pixels`.
        pix_k: ``[B, hk, wk]`` original pixel per key cell.
        image_width: W of the original slice (decodes ``y * W + x``).
        max_distance: radius in original pixels (>= 0); default
            :func:`default_max_distance` ``(image_width, wk)``.
    Returns:
        ``[B, hq * wq]`` long: flat key cell index in ``hk * wk``, -1 where no key is that close.
    """
    _check_pixel_map("pix_q", pix_q, ndim=3)
    _check_pixel_map("pix_k", pix_k, ndim=3)
    width = _check_width(image_width)
    if pix_q.shape[0] != pix_k.shape[0]:
        raise ValueError(
            f"pix_q and pix_k must have the same batch size, got {tuple(pix_q.shape)} and "
            f"{tuple(pix_k.shape)}"
        )
    radius = default_max_distance(width, pix_k.shape[-1]) if max_distance is None else max_distance
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"max_distance must be a finite number >= 0, got {max_distance!r}")
    b = pix_q.shape[0]
    q = pix_q.reshape(b, -1).long().to(pix_k.device)
    lookup = _key_lookup(pix_k.reshape(b, -1).long(), width)
    dump = lookup.shape[1] - 1
    qy, qx = torch.div(q, width, rounding_mode="floor")[..., None], (q % width)[..., None]
    match = torch.full_like(q, -1)
    offsets = _window_offsets(radius, q.device)
    for start in range(0, len(offsets), _OFFSET_CHUNK):
        dy, dx = offsets[start : start + _OFFSET_CHUNK].T  # [c] each
        y, x = qy + dy, qx + dx  # [B, L, c]
        inside = (q[..., None] >= 0) & (y >= 0) & (x >= 0) & (x < width)
        flat = torch.where(inside, y * width + x, dump).clamp_(max=dump)
        found = lookup.gather(1, flat.reshape(b, -1)).reshape(flat.shape)
        first = (found >= 0).to(torch.uint8).argmax(dim=-1, keepdim=True)  # nearest hit
        match = torch.where(match >= 0, match, found.gather(-1, first).squeeze(-1))
        if bool(((match >= 0) | (q < 0)).all()):
            break
    return match


def sample_locations(
    valid: Tensor, per_image: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Up to ``per_image`` matched query cells per image, uniformly, without repeats.

    LRC's contrastive sampling (:func:`medcl_lite.regions.sample_regions`) with "a region" = a
    cell and "eligible" = matched.

    Args:
        valid: ``[B, L]`` bool, True for cells with a match (``match_locations(...) >= 0``).
        per_image: >= 1.
        generator: makes the draw reproducible.
    Returns:
        ``image_idx [N]`` and ``cell_idx [N]`` (long), image-major.
    """
    if not isinstance(valid, Tensor) or valid.dtype != torch.bool or valid.ndim != 2:
        shape = tuple(valid.shape) if isinstance(valid, Tensor) else type(valid).__name__
        raise ValueError(f"valid must be a [B, L] bool tensor, got {shape}")
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image must be an int >= 1, got {per_image!r}")
    counts = valid.long()
    return sample_regions(counts, counts, per_image, min_pixels=1, generator=generator)


def dense_positive_mask(image_idx: Tensor, key_idx: Tensor, queue_size: int = 0) -> Tensor:
    """``[N, N + Q]`` bool: query i is positive with sampled key j when both are the same key
    cell of the same image; queue columns are negatives.

    Without duplicates this is the identity (each query's positive is its own matched key).
    """
    mask = region_positive_mask(image_idx, key_idx)
    return F.pad(mask, (0, queue_size), value=False)


# --------------------------------------------------------------------------- loss
def _check_loss_inputs(
    q_map: Tensor,
    k_map: Tensor,
    pix1: Tensor,
    pix2: Tensor,
    per_image: int,
    temperature: float,
    queue: Tensor | None,
) -> None:
    if q_map.ndim != 4 or q_map.shape != k_map.shape:
        raise ValueError(
            f"q_map and k_map must both be [B, D, h, w], got {tuple(q_map.shape)} and "
            f"{tuple(k_map.shape)}"
        )
    for name, pixels in (("pix1", pix1), ("pix2", pix2)):
        _check_pixel_map(name, pixels, ndim=3)
        if pixels.shape[0] != q_map.shape[0]:
            raise ValueError(
                f"{name} must be [B, H', W'] with B = {q_map.shape[0]}, got {tuple(pixels.shape)}"
            )
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image must be an int >= 1, got {per_image!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if queue is not None and (queue.ndim != 2 or queue.shape[1] != q_map.shape[1]):
        raise ValueError(
            f"queue must be [Q, D] with D = {q_map.shape[1]}, got {tuple(queue.shape)}"
        )


def dense_loss(
    q_map: Tensor,
    k_map: Tensor,
    pix1: Tensor,
    pix2: Tensor,
    per_image: int = 64,
    temperature: float = 0.2,
    queue: Tensor | None = None,
    max_distance: float | None = None,
    generator: torch.Generator | None = None,
    *,
    image_width: int,
) -> DenseLoss:
    """IDEAL's dense contrastive loss between two views (our formulation, module docstring).

    Matches every query cell to its key cell (:func:`match_locations`), samples ``per_image``
    matched query cells per image (:func:`sample_locations`) and returns InfoNCE of their query
    embeddings against the matched keys, the other sampled keys of the batch and the queue
    (:func:`medcl_lite.losses.info_nce`, cosine similarity, mask from
    :func:`dense_positive_mask`).

    Args:
        q_map: ``[B, D, h, w]`` dense projection of view 1 (query encoder).
        k_map: ``[B, D, h, w]`` dense projection of view 2 (MoCo: the momentum encoder; detaching
            it is the caller's job).
        pix1, pix2: ``[B, H', W']`` original pixel per view pixel (``TwoViewDataset(...,
            correspondence=True)`` items ``pixels1`` / ``pixels2``); resized to ``(h, w)``.
        per_image: query cells sampled per image (64).
        temperature: τ (0.2).
        queue: optional ``[Q, D]`` negative keys, e.g. ``MoCoQueue.keys``.
        max_distance: match radius in original pixels (default ``0.5 * image_width / w``).
        generator: makes the sampling reproducible.
        image_width: W of the original slices (required: the views' width may differ).
    Returns:
        :class:`DenseLoss` ``(loss, n_pairs, keys, pairs)``; with no matched cell the loss is
        ``(q_map.sum() + k_map.sum()) * 0``, zero but in the graph.
    """
    _check_loss_inputs(q_map, k_map, pix1, pix2, per_image, temperature, queue)
    h, w = q_map.shape[-2:]
    cells1 = feature_pixels(pix1.to(q_map.device), (h, w))
    cells2 = feature_pixels(pix2.to(q_map.device), (h, w))
    match = match_locations(cells1, cells2, image_width, max_distance)  # [B, h * w]
    image_idx, query_idx = sample_locations(match >= 0, per_image, generator)
    key_idx = match[image_idx, query_idx]
    pairs = torch.stack([image_idx, query_idx, key_idx], dim=1)
    n = int(image_idx.numel())
    if n == 0:
        empty = q_map.new_zeros(0, q_map.shape[1], dtype=torch.float32)
        return DenseLoss((q_map.sum() + k_map.sum()) * 0, 0, empty, pairs)
    queries = q_map.flatten(2)[image_idx, :, query_idx]  # [N, D]
    keys = k_map.flatten(2)[image_idx, :, key_idx]  # [N, D]
    all_keys = keys.float()
    if queue is not None:
        all_keys = torch.cat([all_keys, queue.to(all_keys.device, torch.float32)])
    pos_mask = dense_positive_mask(image_idx, key_idx, all_keys.shape[0] - n)
    loss = info_nce(queries, all_keys, pos_mask, temperature)
    return DenseLoss(loss, n, F.normalize(keys.detach().float(), dim=1), pairs)
