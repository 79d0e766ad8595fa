"""Fast spatial augmentation with per-sample parameters: mirror, elastic, rotation, scale, crop.

PCL (docs/methods.md, "PCL") augments every view with mirroring, an elastic deformation, rotation
and scaling (batchgenerators' ``SpatialTransform``). Done the batchgenerators way (a full-resolution
Gaussian-filtered noise field and a cubic-spline resampling per image) this is the slowest part of a
CPU training loop; ``torchvision.transforms.v2.ElasticTransform`` is slower still, and batched it
draws one parameter set for the whole batch, which is wrong for contrastive views.

Here all of it is one ``torch.nn.functional.grid_sample`` call over a batch:

1. :func:`random_spatial_params` draws per-sample parameters (tensors) from a ``torch.Generator``.
2. :func:`sampling_grid` turns them into a ``[N, H', W', 2]`` grid: the elastic displacement is
   Gaussian-filtered noise made at a coarse resolution (every ``elastic_step`` pixels) and
   upsampled bilinearly, then rotation, scale, mirror and crop act on the displaced coordinates.
3. :func:`warp` resamples images (bilinear or bicubic) and masks / region maps (nearest, label ids
   stay exact) with that grid.

:class:`SpatialAugment` wraps the three, per sample (``[C, H, W]``, in a Dataset on CPU) or batched
(``[N, C, H, W]``, e.g. on a GPU); every sample gets its own parameters either way.

Elastic semantics (as batchgenerators 0.25.5, ``augmentations/utils.py``
``elastic_deform_coordinates``): the displacement of each axis, in output pixels, is
``alpha * gaussian_filter(U(-1, 1) noise, sigma)`` with zero padding. Blurred white noise of
variance 1/3 has a standard deviation of about ``1 / (2 sqrt(3 pi) sigma)``, so the typical
displacement is ``alpha / (6.14 sigma)`` pixels (PCL's alpha 100-350, sigma 14-17: about 1-4 px)
with a correlation length of ``sigma`` pixels. We draw the noise on a grid ``s = elastic_step``
times coarser, filter it with ``sigma / s`` and multiply by ``alpha / s`` (a filtered noise field's
standard deviation scales as 1 / sigma): the same field statistics while ``sigma / s >= ~2`` (the
default ``s`` keeps ``sigma / s >= 2``), at ``1 / s**2`` of the cost. Displacements are added in
output pixel coordinates before rotation and scaling, as batchgenerators does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor

#: Named settings of :class:`SpatialAugment` (keyword arguments of :func:`random_spatial_params`).
SPATIAL_PRESETS: dict[str, dict[str, Any]] = {
    # PCL (docs/methods.md, "PCL: hyper-parameters": mirror, elastic, rotation, scale 0.7-1.3
    # with p = 0.67). The numbers are those of the public code, dewenzeng/positional_cl
    # dataset/acdc.py `prepare_contrast`: MirrorTransform((0, 1)) (each axis flipped with
    # p = 0.5), then with p = 0.67 (RndTransform) a batchgenerators SpatialTransform with elastic
    # alpha U(100, 350), sigma U(14, 17) (pixels, at 352 x 352; see rescale_elastic for other
    # sizes), rotation U(0, 2 pi), scale 0.7-1.3, zero padding, centre crop; otherwise a random
    # crop that is a no-op at the patch size.
    # Deviations (our choice): bilinear instead of cubic-spline resampling (mode="bicubic" is
    # closer); scale is drawn uniformly as a zoom factor (> 1 zooms in) where batchgenerators
    # draws its coordinate factor from U(0.7, 1) or U(1, 1.3) with p = 0.5 each (> 1 zooms out).
    "pcl": {
        "rotation_deg": 180.0,
        "scale": (0.7, 1.3),
        "elastic_alpha": (100.0, 350.0),
        "elastic_sigma": (14.0, 17.0),
        "p_spatial": 0.67,
        "p_rotation": 1.0,
        "p_scale": 1.0,
        "p_elastic": 1.0,
        "mirror_axes": (0, 1),
        "p_mirror": 0.5,
        "random_crop": False,
    },
}

_MODES = ("bilinear", "bicubic", "nearest")


# --------------------------------------------------------------------------- validation helpers
def _check_probability(name: str, p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(name: str, value: Any, low: float, strict: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (lo > low if strict else lo >= low) or lo > hi:
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must satisfy low {bound} {low} and low <= high, got {value!r}")
    return lo, hi


def _check_size(name: str, size: Any) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return height, width


# --------------------------------------------------------------------------- parameters
def random_spatial_params(
    n: int,
    generator: torch.Generator | None = None,
    *,
    rotation_deg: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    p_scale: float = 1.0,
    p_rotation: float = 1.0,
    mirror_axes: tuple[int, ...] = (),
    p_mirror: float = 0.5,
    elastic_alpha: tuple[float, float] = (0.0, 0.0),
    elastic_sigma: tuple[float, float] = (10.0, 13.0),
    p_elastic: float = 1.0,
    p_spatial: float = 1.0,
    random_crop: bool = False,
) -> dict[str, Tensor]:
    """Draw ``n`` independent parameter sets (CPU tensors) from ``generator``.

    With probability ``p_spatial`` a sample gets the spatial block (as batchgenerators'
    ``RndTransform(SpatialTransform)``), inside which elastic deformation, rotation and scaling
    are each applied with ``p_elastic``, ``p_rotation``, ``p_scale``. Mirroring is independent:
    each array axis in ``mirror_axes`` (0 = rows, a vertical flip; 1 = columns, a horizontal flip)
    is flipped with ``p_mirror``. ``generator=None`` uses torch's global generator (seeded by
    ``torch.manual_seed`` and per DataLoader worker).

    Args:
        n: number of samples.
        rotation_deg: angle drawn from ``U(-rotation_deg, rotation_deg)`` degrees (180 = any angle).
        scale: zoom factor drawn from ``U(*scale)``; > 1 zooms in.
        elastic_alpha, elastic_sigma: elastic magnitude and smoothness ranges in pixels, with
            batchgenerators' meaning (module docstring); ``alpha = (0, 0)`` turns it off.
        random_crop: place the output window uniformly within the input (else centred); only
            matters when the input is larger than the output.

    Returns:
        ``angle [n]`` radians, ``zoom [n]``, ``flip [n, 2]`` (+-1 for x, y), ``crop [n, 2]`` in
        [-1, 1] (x, y; fraction of the free margin), ``alpha [n]`` (0 = no elastic), ``sigma [n]``
        (float32) and ``seed [n]`` (int64, the elastic noise of each sample).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (number of samples), got {n!r}")
    if not 0.0 <= float(rotation_deg) <= 180.0:
        raise ValueError(f"rotation_deg must be in [0, 180], got {rotation_deg!r}")
    scale = _check_range("scale", scale, 0.0, strict=True)
    alpha = _check_range("elastic_alpha", elastic_alpha, 0.0)
    sigma = _check_range("elastic_sigma", elastic_sigma, 0.0, strict=True)
    probs = {
        name: _check_probability(name, p)
        for name, p in (
            ("p_spatial", p_spatial),
            ("p_elastic", p_elastic),
            ("p_rotation", p_rotation),
            ("p_scale", p_scale),
            ("p_mirror", p_mirror),
        )
    }
    axes = tuple(mirror_axes)
    if not set(axes) <= {0, 1}:
        raise ValueError(f"mirror_axes must be a subset of (0, 1) (rows, columns), got {axes!r}")

    u = torch.rand(n, 12, generator=generator, dtype=torch.float64)
    seed = torch.randint(0, 2**62, (n,), generator=generator, dtype=torch.int64)
    spatial = u[:, 0] < probs["p_spatial"]
    elastic = spatial & (u[:, 1] < probs["p_elastic"]) & bool(alpha[1] > 0)
    rotate = spatial & (u[:, 2] < probs["p_rotation"])
    zoom = spatial & (u[:, 3] < probs["p_scale"])
    flip_x = (u[:, 4] < probs["p_mirror"]) & (1 in axes)
    flip_y = (u[:, 5] < probs["p_mirror"]) & (0 in axes)

    def lerp(bounds: tuple[float, float], v: Tensor) -> Tensor:
        return bounds[0] + (bounds[1] - bounds[0]) * v

    angle = torch.where(rotate, math.radians(rotation_deg) * (2 * u[:, 6] - 1), 0.0)
    crop = (2 * u[:, 10:12] - 1) if random_crop else torch.zeros(n, 2, dtype=torch.float64)
    params = {
        "angle": angle,
        "zoom": torch.where(zoom, lerp(scale, u[:, 7]), 1.0),
        "flip": 1.0 - 2.0 * torch.stack([flip_x, flip_y], dim=1).double(),
        "crop": crop,
        "alpha": torch.where(elastic, lerp(alpha, u[:, 8]), 0.0),
        "sigma": lerp(sigma, u[:, 9]),
    }
    return {**{k: v.float() for k, v in params.items()}, "seed": seed}


def rescale_elastic(
    alpha: tuple[float, float], sigma: tuple[float, float], factor: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Elastic ranges for images ``factor`` times the size the ranges were set for.

    The displacement (about ``alpha / (6.14 sigma)`` px) and the smoothness (``sigma`` px) both
    scale with ``factor``, so ``sigma *= factor`` and ``alpha *= factor**2``; e.g. PCL's 352 x 352
    values at 128 x 128: ``rescale_elastic((100, 350), (14, 17), 128 / 352)``.
    """
    if not float(factor) > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    a = _check_range("alpha", alpha, 0.0)
    s = _check_range("sigma", sigma, 0.0, strict=True)
    f = float(factor)
    return (a[0] * f * f, a[1] * f * f), (s[0] * f, s[1] * f)


# --------------------------------------------------------------------------- grid
def default_elastic_step(sigma_low: float) -> int:
    """Coarse-grid spacing (pixels) for the elastic noise: ``floor(sigma_low / 2)``, at least 1,
    so that the filter on the coarse grid stays >= 2 coarse pixels wide."""
    return max(1, int(float(sigma_low) // 2))


def _blur_matrix(sigma: Tensor, length: int) -> Tensor:
    """``[N, L, L]`` matrices of a 1-D Gaussian filter (``sigma [N]`` in samples) with zero
    padding, truncated at 4 sigma and normalised as ``scipy.ndimage.gaussian_filter`` does. A
    matrix product beats a grouped convolution with a different kernel per sample on CPU."""
    idx = torch.arange(length, dtype=torch.float32, device=sigma.device)
    dist = (idx[:, None] - idx[None, :]).abs()
    radius = torch.floor(4 * sigma + 0.5).clamp(min=1)[:, None, None]
    weights = torch.exp(-(dist**2) / (2 * sigma[:, None, None] ** 2)) * (dist <= radius)
    taps = torch.arange(-int(radius.max()), int(radius.max()) + 1, device=sigma.device).abs()
    norm = (torch.exp(-(taps**2) / (2 * sigma[:, None] ** 2)) * (taps <= radius[:, 0])).sum(1)
    return weights / norm[:, None, None]


def elastic_displacement(
    alpha: Tensor,
    sigma: Tensor,
    seed: Tensor,
    out_size: tuple[int, int],
    step: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """Elastic displacement ``[N, 2, H', W']`` (x, y) in output pixels (module docstring).

    ``alpha``, ``sigma``: ``[N]`` pixels; ``seed``: ``[N]`` int64. The coarse noise
    (``[N, 2, ceil(H'/step), ceil(W'/step)]``) comes from a CPU generator seeded per sample, so a
    sample's field does not depend on its batch or on the device. Memory: ``8 N H' W'`` bytes.
    """
    height, width = out_size
    n = alpha.numel()
    hc, wc = math.ceil(height / step), math.ceil(width / step)
    gen = torch.Generator()
    noise = torch.empty(n, 2, hc, wc)
    for i, s in enumerate(seed.tolist()):
        gen.manual_seed(s)
        torch.rand(2, hc, wc, generator=gen, out=noise[i])
    noise = (noise * 2 - 1).to(device)
    sigma_c = sigma.to(noise.device, torch.float32) / step
    blur_h, blur_w = (
        _blur_matrix(sigma_c, hc),
        _blur_matrix(sigma_c, wc),
    )  # [N, hc, hc], [N, wc, wc]
    x = blur_h[:, None] @ noise @ blur_w[:, None].transpose(-1, -2)  # [N, 2, hc, wc]
    x = x * (alpha.to(x.device, torch.float32) / step).view(n, 1, 1, 1)
    x = nnf.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x


def sampling_grid(
    params: dict[str, Tensor],
    size: int | tuple[int, int],
    out_size: int | tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    *,
    elastic_step: int | None = None,
) -> Tensor:
    """``grid_sample`` grid ``[N, H', W', 2]`` (float32, ``align_corners=False``) for ``params``.

    An output pixel ``p`` (relative to the output centre, in pixels) samples the input at
    ``centre + shift + F R(angle) (p + d(p)) / zoom`` with ``d`` the elastic displacement, ``R``
    the rotation, ``F`` the mirror and ``shift = crop * max(0, (size - out_size) / 2)``.
    ``size`` is the input ``(H, W)``, ``out_size`` the output (default: ``size``);
    ``elastic_step`` defaults to :func:`default_elastic_step` of the batch's smallest sigma (pass
    a fixed value, as :class:`SpatialAugment` does, for fields independent of the batch).
    Memory: ``8 N H' W'`` bytes (about three times that with elastic deformation).
    """
    height, width = _check_size("size", size)
    out_h, out_w = _check_size("out_size", size if out_size is None else out_size)
    angle = params["angle"]
    device = angle.device if device is None else torch.device(device)
    n = angle.numel()
    f32 = {"device": device, "dtype": torch.float32}
    # output pixel centres relative to the output centre, broadcast as [N, H', W']
    px = (torch.arange(out_w, **f32) - (out_w - 1) / 2).view(1, 1, out_w)
    py = (torch.arange(out_h, **f32) - (out_h - 1) / 2).view(1, out_h, 1)
    alpha = params["alpha"]
    elastic = (alpha > 0).nonzero().flatten().tolist()
    if elastic:
        sigma = params["sigma"][elastic]
        step = default_elastic_step(float(sigma.min())) if elastic_step is None else elastic_step
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"elastic_step must be a positive int (pixels), got {step!r}")
        field = elastic_displacement(
            alpha[elastic], sigma, params["seed"][elastic], (out_h, out_w), step, device
        )
        if len(elastic) < n:
            field = torch.zeros(n, 2, out_h, out_w, **f32).index_copy_(
                0, torch.tensor(elastic, device=device), field
            )
        px, py = px + field[:, 0], py + field[:, 1]
    zoom = params["zoom"].to(**f32)
    cos, sin = torch.cos(angle.to(**f32)) / zoom, torch.sin(angle.to(**f32)) / zoom
    flip = params["flip"].to(**f32)  # [N, 2] (x, y)
    # x_in = F R p / zoom + shift, in normalised input coordinates (align_corners=False)
    fx, fy = flip[:, 0] * 2.0 / width, flip[:, 1] * 2.0 / height
    slack_x, slack_y = max(0.0, (width - out_w) / 2), max(0.0, (height - out_h) / 2)
    crop = params["crop"].to(**f32)
    off_x, off_y = crop[:, 0] * slack_x * 2.0 / width, crop[:, 1] * slack_y * 2.0 / height

    def per_sample(v: Tensor) -> Tensor:
        return v.view(n, 1, 1)

    grid_x = per_sample(fx * cos) * px - per_sample(fx * sin) * py + per_sample(off_x)
    grid_y = per_sample(fy * sin) * px + per_sample(fy * cos) * py + per_sample(off_y)
    return torch.stack(torch.broadcast_tensors(grid_x, grid_y), dim=-1)


def warp(images: Tensor, grid: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample ``images [N, C, H, W]`` (or masks ``[N, H, W]``) at ``grid [N, H', W', 2]``.

    Outside the input is 0 (PCL: constant 0 for images and labels). Integer inputs (masks,
    region maps) need ``mode="nearest"`` and come back with their dtype and only their own values
    (exact up to 2**24). Returns ``[N, C, H', W']`` (or ``[N, H', W']``).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be [N, C, H, W] or [N, H, W], got {tuple(images.shape)}")
    if grid.ndim != 4 or grid.shape[0] != images.shape[0] or grid.shape[-1] != 2:
        raise ValueError(f"grid must be [N={images.shape[0]}, H', W', 2], got {tuple(grid.shape)}")
    is_int = not images.is_floating_point()
    if is_int and mode != "nearest":
        raise ValueError(f"integer inputs (masks) need mode='nearest', got mode={mode!r}")
    x = images[:, None] if images.ndim == 3 else images
    x = x.float() if is_int else x
    out = nnf.grid_sample(x, grid.to(x), mode=mode, padding_mode="zeros", align_corners=False)
    out = out[:, 0] if images.ndim == 3 else out
    return out.round().to(images.dtype) if is_int else out


# --------------------------------------------------------------------------- module
class SpatialAugment(torch.nn.Module):
    """Random mirror + elastic + rotation + scale + crop, per-sample parameters, one resampling.

    ``aug(image)``: ``[C, H, W] -> [C, H', W']`` (one sample, e.g. in a Dataset on CPU) or
    ``[N, C, H, W] -> [N, C, H', W']`` (a batch on any device; each sample its own parameters).
    ``aug(image, mask)`` warps a mask or region map (``[H, W]`` or ``[N, H, W]``, integer) with
    the same grid (nearest) and returns both. Pass ``params`` (from :meth:`draw`) to replay.

    Args:
        out_size: output ``H'`` (int) or ``(H', W')``; ``None`` keeps the input size.
        mode: image interpolation, ``"bilinear"`` (default) or ``"bicubic"`` (closer to PCL's
            cubic splines; may overshoot the input range).
        generator: a CPU ``torch.Generator``; ``None`` uses torch's global generator.
        **settings: keyword arguments of :func:`random_spatial_params`.
    """

    def __init__(
        self,
        out_size: int | tuple[int, int] | None = None,
        *,
        mode: str = "bilinear",
        generator: torch.Generator | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.out_size = None if out_size is None else _check_size("out_size", out_size)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.generator = generator
        random_spatial_params(0, **settings)  # validate now, naming the parameter
        self.settings = settings
        sigma = settings.get("elastic_sigma", (10.0, 13.0))
        self.elastic_step = default_elastic_step(float(sigma[0]))

    @classmethod
    def from_preset(
        cls, preset: str, out_size: int | tuple[int, int] | None = None, **overrides: Any
    ) -> SpatialAugment:
        """``SpatialAugment`` with :data:`SPATIAL_PRESETS` ``[preset]``; keywords override it."""
        if preset not in SPATIAL_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {sorted(SPATIAL_PRESETS)}")
        own = {"mode", "generator"}
        unknown = sorted(set(overrides) - set(SPATIAL_PRESETS[preset]) - own)
        if unknown:
            raise ValueError(
                f"unknown override(s) {unknown} for preset {preset!r}; "
                f"valid: {list(SPATIAL_PRESETS[preset]) + sorted(own)}"
            )
        return cls(out_size, **{**SPATIAL_PRESETS[preset], **overrides})

    def draw(self, n: int) -> dict[str, Tensor]:
        """``n`` parameter sets from this module's settings and generator."""
        return random_spatial_params(n, self.generator, **self.settings)

    def forward(
        self, image: Tensor, mask: Tensor | None = None, params: dict[str, Tensor] | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        if image.ndim not in (3, 4):
            raise ValueError(f"image must be [C, H, W] or [N, C, H, W], got {tuple(image.shape)}")
        single = image.ndim == 3
        batch = image[None] if single else image
        n, _, height, width = batch.shape
        expected = (height, width) if single else (n, height, width)
        if mask is not None and not (
            mask.ndim in (len(expected), len(expected) + 1)  # optional channel axis of K maps
            and tuple(mask.shape[-2:]) == (height, width)
            and (single or mask.shape[0] == n)
        ):
            raise ValueError(
                f"mask must be {expected} (or with a channel axis of several maps before H, W) for"
                f" this image, got {tuple(mask.shape)}"
            )
        params = self.draw(n) if params is None else params
        if params["angle"].numel() != n:
            raise ValueError(f"params hold {params['angle'].numel()} samples, the image {n}")
        out_size = (height, width) if self.out_size is None else self.out_size
        grid = sampling_grid(
            params, (height, width), out_size, batch.device, elastic_step=self.elastic_step
        )
        out = warp(batch, grid, self.mode)
        out = out[0] if single else out
        if mask is None:
            return out
        out_mask = warp(mask[None] if single else mask, grid, "nearest")  # [N, (K,) H', W']
        return out, (out_mask[0] if single else out_mask)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, mode={self.mode!r}, settings={self.settings}"
