"""Drawing helpers shared by the phantoms: coordinate grids, smooth noise, bands, curves, text.

Convention: an image of ``size`` pixels spans the normalised square [-1, 1]²; ``x`` grows to the
right (columns), ``y`` grows downwards (rows); pixel centres sit at ``(i + 0.5) / size * 2 - 1``.
Shapes are drawn as analytic functions of these coordinates, so a phantom looks the same at
every ``size`` and one vectorised NumPy expression draws a whole structure.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each ``[size, size]`` float32 in (-1, 1) (read-only)."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def to_patient(
    x: np.ndarray, y: np.ndarray, angle_deg: float, shift: tuple[float, float], scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates of image points: the inverse of rotate-by-``angle``, scale, then shift.

    Drawing anatomy at ``to_patient(x, y, ...)`` shows the patient rotated by ``angle_deg``
    (counter-clockwise on screen), magnified by ``scale`` and moved by ``shift``.
    """
    a = np.deg2rad(angle_deg)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    dx, dy = x - np.float32(shift[0]), y - np.float32(shift[1])
    return (c * dx - s * dy) / np.float32(scale), (s * dx + c * dy) / np.float32(scale)


def to_image(
    px: np.ndarray, py: np.ndarray, angle_deg: float, shift: tuple[float, float], scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of patient points (inverse of :func:`to_patient`)."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return scale * (c * px + s * py) + shift[0], scale * (-s * px + c * py) + shift[1]


def smoothstep(edge0: float, edge1: float, v: np.ndarray) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1``, a smooth cubic ramp between (edges may be reversed)."""
    t = np.clip((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation, float32."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px)
    return (field - field.mean()) / (field.std() + 1e-8)


def ellipse(
    x: np.ndarray,
    y: np.ndarray,
    center: tuple[float, float],
    radii: tuple[float, float],
    tilt_deg: float = 0.0,
) -> np.ndarray:
    """Normalised squared radius ``r²`` of an ellipse: < 1 inside, 1 on the outline."""
    a = np.deg2rad(tilt_deg)
    c, s = np.cos(a), np.sin(a)
    dx, dy = x - center[0], y - center[1]
    u, v = (c * dx + s * dy) / radii[0], (-s * dx + c * dy) / radii[1]
    return u * u + v * v


def dome(r2: np.ndarray) -> np.ndarray:
    """Thickness profile of an ellipsoid seen in projection: ``sqrt(1 - r²)`` inside, 0 outside."""
    return np.sqrt(np.clip(1.0 - r2, 0.0, None))


def band(distance: np.ndarray, half_width: float, softness: float = 0.3) -> np.ndarray:
    """A flat-topped band profile (1 on the centre line, 0 beyond ``half_width``)."""
    return smoothstep(half_width, half_width * (1.0 - softness), np.abs(distance))


def bezier(points: np.ndarray, n: int) -> np.ndarray:
    """``n`` points ``[n, 2]`` along the Bézier curve with control points ``[k, 2]``."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    curve = np.broadcast_to(np.asarray(points, dtype=np.float64), (n, len(points), 2))
    while curve.shape[1] > 1:  # de Casteljau, vectorised over t
        curve = (1.0 - t) * curve[:, :-1] + t * curve[:, 1:]
    return curve[:, 0]


def splat(canvas: np.ndarray, xy: np.ndarray, value: float = 1.0) -> None:
    """Set the pixels under the image-coordinate points ``xy [n, 2]`` of ``canvas`` to ``value``."""
    size_y, size_x = canvas.shape
    cols = np.floor((xy[:, 0] + 1.0) / 2.0 * size_x).astype(int)
    rows = np.floor((xy[:, 1] + 1.0) / 2.0 * size_y).astype(int)
    keep = (cols >= 0) & (cols < size_x) & (rows >= 0) & (rows < size_y)
    canvas[rows[keep], cols[keep]] = value


def lines(canvas: np.ndarray, sigma_px: float) -> np.ndarray:
    """Soften splatted curves into lines of width ~``2 sigma_px`` and peak value ~1."""
    if sigma_px <= 0:
        return canvas
    soft = ndimage.gaussian_filter(canvas, sigma_px)
    peak = 1.0 / (np.sqrt(2.0 * np.pi) * max(sigma_px, 0.5))  # a line's centre after the blur
    return np.clip(soft / peak, 0.0, 1.0)


@lru_cache(maxsize=64)
def text_stamp(text: str, height_px: int) -> np.ndarray:
    """White-on-black ``text``, ``[height_px, width]`` float32 in [0, 1] (cached, read-only)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(4 * height_px, 12))
    left, top, right, bottom = font.getbbox(text)
    big = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(big).text((1 - left, 1 - top), text, fill=255, font=font)
    width = max(1, round(big.width * height_px / big.height))
    small = np.asarray(big.resize((width, height_px), Image.Resampling.BOX), dtype=np.float32) / 255
    small.setflags(write=False)
    return small


def paste_max(canvas: np.ndarray, stamp: np.ndarray, row: int, col: int) -> None:
    """``canvas = max(canvas, stamp)`` on the window at (``row``, ``col``), clipped."""
    h, w = stamp.shape
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, canvas.shape[0]), min(col + w, canvas.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    window = stamp[r0 - row : r1 - row, c0 - col : c1 - col]
    np.maximum(canvas[r0:r1, c0:c1], window, out=canvas[r0:r1, c0:c1])
