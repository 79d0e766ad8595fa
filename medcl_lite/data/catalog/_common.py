"""Steps every preparer shares: find files, read, normalise, pad to square, resize, assemble.

Preparation choices (written into each prepared dataset's ``info``):

- **intensity**: each image is min-max normalised to [0, 1] on its own (bit depths differ: 8-bit
  PNG/JPEG, 12-bit JSRT); a constant image is an error, never a silent blank.
- **geometry**: each image (and its mask) is zero-padded to a centred square, then resized to
  ``size x size``: the aspect ratio is kept, so lungs are not squashed (the papers resize
  straight to 256 x 256, which distorts the 4020 x 4892 Montgomery images by 18 %). Images are
  resized by area averaging (box filter) when shrinking, bilinearly when enlarging; masks by
  nearest neighbour. A mask of another resolution than its image (SCR masks are 1024 x 1024 for
  2048 x 2048 JSRT images) is fine if the aspect ratio is the same.
- **memory**: images are read one at a time; only the resized arrays are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcl_lite.data.io import read_image
from medcl_lite.data.sliceset import SliceSet

PREPARATION = {
    "intensity": "per-image min-max to [0, 1]",
    "geometry": "zero-pad to a centred square, then resize (aspect ratio kept)",
    "resampling": "images: box filter when shrinking, bilinear when enlarging; masks: nearest",
}


@dataclass
class Item:
    """One image to prepare: where it is and its metadata.

    Attributes:
        sample_id, patient_id, time: SliceSet metadata (see ``META_COLUMNS``).
        image: the image file.
        masks: the mask file(s) the dataset's label function reads (may be empty).
        spacing_mm: pixel spacing of the original image in mm, None when unknown.
        extra: further metadata columns (e.g. ``tb``, ``view``).
    """

    sample_id: str
    patient_id: str
    time: int
    image: Path
    masks: tuple[Path, ...] = ()
    spacing_mm: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Scan:
    """What a source folder holds: items (segmentation sets) or a table (pools), and problems."""

    problems: list[str]
    items: list[Item] = field(default_factory=list)
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def raise_problems(self, name: str, source: Path) -> None:
        """ValueError listing the problems (up to 20) when there are any."""
        if self.problems:
            shown = "\n  - ".join(self.problems[:20])
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            raise ValueError(f"{name}: the source folder {source} is not ready:\n  - {shown}{more}")


def source_folder(source: str | Path) -> Path:
    """``source`` as a Path; FileNotFoundError when it is not an existing folder."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise FileNotFoundError(f"source folder not found (or not a folder): {source}")
    return source


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A CSV table that must hold ``columns``; a clear error names the file otherwise."""
    try:
        table = pd.read_csv(path, low_memory=False)
    except Exception as error:
        raise ValueError(f"cannot read table {path}: {type(error).__name__}: {error}") from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (it has {list(table.columns)[:12]})")
    return table


def find_dir(source: Path, name: str, max_depth: int = 5) -> Path | None:
    """The first folder called ``name`` at or below ``source`` (breadth first, sorted), or None."""
    level = [source]
    for _ in range(max_depth + 1):
        following = []
        for folder in level:
            if folder.name == name:
                return folder
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            following += [c for c in children if not c.name.startswith((".", "__MACOSX"))]
        level = following
    return None


def find_files(source: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files below ``source`` whose (lower-case) suffix is in ``suffixes``, sorted; hidden
    files and folders are skipped."""
    wanted = {s.lower() for s in suffixes}
    return sorted(
        p
        for p in source.rglob("*")
        if p.suffix.lower() in wanted and p.is_file() and not is_hidden(p.relative_to(source))
    )


def is_hidden(relative: Path) -> bool:
    """Hidden files / folders and macOS archive debris (``__MACOSX``, ``._name``)."""
    return any(part.startswith((".", "__MACOSX")) for part in relative.parts)


def read_array(path: Path) -> np.ndarray:
    """The stored pixels of ``path`` through :func:`medcl_lite.data.io.read_image`.

    GIF (the SCR masks) is read with Pillow only while ``read_image`` does not know it yet.
    """
    try:
        return read_image(path).array
    except ValueError as error:
        if path.suffix.lower() != ".gif" or "unsupported image format" not in str(error):
            raise
    from PIL import Image as PILImage  # fallback until read_image reads GIF

    try:
        with PILImage.open(path) as pil:
            return np.asarray(pil.convert("L"))
    except Exception as error:
        raise ValueError(
            f"cannot read image file {path}: {type(error).__name__}: {error}"
        ) from error


def normalise(array: np.ndarray, path: Path) -> np.ndarray:
    """``[H, W]`` float32 in [0, 1] by per-image min-max; a constant image is an error."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {array.shape}")
    values = array.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if not np.isfinite([low, high]).all():
        raise ValueError(f"{path}: the image contains NaN or infinite values")
    if high <= low:
        raise ValueError(f"{path}: the image is constant (every pixel is {low:g}); nothing to use")
    return (values - low) / np.float32(high - low)


def pad_to_square(array: np.ndarray) -> np.ndarray:
    """Zero-pad ``[H, W]`` to a centred ``[S, S]`` square with ``S = max(H, W)``."""
    height, width = array.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    out = np.zeros((side, side), array.dtype)
    out[top : top + height, left : left + width] = array
    return out


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square float image -> ``[size, size]`` float32 in [0, 1] (box filter when shrinking)."""
    from PIL import Image as PILImage

    filter_ = PILImage.Resampling.BOX if image.shape[0] >= size else PILImage.Resampling.BILINEAR
    pil = PILImage.fromarray(image.astype(np.float32))
    return np.clip(np.asarray(pil.resize((size, size), filter_)), 0.0, 1.0).astype(np.float32)


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 label map -> ``[size, size]`` by nearest neighbour."""
    from PIL import Image as PILImage

    pil = PILImage.fromarray(labels.astype(np.uint8))
    return np.asarray(pil.resize((size, size), PILImage.Resampling.NEAREST)).astype(np.uint8)


def check_aspect(image_shape: tuple, mask_shape: tuple, image: Path, mask: Path) -> None:
    """Raise when a mask cannot be aligned with its image (different aspect ratio)."""
    ratio_image = image_shape[0] / image_shape[1]
    ratio_mask = mask_shape[0] / mask_shape[1]
    if abs(ratio_image - ratio_mask) > 0.01 * ratio_image:
        raise ValueError(
            f"mask {mask} has shape {tuple(mask_shape)} but image {image} has shape"
            f" {tuple(image_shape)}: different aspect ratios, they cannot be aligned"
        )


def build_sliceset(
    items: list[Item],
    size: int,
    *,
    name: str,
    classes: tuple[str, ...],
    info: dict,
    labels: Callable[[Item], np.ndarray] | None = None,
    progress: bool = True,
    skip: tuple[type[Exception], ...] = (),
) -> SliceSet:
    """Read, normalise, pad and resize every item into a SliceSet ``[N, size, size]``.

    ``labels(item)`` returns the item's label map at its mask's own resolution (uint8 class
    indices); None makes an unlabelled SliceSet. ``site`` is ``name``. An item whose ``labels``
    raises one of ``skip`` is left out, listed in ``info["skipped_images"]`` (``sample_id``,
    ``file``, ``reason``), counted in ``info["notes"]`` and in a warning; other errors stop.
    """
    from tqdm.auto import tqdm

    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not items:
        raise ValueError(f"{name}: no images to prepare")
    images = np.empty((len(items), size, size), np.float32)
    masks = None if labels is None else np.empty((len(items), size, size), np.uint8)
    rows, skipped = [], []
    for item in tqdm(items, desc=f"preparing {name}", disable=not progress):
        i = len(rows)
        array = normalise(read_array(item.image), item.image)
        images[i] = resize_image(pad_to_square(array), size)
        if masks is not None:
            try:
                label_map = labels(item)
            except skip as error:
                file = item.masks[0] if item.masks else item.image
                skipped.append(
                    {"sample_id": item.sample_id, "file": str(file), "reason": str(error)}
                )
                continue
            check_aspect(array.shape, label_map.shape, item.image, item.masks[0])
            masks[i] = resize_labels(pad_to_square(label_map), size)
        scale = max(array.shape) / size
        rows.append(
            {
                "sample_id": item.sample_id,
                "patient_id": item.patient_id,
                "site": name,
                "time": int(item.time),
                "volume_id": "",
                "slice_index": 0,
                "n_slices": 1,
                "depth": np.nan,
                **item.extra,
                "orig_height": int(array.shape[0]),
                "orig_width": int(array.shape[1]),
                "pixel_spacing_mm": np.nan if item.spacing_mm is None else item.spacing_mm * scale,
            }
        )
    info = {"modality": "xray", "image_size": int(size), **PREPARATION, **info}
    if skip:
        info.update(_skipped_info(name, skipped, len(items), info.get("notes", [])))
    if len(rows) < len(items):
        images = images[: len(rows)].copy()
        masks = None if masks is None else masks[: len(rows)].copy()
    return SliceSet(images, masks, pd.DataFrame(rows), tuple(classes), name, info)


def _skipped_info(name: str, skipped: list[dict], total: int, notes: list[str]) -> dict:
    """``info`` entries of the images :func:`build_sliceset` skipped (a warning when any; an
    error when every image was skipped)."""
    if len(skipped) == total:
        raise ValueError(f"{name}: every image was skipped, e.g. {skipped[0]['reason']}")
    if not skipped:
        return {"skipped_images": []}
    note = (
        f"{len(skipped)} of {total} images skipped (see info['skipped_images']), e.g."
        f" {skipped[0]['reason']}"
    )
    warnings.warn(f"{name}: {note}", UserWarning, stacklevel=3)
    return {"skipped_images": skipped, "notes": [*notes, note]}
