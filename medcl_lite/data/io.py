"""Read one medical image file into an array with its pixel spacing.

Axis convention: a 2-D image is ``[H, W]`` (rows, columns); a volume is ``[D, H, W]`` with the
slice axis first. For NIfTI, whose voxel array is indexed ``[i, j, k]`` with ``k`` the slice
axis, the returned array is ``data.transpose(2, 1, 0)``: ``D = k``, ``H = j``, ``W = i``.
``spacing`` follows the returned axes (``(dz, dy, dx)`` or ``(dy, dx)``), in mm.

Values and dtype are the stored ones (8- or 16-bit PNG stays ``uint8`` / ``uint16``); NIfTI
applies the header's ``scl_slope`` / ``scl_inter`` when they are set (and then returns floats).
Nothing is ever replaced by a silent zero image: unreadable, truncated or empty files raise a
:class:`ValueError` that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PNG_JPEG_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclass
class Image:
    """An image as stored on disk.

    Attributes:
        array: ``[H, W]`` or ``[D, H, W]`` (slice axis first) in the stored values and dtype.
        spacing: pixel spacing in mm, one value per axis of ``array`` (1.0 where unknown).
        path: the file it was read from.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    path: Path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_image(path: str | Path) -> Image:
    """Read a PNG/JPEG (2-D) or NIfTI (2-D or 3-D) file; see the module doc for axes and values.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotImplementedError: DICOM files and folders (a later issue).
        ValueError: unknown format, or an empty, truncated or unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise NotImplementedError(f"reading a folder (DICOM series) is not supported yet: {path}")
    suffix = _suffix(path)
    if suffix in DICOM_SUFFIXES:
        raise NotImplementedError(f"DICOM reading is not supported yet: {path}")
    if suffix not in PNG_JPEG_SUFFIXES + NIFTI_SUFFIXES:
        known = ", ".join(PNG_JPEG_SUFFIXES + NIFTI_SUFFIXES)
        raise ValueError(f"unsupported image format {suffix!r} of {path} (supported: {known})")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path}")
    reader = _read_png_jpeg if suffix in PNG_JPEG_SUFFIXES else _read_nifti
    try:
        image = reader(path)
    except (NotImplementedError, ValueError) as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"cannot read image file {path}: {error}") from error
    except Exception as error:  # truncated / corrupt files raise many types (OSError, EOFError ...)
        raise ValueError(
            f"cannot read image file {path} (truncated or corrupt?):"
            f" {type(error).__name__}: {error}"
        ) from error
    if image.array.size == 0:
        raise ValueError(f"image file {path} holds no pixels (shape {image.array.shape})")
    return image


def _read_png_jpeg(path: Path) -> Image:
    from PIL import Image as PILImage

    with PILImage.open(path) as pil:
        pil.load()  # decode now: a truncated file fails here, not later
        dpi = pil.info.get("dpi")
        if pil.mode in ("I;16", "I;16B", "I;16L", "L", "I", "F"):
            array = np.asarray(pil)
        elif pil.mode in ("RGB", "RGBA", "LA"):
            channels = np.asarray(pil)
            colour = channels[..., :3] if pil.mode != "LA" else channels[..., :1]
            if np.all(colour == colour[..., :1]):
                array = np.ascontiguousarray(colour[..., 0])  # grey stored as colour
            else:
                array = np.asarray(pil.convert("L"))  # ITU-R 601 luma
        else:
            array = np.asarray(pil.convert("L"))
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() < 2**16:
        array = array.astype(np.uint16)  # 16-bit PNGs that Pillow opened as mode "I"
    spacing = (1.0, 1.0)
    if dpi and all(float(v) > 0 for v in dpi):
        spacing = (25.4 / float(dpi[1]), 25.4 / float(dpi[0]))
    return Image(array=array, spacing=spacing, path=path)


def _read_nifti(path: Path) -> Image:
    import nibabel as nib

    nifti = nib.load(str(path))
    data = np.asanyarray(nifti.dataobj)
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ValueError(
            f"NIfTI file {path} has shape {data.shape}: expected a 2-D image or a 3-D volume"
            " (4-D cine series are not supported yet)"
        )
    zooms = [float(z) if z > 0 else 1.0 for z in nifti.header.get_zooms()[: data.ndim]]
    array = np.ascontiguousarray(data.T)  # [i, j, k] -> [k, j, i] = [D, H, W]
    return Image(array=array, spacing=tuple(reversed(zooms)), path=path)
