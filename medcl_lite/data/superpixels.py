"""Felzenszwalb superpixels of every slice, computed once and cached on disk (LRC).

LRC (docs/methods.md, "LRC") contrasts regions: superpixels found by Felzenszwalb's graph-based
segmentation on each *unaugmented* slice, mapped into both views by the views' geometry
(:class:`~medcl_lite.data.datasets.TwoViewDataset` with ``regions=``). Superpixels cost ~20 ms
per 128 x 128 slice and ~0.1 s per 256 x 256 slice on one CPU core, far more than a training
step's share of a slice, so :func:`superpixels` computes them once and caches them in a ``.npz``
named by the parameters and a fingerprint of the images; a later epoch or run loads them.

Cache folder convention: ``"<prepared folder>/superpixels"`` (shared by every run on that data)
or ``"<run folder>/superpixels"`` (private to one run). Stale files never match: the file name
holds the parameters and a hash of the selected images, so changed images or parameters miss.

Scale semantics (scikit-image 0.26, ``skimage/segmentation/_felzenszwalb_cy.pyx``): the image is
converted with ``img_as_float64`` (float input is NOT rescaled; uint8 input becomes [0, 1]) and
``scale`` is divided by 255 "to behave like in reference implementation". So on our float images
in [0, 1], ``scale`` has the meaning of Felzenszwalb & Huttenlocher's ``k`` for 8-bit images
(intensity 0-255): two neighbouring components merge while their boundary's smallest intensity
step (0-255 units) is below the internal difference + ``scale / size`` of both. Region size thus
grows with ``scale`` and shrinks with contrast; at a fixed field of view smaller images need a
smaller ``scale`` for the same regions (a component has fewer pixels).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.segmentation import felzenszwalb

from medcl_lite.checkpoint import atomic_write
from medcl_lite.data.datasets import _resolve_index
from medcl_lite.data.sliceset import SliceSet

__all__ = [
    "FelzenszwalbParams",
    "cache_path",
    "felzenszwalb_regions",
    "images_fingerprint",
    "region_counts",
    "region_sizes",
    "superpixels",
]

#: Format of the cache files; bump it when their content changes (old files then miss).
CACHE_VERSION = 1


@dataclass(frozen=True)
class FelzenszwalbParams:
    """Settings of :func:`skimage.segmentation.felzenszwalb` for LRC's superpixels.

    LRC does not publish these (docs/methods.md, "LRC"). scikit-image's defaults are scale 1,
    sigma 0.8, min_size 20 (92-104 regions on 128 x 128 abdominal phantom slices, where min_size
    does most of the work); typical CT use is scale 100-400, sigma 0.5-0.8, min_size 20-60. Ours,
    for 128-256 px slices in [0, 1] (``scale`` in 0-255 intensity units, module docstring): scale
    50, sigma 0.5, min_size 20, chosen for ~30-150 regions per slice on the CT phantoms:
    regions per slice (skimage 0.26, min-median-max over ~8 slices of 2 patients): abdominal CT
    phantom (``make_abdominal_volumes``) 42-51-64 at 128 x 128 and 126-139-149 at 256 x 256
    (organs come out whole, fat and muscle in a few parts); cardiac CT phantom
    (``make_cardiac_volumes(modality="ct")``) 28-41-54 and 85-91-103. Scale 100 / min_size 30
    gave only 19-32-37 (abdomen) and 21-22-27 (cardiac) at 128 x 128.

    Attributes:
        scale: observation level; larger = fewer, larger regions (> 0).
        sigma: standard deviation (pixels) of the Gaussian smoothing before segmentation (>= 0).
        min_size: smallest region in pixels, enforced by merging afterwards (int >= 1).
    """

    scale: float = 50.0
    sigma: float = 0.5
    min_size: int = 20

    def __post_init__(self) -> None:
        for name, value, ok in (
            ("scale", self.scale, lambda v: v > 0),
            ("sigma", self.sigma, lambda v: v >= 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"FelzenszwalbParams.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or not ok(value):
                bound = "> 0" if name == "scale" else ">= 0"
                raise ValueError(
                    f"FelzenszwalbParams.{name} must be finite and {bound}, got {value!r}"
                )
        if (
            isinstance(self.min_size, bool)
            or not isinstance(self.min_size, (int, np.integer))
            or self.min_size < 1
        ):
            raise ValueError(
                f"FelzenszwalbParams.min_size must be an int >= 1, got {self.min_size!r}"
            )

    def key(self) -> str:
        """Short file-name-safe key, e.g. ``"scale50-sigma0.5-min20"``."""
        return f"scale{float(self.scale):g}-sigma{float(self.sigma):g}-min{int(self.min_size)}"


# --------------------------------------------------------------------------- one slice
def felzenszwalb_regions(image: np.ndarray, params: FelzenszwalbParams | None = None) -> np.ndarray:
    """Superpixels of one slice: ``image [H, W]`` float in [0, 1] -> ``[H, W]`` int32 ids 0..K-1.

    ``skimage.segmentation.felzenszwalb(..., channel_axis=None)``; ids are consecutive.
    """
    params = FelzenszwalbParams() if params is None else params
    if not isinstance(params, FelzenszwalbParams):
        raise ValueError(f"params must be a FelzenszwalbParams, got {type(params).__name__}")
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"image must be one 2-D slice [H, W] with H, W >= 2, got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating) or not np.isfinite(image).all():
        raise ValueError(f"image must be finite floats in [0, 1], got dtype {image.dtype}")
    regions = felzenszwalb(
        image,
        scale=float(params.scale),
        sigma=float(params.sigma),
        min_size=int(params.min_size),
        channel_axis=None,
    )
    return regions.astype(np.int32)


def region_sizes(regions: np.ndarray) -> np.ndarray:
    """Pixels per region of one map ``[H, W]`` (ids >= 0; -1 = no region is ignored) -> ``[K]``
    int64, ``K = max id + 1``."""
    regions = np.asarray(regions)
    if regions.ndim != 2 or not np.issubdtype(regions.dtype, np.integer):
        raise ValueError(
            f"regions must be an integer map [H, W], got {regions.dtype} {regions.shape}"
        )
    ids = regions[regions >= 0]
    return np.bincount(ids.ravel()).astype(np.int64)


def region_counts(regions: np.ndarray) -> np.ndarray:
    """Regions per slice of a stack ``[N, H, W]`` (ids 0..K-1 per slice) -> ``[N]`` int64."""
    regions = np.asarray(regions)
    if regions.ndim != 3 or not np.issubdtype(regions.dtype, np.integer):
        raise ValueError(
            f"regions must be an integer stack [N, H, W], got {regions.dtype} {regions.shape}"
        )
    if len(regions) == 0:
        return np.zeros(0, dtype=np.int64)
    return regions.reshape(len(regions), -1).max(axis=1).astype(np.int64) + 1


# --------------------------------------------------------------------------- cache
def images_fingerprint(images: np.ndarray) -> str:
    """16 hex digits of the sha256 of ``images`` (as float32, C order) and their shape."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    digest = hashlib.sha256(f"float32{images.shape}".encode())
    digest.update(memoryview(images).cast("B"))
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | Path, params: FelzenszwalbParams, fingerprint: str) -> Path:
    """``cache_dir/felzenszwalb-<params.key()>-<fingerprint>.npz``."""
    return Path(cache_dir) / f"felzenszwalb-{params.key()}-{fingerprint}.npz"


def _load_cache(path: Path, shape: tuple[int, ...], fingerprint: str) -> np.ndarray:
    """Regions stored in ``path``; ValueError when the file is unreadable or does not match."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            regions = stored["regions"]
            stored_fingerprint = str(stored["fingerprint"])
            version = int(stored["version"])
    except Exception as err:  # truncated or foreign file: zip, key, header, dtype errors ...
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if version != CACHE_VERSION or stored_fingerprint != fingerprint:
        raise ValueError(f"version {version} / fingerprint {stored_fingerprint} do not match")
    if regions.shape != shape or not np.issubdtype(regions.dtype, np.integer):
        raise ValueError(f"holds {regions.dtype} {regions.shape}, expected int32 {shape}")
    if regions.size and regions.min() < 0:
        raise ValueError("holds negative region ids")
    return regions.astype(np.int32, copy=False)


def _write_cache(
    path: Path, regions: np.ndarray, params: FelzenszwalbParams, fingerprint: str
) -> None:
    """``np.savez_compressed`` through :func:`medcl_lite.checkpoint.atomic_write` (temporary
    sibling, then ``os.replace``; a killed writer's temporary file is removed by the next write)."""
    atomic_write(
        path,
        lambda f: np.savez_compressed(
            f,
            regions=regions,
            fingerprint=np.array(fingerprint),
            version=np.array(CACHE_VERSION),
            params=np.array([params.scale, params.sigma, params.min_size], dtype=np.float64),
        ),
    )


def _compute(images: np.ndarray, params: FelzenszwalbParams, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    out = np.empty(images.shape, dtype=np.int32)
    for k in tqdm(range(len(images)), desc="superpixels", disable=not progress, mininterval=2.0):
        out[k] = felzenszwalb_regions(images[k], params)
    return out


def superpixels(
    data: SliceSet,
    params: FelzenszwalbParams | None = None,
    cache_dir: str | Path | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Felzenszwalb superpixels of rows ``rows`` of ``data`` (default all), cached on disk.

    With ``cache_dir`` the result is read from, or written (atomically) to,
    ``cache_dir/felzenszwalb-<params.key()>-<fingerprint>.npz``, where the fingerprint hashes the
    selected images and their shape (:func:`images_fingerprint`): other parameters or other
    images miss the cache. A corrupt or mismatching cache file is recomputed and replaced, with a
    warning. Use ``cache_dir="<prepared folder>/superpixels"`` (shared by runs on that data) or
    ``"<run folder>/superpixels"``. ``cache_dir=None`` computes without caching.

    Args:
        data: the slices (unaugmented; LRC computes superpixels before augmentation).
        params: :class:`FelzenszwalbParams` (default: ours).
        cache_dir: cache folder (created when missing), or None.
        rows: rows of ``data`` (int array or boolean mask); the result follows their order.
        progress: show a progress bar while computing.

    Returns:
        ``[len(rows), H, W]`` (``[N, H, W]`` for all rows) int32 region ids, 0..K-1 per slice;
        pass it (for all rows) as ``TwoViewDataset(..., regions=...)``.
    """
    if not isinstance(data, SliceSet):
        raise ValueError(f"data must be a SliceSet, got {type(data).__name__}")
    params = FelzenszwalbParams() if params is None else params
    if not isinstance(params, FelzenszwalbParams):
        raise ValueError(f"params must be a FelzenszwalbParams, got {type(params).__name__}")
    index = _resolve_index(rows, len(data))
    images = np.ascontiguousarray(data.images[index], dtype=np.float32)
    if cache_dir is None:
        return _compute(images, params, progress)
    fingerprint = images_fingerprint(images)
    path = cache_path(cache_dir, params, fingerprint)
    if path.exists():
        try:
            return _load_cache(path, images.shape, fingerprint)
        except ValueError as err:
            warnings.warn(
                f"superpixel cache {path} is corrupt or does not match ({err}); recomputing it",
                RuntimeWarning,
                stacklevel=2,
            )
    regions = _compute(images, params, progress)
    _write_cache(path, regions, params, fingerprint)
    return regions
