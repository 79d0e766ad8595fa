"""Augmentation with ``torchvision.transforms.v2``: contrastive views and joint image/mask transforms.

Images are ``[1, H, W]`` float tensors in [0, 1]; masks are ``[H, W]`` integer label maps.

* :func:`view_transform` makes one augmented *view* per call (pretraining, two calls per image).
  Its settings come from :data:`PRESETS`, one per paper plus our quick-start choice.
* :func:`joint_transform` augments an image and its mask together (fine-tuning): geometry on both
  (bilinear for the image, nearest for the mask), intensity on the image only.

Speed matters (the training loop's overhead target is <= 10 %), so crop, rotation, shift, zoom and
flips are one resampling (:class:`RandomViewGeometry`, one ``grid_sample``) instead of two or three
torchvision transforms, and the blur is separable. Randomness comes from torch's generator, so
``torch.manual_seed`` and the DataLoader's per-worker seeds make runs repeat.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

#: Named view-augmentation settings for :func:`view_transform`; every key can be overridden.
#:
#: Keys: ``crop_scale`` area fraction of the random resized crop; ``crop_ratio`` its aspect ratio
#: range; ``degrees`` maximum rotation; ``translate`` maximum shift as a fraction of the side;
#: ``scale`` zoom range (> 1 zooms in); ``affine_p`` probability of rotation/shift/zoom;
#: ``hflip``/``vflip`` flip probabilities; ``brightness``/``contrast`` ColorJitter factors (0 = off);
#: ``gamma`` range of the gamma exponent (None = off); ``blur_sigma``/``blur_p`` Gaussian blur
#: (pixels); ``noise_sigma``/``noise_p`` additive Gaussian noise (intensity units);
#: ``sharpen_amount``/``sharpen_p`` unsharp masking, ``x + a (x - blur(x))`` (a detector's edge enhancement).
PRESETS: dict[str, dict[str, Any]] = {
    # CL-TCI (docs/methods.md, "CL-TCI"; public code dewenzeng/CL-TCI, dataset/bch.py
    # `prepare_for_contrast` and dataset/augmentation.py): brightness, contrast (saturation and hue
    # are no-ops on grey images) uniform in 1 +- 0.4, gamma uniform in [1, 1.4], translate +-10 %,
    # rotate +-10 deg, RandomSizedCrop scale 0.95-1 with ratio 3/4-4/3. No flips, no noise, no blur.
    # Deviations: their rotation resamples nearest-neighbour and their shift pads by reflection;
    # ours is bilinear with zero padding, in one resampling.
    "cl_tci": {
        "crop_scale": (0.95, 1.0),
        "crop_ratio": (3 / 4, 4 / 3),
        "degrees": 10.0,
        "translate": 0.1,
        "scale": (1.0, 1.0),
        "affine_p": 1.0,
        "hflip": 0.0,
        "vflip": 0.0,
        "brightness": 0.4,
        "contrast": 0.4,
        "gamma": (1.0, 1.4),
        "blur_sigma": None,
        "blur_p": 0.0,
        "noise_sigma": None,
        "noise_p": 0.0,
        "sharpen_amount": None,
        "sharpen_p": 0.0,
    },
    # PCL (docs/methods.md, "PCL"; public code dewenzeng/positional_cl, dataset/acdc.py
    # `prepare_contrast`): MirrorTransform on both axes (each flip p = 0.5), then with p = 0.67 a
    # batchgenerators SpatialTransform: rotation uniform in [0, 2 pi) (our +-180 deg), scale
    # 0.7-1.3, elastic deformation (alpha 100-350 px, sigma 14-17 px at 352 x 352), otherwise a
    # random crop (a no-op once images are at the patch size). No intensity augmentation.
    # (batchgenerators' scale > 1 zooms out, ours zooms in: over 0.7-1.3 nearly the same.)
    # The elastic part is NOT in this preset: augment="pcl_elastic" (ELASTIC_PRESET) adds it
    # through medcl_lite.data.spatial. v2.ElasticTransform costs ~4 ms per 64 x 64 view and
    # ~15 ms per 128 x 128 view on one CPU core, 10-30x the rest of this pipeline.
    "pcl": {
        "crop_scale": (1.0, 1.0),
        "crop_ratio": (1.0, 1.0),
        "degrees": 180.0,
        "translate": 0.0,
        "scale": (0.7, 1.3),
        "affine_p": 0.67,
        "hflip": 0.5,
        "vflip": 0.5,
        "brightness": 0.0,
        "contrast": 0.0,
        "gamma": None,
        "blur_sigma": None,
        "blur_p": 0.0,
        "noise_sigma": None,
        "noise_p": 0.0,
        "sharpen_amount": None,
        "sharpen_p": 0.0,
    },
    # Quick start (our choice, notebooks/00_quickstart): the small phantoms need stronger crops and
    # intensity changes than the papers' 256-512 px images, or global contrastive learning tells
    # images apart by exposure and noise level instead of anatomy. Crop scale 0.4-1, rotation
    # +-15 deg, brightness/contrast 0.4, gamma 0.7-1.5, Gaussian blur and noise half of the time.
    # NO horizontal flip by default: the right and left lungs are distinct labels, and features
    # made invariant to mirroring cannot tell them apart. Turn it on with `hflip=0.5` for
    # data whose labels are symmetric.
    "quickstart": {
        "crop_scale": (0.4, 1.0),
        "crop_ratio": (3 / 4, 4 / 3),
        "degrees": 15.0,
        "translate": 0.0,
        "scale": (1.0, 1.0),
        "affine_p": 1.0,
        "hflip": 0.0,
        "vflip": 0.0,
        "brightness": 0.4,
        "contrast": 0.4,
        "gamma": (0.7, 1.5),
        "blur_sigma": (0.1, 1.0),
        "blur_p": 0.5,
        "noise_sigma": (0.0, 0.05),
        "noise_p": 0.5,
        "sharpen_amount": None,
        "sharpen_p": 0.0,
    },
}
# The quickstart's views without the crop (the whole image, rotation and intensity changes kept):
# the "augmentation mismatch" ablation of medcl_lite.diagnosis. Fine-tuning never crops, so an
# encoder made invariant to crops learns something segmentation does not ask of it.
PRESETS["quickstart_no_crop"] = {**PRESETS["quickstart"], "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}
# The quickstart's views that also vary what tells the phantom's scanners apart: detector noise up to
# 0.08 (site B's reaches ~0.07) most of the time, blur up to 2 px, and a detector's edge enhancement
# (unsharp masking). The "scanner views" ablation of medcl_lite.diagnosis: does an encoder whose
# views cover the scanners of its pool read an unseen site's images better?
PRESETS["quickstart_scanners"] = {
    **PRESETS["quickstart"],
    "noise_sigma": (0.0, 0.08),
    "noise_p": 0.8,
    "blur_sigma": (0.1, 2.0),
    "sharpen_amount": (0.0, 1.0),
    "sharpen_p": 0.5,
}

#: Settings of :func:`joint_transform` (fine-tuning). "light" is our choice: small geometry
#: (rotation +-10 deg, shift 5 %, zoom 0.9-1.1) and mild intensity changes that keep the labels true.
JOINT_STRENGTHS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "light": {
        "degrees": 10.0,
        "translate": 0.05,
        "scale": (0.9, 1.1),
        "brightness": 0.2,
        "contrast": 0.2,
        "gamma": (0.8, 1.25),
    },
}


# --------------------------------------------------------------------------- validation helpers
def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (output side in pixels), got {size!r}")
    return size


def _check_probability(name: str, p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(
    name: str, value: tuple[float, float], low: float = -math.inf, high: float = math.inf
) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi


def _draws(n: int) -> list[float]:
    """``n`` draws from U(0, 1) with torch's generator (seeded by ``torch.manual_seed`` and by the
    DataLoader in each worker), in one call: each call costs ~5 us, more than the arithmetic."""
    return torch.rand(n, dtype=torch.float64).tolist()


def _lerp(bounds: tuple[float, float], u: float) -> float:
    """Map ``u`` in [0, 1) to ``U(*bounds)``."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _is_plain_tensor(inpt: Any) -> bool:
    return type(inpt) is torch.Tensor


# --------------------------------------------------------------------------- geometry
def _prescaled_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Input size after an antialiased pre-shrink: images over 2x the output are first shrunk so
    that their shorter side is ``2 * size`` (bilinear sampling would alias otherwise)."""
    factor = 2 * size / min(height, width)
    if factor >= 1.0:
        return height, width
    return max(1, round(height * factor)), max(1, round(width * factor))


def _sample_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[float, float, float, float]:
    """RandomResizedCrop's box (area fraction in ``scale``, log-uniform aspect in ``ratio``,
    10 tries, then the whole image) in normalised coordinates: ``(cx, cy, half_w, half_h)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for u_scale, u_ratio, u_left, u_top in torch.rand(10, 4, dtype=torch.float64).tolist():
        target = area * _lerp(scale, u_scale)
        aspect = math.exp(_lerp(log_ratio, u_ratio))
        box_w, box_h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if box_w <= width and box_h <= height:
            left = u_left * (width - box_w)
            top = u_top * (height - box_h)
            cx = 2 * (left + box_w / 2) / width - 1
            cy = 2 * (top + box_h / 2) / height - 1
            return cx, cy, box_w / width, box_h / height
    return 0.0, 0.0, 1.0, 1.0


def _view_theta(
    box: tuple[float, float, float, float],
    angle_deg: float,
    shift: tuple[float, float],
    zoom: float,
    flips: tuple[float, float],
) -> list[list[float]]:
    """``2 x 3`` matrix mapping output coordinates to input coordinates (as ``affine_grid``).

    Forward (input -> view): crop the box to ``[-1, 1]^2``, zoom by ``zoom``, rotate by
    ``angle_deg`` clockwise about the centre, shift by ``shift``, flip. Without crop and flips
    this is exactly ``torchvision.transforms.v2.functional.affine`` (bilinear; tested). The grid needs the inverse:
    ``x_in = c + D R(-a) (F u - t) / zoom`` with D the box half-sizes and F the flips.
    Plain floats: a handful of tiny tensor ops would cost more than the resampling itself.
    """
    cx, cy, half_w, half_h = box
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    fx, fy = flips
    tx, ty = shift
    return [
        [half_w * cos * fx, half_w * sin * fy, cx - half_w * (cos * tx + sin * ty)],
        [-half_h * sin * fx, half_h * cos * fy, cy - half_h * (-sin * tx + cos * ty)],
    ]


_IDENTITY_THETA = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def _base_grid(size: int) -> Tensor:
    """``[size * size, 3]`` output pixel centres ``(x, y, 1)`` in normalised coordinates
    (``align_corners=False``), the constant part of ``affine_grid``."""
    centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).reshape(-1, 3)


class RandomViewGeometry(v2.Transform):
    """Random resized crop + rotation, shift, zoom + flips in one resampling.

    ``[..., H, W] -> [..., size, size]``. Images (``tv_tensors.Image`` or a plain tensor) are
    sampled bilinearly, ``tv_tensors.Mask`` nearest-neighbour (labels stay in their set; the area
    outside the image becomes 0 = background). One call draws one set of parameters for all its
    inputs, so an image and its mask stay aligned.

    Args:
        size: output side in pixels.
        crop_scale: area fraction of the crop, as ``v2.RandomResizedCrop(scale=...)``.
        crop_ratio: aspect ratio range of the crop.
        degrees: rotation drawn from ``U(-degrees, degrees)``.
        translate: shift drawn from ``U(-translate, translate)`` times the side, per axis.
        scale: zoom drawn from ``U(*scale)``; > 1 zooms in.
        affine_p: probability that rotation, shift and zoom are applied at all.
        hflip, vflip: probabilities of a horizontal / vertical flip.
    """

    _transformed_types = (tv_tensors.Image, tv_tensors.Mask, _is_plain_tensor)

    def __init__(
        self,
        size: int,
        crop_scale: tuple[float, float] = (1.0, 1.0),
        crop_ratio: tuple[float, float] = (1.0, 1.0),
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        affine_p: float = 1.0,
        hflip: float = 0.0,
        vflip: float = 0.0,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.crop_scale = _check_range("crop_scale", crop_scale, 1e-6, 1.0)
        self.crop_ratio = _check_range("crop_ratio", crop_ratio, 1e-6)
        if not 0.0 <= float(degrees) <= 180.0:
            raise ValueError(f"degrees must be in [0, 180], got {degrees!r}")
        self.degrees = float(degrees)
        if not 0.0 <= float(translate) < 1.0:
            raise ValueError(f"translate must be a fraction in [0, 1), got {translate!r}")
        self.translate = float(translate)
        self.scale = _check_range("scale", scale, 1e-6)
        self.affine_p = _check_probability("affine_p", affine_p)
        self.hflip = _check_probability("hflip", hflip)
        self.vflip = _check_probability("vflip", vflip)
        self._base_grid: Tensor | None = None

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        prescaled = _prescaled_size(height, width, self.size)
        box = _sample_crop_box(*prescaled, self.crop_scale, self.crop_ratio)
        u_affine, u_angle, u_x, u_y, u_zoom, u_hflip, u_vflip = _draws(7)
        angle, shift, zoom = 0.0, (0.0, 0.0), 1.0
        if u_affine < self.affine_p:
            angle = self.degrees * (2 * u_angle - 1)
            shift = (2 * self.translate * (2 * u_x - 1), 2 * self.translate * (2 * u_y - 1))
            zoom = _lerp(self.scale, u_zoom)
        flips = (-1.0 if u_hflip < self.hflip else 1.0, -1.0 if u_vflip < self.vflip else 1.0)
        theta = _view_theta(box, angle, shift, zoom, flips)
        if prescaled == (height, width) == (self.size, self.size) and theta == _IDENTITY_THETA:
            return {"grid": None, "prescaled": prescaled}
        if self._base_grid is None:
            self._base_grid = _base_grid(self.size)
        grid = self._base_grid @ torch.tensor(theta).T
        return {"grid": grid.view(1, self.size, self.size, 2), "prescaled": prescaled}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["grid"] is None:
            return inpt.clone()
        is_mask = isinstance(inpt, tv_tensors.Mask)
        data = inpt.as_subclass(Tensor)
        height, width = data.shape[-2:]
        lead = data.shape[:-2]
        x = data.reshape(1, -1, height, width)
        x = x if x.is_floating_point() else x.float()
        if params["prescaled"] != (height, width):
            mode = "nearest-exact" if is_mask else "bilinear"
            x = nnf.interpolate(x, size=params["prescaled"], mode=mode, antialias=not is_mask)
        grid = params["grid"].to(x.device, x.dtype)
        mode = "nearest" if is_mask else "bilinear"
        out = nnf.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
        out = out.reshape(*lead, self.size, self.size)
        if is_mask or not data.is_floating_point():
            out = out.round().to(data.dtype)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


# --------------------------------------------------------------------------- intensity (images only)
class _ImageOnlyTransform(v2.Transform):
    """Base of intensity transforms: touches images (``tv_tensors.Image`` or a plain tensor),
    passes masks and everything else through unchanged."""

    _transformed_types = (tv_tensors.Image, _is_plain_tensor)


class RandomGamma(_ImageOnlyTransform):
    """``x -> x ** gamma`` with ``gamma ~ U(*gamma)``, with probability ``p`` (CL-TCI's
    AdjustGamma). Values in [0, 1] stay in [0, 1]."""

    def __init__(self, gamma: tuple[float, float] = (1.0, 1.4), p: float = 1.0) -> None:
        super().__init__()
        self.gamma = _check_range("gamma", gamma, 1e-6)
        self.p = _check_probability("p", p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u_apply, u_value = _draws(2)
        return {"gamma": _lerp(self.gamma, u_value) if u_apply < self.p else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["gamma"] is None:
            return inpt
        return self._call_kernel(F.adjust_gamma, inpt, gamma=params["gamma"])


class RandomGaussianNoise(_ImageOnlyTransform):
    """Add ``N(0, sigma^2)`` noise, ``sigma ~ U(*sigma)``, with probability ``p``; clipped to
    [0, 1]. (``v2.GaussianNoise`` has one fixed sigma and no probability.)"""

    def __init__(self, sigma: tuple[float, float] = (0.0, 0.05), p: float = 0.5) -> None:
        super().__init__()
        self.sigma = _check_range("noise_sigma", sigma, 0.0)
        self.p = _check_probability("noise_p", p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u_apply, u_value = _draws(2)
        return {"sigma": _lerp(self.sigma, u_value) if u_apply < self.p else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["sigma"] is None:
            return inpt
        return self._call_kernel(F.gaussian_noise, inpt, sigma=params["sigma"], clip=True)


class RandomGaussianBlur(_ImageOnlyTransform):
    """Separable Gaussian blur, ``sigma ~ U(*sigma)`` pixels, with probability ``p``.

    The kernel radius is ``ceil(2 * sigma_max)`` (5 taps for sigma <= 1). Two 1-D convolutions
    take ~1/3 of the time of ``v2.GaussianBlur``'s 2-D kernel (about 125 vs 400 us at 128 x 128
    on one core).
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 1.0), p: float = 0.5) -> None:
        super().__init__()
        self.sigma = _check_range("blur_sigma", sigma, 1e-3)
        self.p = _check_probability("blur_p", p)
        self.radius = max(1, math.ceil(2 * self.sigma[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u_apply, u_value = _draws(2)
        return {"sigma": _lerp(self.sigma, u_value) if u_apply < self.p else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["sigma"] is None:
            return inpt
        out = _separable_blur(inpt.as_subclass(Tensor), params["sigma"], self.radius)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _separable_blur(data: Tensor, sigma: float, radius: int) -> Tensor:
    """Gaussian blur of ``[..., H, W]`` by two 1-D convolutions (reflect padding); the radius is
    cut to the image (a 1-pixel side is returned as is)."""
    height, width = data.shape[-2:]
    radius = min(radius, height - 1, width - 1)
    if radius < 1:
        return data
    offsets = torch.arange(-radius, radius + 1, dtype=data.dtype, device=data.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = data.reshape(-1, 1, height, width)
    x = nnf.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = nnf.conv2d(x, kernel.view(1, 1, 1, -1))
    x = nnf.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.reshape(data.shape)


class RandomUnsharpMask(_ImageOnlyTransform):
    """Edge enhancement ``x + a (x - G_sigma * x)``, ``a ~ U(*amount)``, with probability ``p``;
    clipped to [0, 1]. Computed-radiography and some flat-panel vendors post-process this way
    (a low-frequency unsharp mask), so an encoder that should not tell detectors apart sees it in
    its views. ``sigma`` (pixels) is the width of the subtracted blur."""

    def __init__(self, amount: tuple[float, float] = (0.0, 1.0), p: float = 0.5, sigma: float = 2.0) -> None:
        super().__init__()
        self.amount = _check_range("sharpen_amount", amount, 0.0)
        self.p = _check_probability("sharpen_p", p)
        if not sigma > 0:
            raise ValueError(f"sharpen sigma must be > 0 pixels, got {sigma!r}")
        self.sigma, self.radius = float(sigma), max(1, math.ceil(2 * sigma))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u_apply, u_value = _draws(2)
        return {"amount": _lerp(self.amount, u_value) if u_apply < self.p else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["amount"] is None:
            return inpt
        data = inpt.as_subclass(Tensor)
        out = (data + params["amount"] * (data - _separable_blur(data, self.sigma, self.radius))).clamp(0.0, 1.0)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


# --------------------------------------------------------------------------- public builders
def _intensity_steps(
    brightness: float,
    contrast: float,
    gamma: tuple[float, float] | None,
    blur_sigma: tuple[float, float] | None = None,
    blur_p: float = 0.0,
    noise_sigma: tuple[float, float] | None = None,
    noise_p: float = 0.0,
    sharpen_amount: tuple[float, float] | None = None,
    sharpen_p: float = 0.0,
) -> list[v2.Transform]:
    for name, value in (("brightness", brightness), ("contrast", contrast)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be in [0, 1) (factor 1 +- {name}), got {value!r}")
    steps: list[v2.Transform] = []
    if brightness or contrast:
        steps.append(v2.ColorJitter(brightness=brightness or None, contrast=contrast or None))
    if gamma is not None:
        steps.append(RandomGamma(gamma))
    if blur_sigma is not None and blur_p > 0:
        steps.append(RandomGaussianBlur(blur_sigma, blur_p))
    if sharpen_amount is not None and sharpen_p > 0:
        steps.append(RandomUnsharpMask(sharpen_amount, sharpen_p))
    if noise_sigma is not None and noise_p > 0:
        steps.append(RandomGaussianNoise(noise_sigma, noise_p))
    return steps


#: The PCL view WITH its elastic deformation: medcl_lite.data.spatial's per-sample grid warp
#: (mirror, elastic, rotation, scale in one resampling; benchmarks/README.md has its speed).
ELASTIC_PRESET = "pcl_elastic"


def _pcl_elastic_view(size: int, **overrides: Any):
    """PCL's spatial augmentation at ``size``: the public code's elastic ranges (set for 352 x
    352) rescaled to ``size`` with :func:`~medcl_lite.data.spatial.rescale_elastic`."""
    from medcl_lite.data.spatial import SPATIAL_PRESETS, SpatialAugment, rescale_elastic

    _check_size(size)
    base = SPATIAL_PRESETS["pcl"]
    alpha, sigma = rescale_elastic(base["elastic_alpha"], base["elastic_sigma"], size / 352)
    return SpatialAugment.from_preset(
        "pcl", size, **{"elastic_alpha": alpha, "elastic_sigma": sigma, **overrides}
    )


def view_transform(size: int, preset: str = "quickstart", **overrides: Any) -> v2.Transform:
    """One augmented contrastive view per call: ``[1, H, W]`` float in [0, 1] -> ``[1, size, size]``.

    Every call draws fresh parameters, so two calls on one image give the two views of SimCLR /
    MoCo (notebooks/00_quickstart). ``preset`` names an entry of :data:`PRESETS`, or
    ``"pcl_elastic"`` (PCL's view with elastic deformation, :data:`ELASTIC_PRESET`); keyword
    arguments override its values, e.g. ``view_transform(64, "quickstart", hflip=0.5)``.
    """
    if preset == ELASTIC_PRESET:
        return _pcl_elastic_view(size, **overrides)
    if preset not in PRESETS:
        valid = sorted([*PRESETS, ELASTIC_PRESET])
        raise ValueError(f"unknown preset {preset!r}; valid presets: {valid}")
    settings = PRESETS[preset]
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(
            f"unknown override(s) {unknown} for preset {preset!r}; valid: {list(settings)}"
        )
    s = {**settings, **overrides}
    geometry = RandomViewGeometry(
        size,
        crop_scale=s["crop_scale"],
        crop_ratio=s["crop_ratio"],
        degrees=s["degrees"],
        translate=s["translate"],
        scale=s["scale"],
        affine_p=s["affine_p"],
        hflip=s["hflip"],
        vflip=s["vflip"],
    )
    intensity = _intensity_steps(
        s["brightness"],
        s["contrast"],
        s["gamma"],
        s["blur_sigma"],
        s["blur_p"],
        s["noise_sigma"],
        s["noise_p"],
        s["sharpen_amount"],
        s["sharpen_p"],
    )
    return v2.Compose([geometry, *intensity])


class JointTransform:
    """``(image [1, H, W] float, mask [H, W] int) -> (image [1, size, size], mask [size, size])``.

    Geometry acts on both (bilinear image, nearest mask), intensity on the image only; returns
    plain tensors with the input dtypes. Build it with :func:`joint_transform`.
    """

    def __init__(self, size: int, transform: v2.Transform) -> None:
        self.size = size
        self.transform = transform

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"image must be [1, H, W], got {tuple(image.shape)}")
        if mask.shape != image.shape[1:]:
            raise ValueError(
                f"mask must be [H, W] = {tuple(image.shape[1:])}, got {tuple(mask.shape)}"
            )
        if mask.is_floating_point():
            raise ValueError(f"mask must hold integer labels, got dtype {mask.dtype}")
        out_image, out_mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return out_image.as_subclass(Tensor), out_mask.as_subclass(Tensor)

    def __repr__(self) -> str:
        return f"JointTransform(size={self.size}, transform={self.transform!r})"


def joint_transform(size: int, strength: str = "light") -> JointTransform:
    """Joint image/mask augmentation for fine-tuning (settings in :data:`JOINT_STRENGTHS`).

    ``strength="none"`` only resizes to ``size`` when needed (antialiased image, nearest mask);
    ``"light"`` adds rotation +-10 deg, shift 5 %, zoom 0.9-1.1, brightness/contrast/gamma.
    """
    _check_size(size)
    if strength not in JOINT_STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; valid: {list(JOINT_STRENGTHS)}")
    settings = JOINT_STRENGTHS[strength]
    if settings is None:
        return JointTransform(size, v2.Resize((size, size), antialias=True))
    geometry = RandomViewGeometry(
        size, degrees=settings["degrees"], translate=settings["translate"], scale=settings["scale"]
    )
    intensity = _intensity_steps(settings["brightness"], settings["contrast"], settings["gamma"])
    return JointTransform(size, v2.Compose([geometry, *intensity]))
