"""Read one medical image file into an array with its pixel spacing.

Formats: PNG/JPEG (2-D), NIfTI (2-D or 3-D), single DICOM files (``.dcm``/``.dicom``, or any
file whose suffix is unknown or missing and which carries the ``DICM`` marker at byte 128), DICOM
series (a folder, read by :func:`medcl_lite.data.volumes.read_dicom_series`: values in HU, no
windowing, RAS+ axes as for NIfTI) and JSRT raw chest radiographs (``.img``/``.IMG``).

Axis convention: a 2-D image is ``[H, W]`` (rows, columns); a volume is ``[D, H, W]`` with the
slice axis first. A NIfTI voxel array ``[i, j, k]`` is first reordered to the closest canonical
(RAS+) axes, as ``nibabel.as_closest_canonical`` does (``i`` towards the patient's Right, ``j``
Anterior, ``k`` Superior; axes permuted and flipped, never resampled), so two files holding the
same anatomy with different affines give the same array; a 2-D NIfTI is reordered as a one-slice
volume. Files with neither qform nor sform (``qform_code == sform_code == 0``) carry no orientation
(nifti1.h, "METHOD 1") and keep their stored order. The returned array is then
``data.transpose(2, 1, 0)``: ``D = k`` (inferior to superior), ``H = j``, ``W = i``; shown with
``imshow`` an axial slice has anterior at the bottom and the patient's right on the right. A
multi-frame DICOM file gives ``[D, H, W]`` with its frames in stored order.
``spacing`` follows the returned axes (``(dz, dy, dx)`` or ``(dy, dx)``), in mm, 1.0 where unknown.

PNG/JPEG values and dtype are the stored ones (8- or 16-bit PNG stays ``uint8`` / ``uint16``);
NIfTI keeps its stored dtype and applies the header's ``scl_slope`` / ``scl_inter`` when they
are set (and then returns floats).

DICOM values follow the DICOM grey-scale pipeline (PS3.4 N.2.1.1), with pydicom:

1. stored values (``BitsStored`` bits, signed when ``PixelRepresentation`` is 1);
2. Modality LUT Sequence, or Rescale Slope/Intercept (e.g. CT -> HU) unless it is the identity;
3. VOI LUT Sequence (first item) if present, else Window Center/Width (first window, with the
   file's VOI LUT Function); skipped for DICOM series, whose volumes keep modality values (HU);
4. MONOCHROME1 (minimum = white) is turned into MONOCHROME2 (larger = brighter) with
   ``inverted = lo + hi - value``, where ``[lo, hi]`` is the output range of the last step
   applied: ``[0, 2**BitsStored - 1]`` (unsigned) or ``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]``
   (signed) for stored values, that range mapped through the rescale, ``[0, 2**n - 1]`` for an
   ``n``-bit LUT; windowing keeps the range (pydicom maps the window onto it).

The dtype is the stored integer dtype (``uint16`` for 12/16-bit data, never cut to 8 bits) when
steps 2-3 change nothing, and ``float32`` when a LUT, rescale or window was applied.
Spacing is ``PixelSpacing`` (patient plane), else ``ImagerPixelSpacing`` (detector plane, X-ray),
else ``NominalScannedPixelSpacing`` (digitised film), as ``(dy, dx)``; frames add
``SpacingBetweenSlices`` (1.0 where missing).

JSRT raw files are headerless 2048 x 2048 pixels, 12 bits in 16-bit big-endian words, 0.175 mm
pixels (http://db.jsrt.or.jp/eng.php). They hold laser-digitised film where a high value is a
dark (dense) film area, so lungs have high stored values (sources at ``_read_jsrt``). They are
returned inverted, ``4095 - value`` as ``uint16`` (0..4095): larger = brighter, lungs dark.

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
JSRT_SUFFIXES = (".img",)

JSRT_SHAPE = (2048, 2048)
JSRT_MAX = 2**12 - 1
# Pixel size from the JSRT database description, http://db.jsrt.or.jp/eng.php ("2048x2048 matrix
# size (0.175-mm pixels) and a 12-bit gray scale (no header, big-endian raw data)").
JSRT_SPACING_MM = 0.175


@dataclass
class Image:
    """An image as stored on disk.

    Attributes:
        array: ``[H, W]`` or ``[D, H, W]`` (slice axis first); values as in the module doc.
        spacing: pixel spacing in mm, one value per axis of ``array`` (1.0 where unknown).
        path: the file it was read from.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    path: Path


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_magic(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(132)[128:132] == b"DICM"


def _reader_for(path: Path):
    suffix = _suffix(path)
    if suffix in PNG_JPEG_SUFFIXES:
        return _read_png_jpeg
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti
    if suffix in DICOM_SUFFIXES:
        return _read_dicom
    if suffix in JSRT_SUFFIXES:
        return _read_jsrt
    if _has_dicom_magic(path):
        return _read_dicom
    known = ", ".join(PNG_JPEG_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES + JSRT_SUFFIXES)
    raise ValueError(
        f"unsupported image format {suffix!r} of {path} (supported: {known},"
        " or DICOM files with the 'DICM' marker at byte 128)"
    )


def read_image(path: str | Path) -> Image:
    """Read a PNG/JPEG, NIfTI, DICOM or JSRT raw file; see the module doc for axes and values.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotImplementedError: colour, enhanced (functional-group) DICOM or a transfer syntax
            that pydicom has no decoder for.
        ValueError: unknown format; an empty, truncated, corrupt or non-DICOM file; a DICOM
            file without pixel data or compressed with a codec whose plugin is not installed;
            a folder that is not one complete DICOM series (see ``read_dicom_series``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        from medcl_lite.data.volumes import read_dicom_series  # volumes imports this module

        return read_dicom_series(path)
    reader = _reader_for(path)
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path}")
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
    data = np.asarray(np.asanyarray(nifti.dataobj))  # scl_slope / scl_inter applied
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ValueError(
            f"NIfTI file {path} has shape {data.shape}: expected a 2-D image or a 3-D volume"
            " (4-D cine series are not supported yet)"
        )
    zooms = [float(z) if z > 0 else 1.0 for z in nifti.header.get_zooms()[: data.ndim]]
    header = nifti.header
    if int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0:
        data, zooms = _canonical_axes(data, nifti.affine, zooms, path)
    array = np.ascontiguousarray(data.T)  # [i, j, k] -> [k, j, i] = [D, H, W]
    return Image(array=array, spacing=tuple(reversed(zooms)), path=path)


def _canonical_axes(
    data: np.ndarray, affine: np.ndarray, zooms: list[float], path: Path
) -> tuple[np.ndarray, list[float]]:
    """Reorder voxel axes ``[i, j(, k)]`` to the closest RAS+ order, with their ``zooms``.

    What ``nibabel.as_closest_canonical`` does to an image (``io_orientation`` +
    ``apply_orientation``: flips and permutations, no resampling), on a bare array so that 2-D
    images (reordered as one-slice volumes) and DICOM series share it. ``affine`` maps voxel
    indices to RAS+ mm (the NIfTI convention).

    Raises:
        ValueError: naming ``path``, when ``affine`` gives an axis no direction (singular).
    """
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise ValueError(
            f"{path}: the affine gives voxel axis {int(np.isnan(ornt[:, 0]).argmax())} no"
            f" direction, cannot orient the image (affine {np.round(affine, 4).tolist()})"
        )
    flat = data.ndim == 2
    canonical = apply_orientation(data[..., None] if flat else data, ornt)
    target = [int(axis) for axis in ornt[:, 0]]  # voxel axis a goes to output axis target[a]
    if flat:
        canonical = canonical.squeeze(axis=target[2])  # the one-voxel slice axis
        order = sorted(range(2), key=lambda a: target[a])
    else:
        order = sorted(range(3), key=lambda a: target[a])
    return canonical, [zooms[a] for a in order]


def _read_jsrt(path: Path) -> Image:
    expected, actual = JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2, path.stat().st_size
    if actual != expected:
        hint = ""
        if path.with_suffix(".hdr").exists() or path.with_suffix(".HDR").exists():
            hint = " (a .hdr file next to it suggests an Analyze image, which is not supported)"
        raise ValueError(
            f"{path} is not a JSRT raw image: expected {expected} bytes (2048 x 2048 pixels,"
            f" 16-bit big-endian), the file has {actual} bytes{hint}"
        )
    stored = np.fromfile(path, dtype=">u2").reshape(JSRT_SHAPE)
    if int(stored.max()) > JSRT_MAX:
        raise ValueError(
            f"{path}: values up to {int(stored.max())} do not fit in 12 bits; not a JSRT raw"
            " image (or little-endian)"
        )
    # Polarity: the JSRT page does not state it. Widely used JSRT preprocessing inverts the raw
    # values (imlab-uiip/lung-segmentation-2d, preprocess_JSRT.py: 1 - value / 4096), and ImageJ
    # batch imports of the raw files use "white is zero": high raw value = dark film (lungs).
    array = (JSRT_MAX - stored).astype(np.uint16)
    return Image(array=array, spacing=(JSRT_SPACING_MM, JSRT_SPACING_MM), path=path)


def _read_dicom(path: Path, voi: bool = True) -> Image:
    """One DICOM file; ``voi=False`` stops after the modality step (HU for CT), no windowing."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise ValueError(
            f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble): {error}"
        ) from error
    _check_dicom(ds, path)
    try:
        stored = ds.pixel_array
    except RuntimeError as error:  # pydicom: every installed plugin failed on compressed data
        raise ValueError(
            f"cannot decode the pixel data of DICOM file {path}: {error}{_other_plugins(ds)}"
        ) from error
    frames = int(ds.get("NumberOfFrames") or 1)
    if stored.ndim != (3 if frames > 1 else 2):
        raise ValueError(f"DICOM file {path}: unexpected pixel array shape {stored.shape}")
    spacing = _dicom_spacing(ds)
    if frames > 1:
        between = ds.get("SpacingBetweenSlices")
        spacing = (float(between) if between and float(between) > 0 else 1.0, *spacing)
    return Image(array=_dicom_values(ds, stored, voi=voi), spacing=spacing, path=path)


def _check_dicom(ds, path: Path) -> None:
    """Refuse, naming ``path``, what would not give a correct greyscale array."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import get_expected_length

    if "PixelData" not in ds:
        raise ValueError(
            f"DICOM file {path} holds no pixel data (no (7FE0,0010) Pixel Data element)"
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel") or 1) != 1 or photometric not in (
        "MONOCHROME1",
        "MONOCHROME2",
    ):
        raise NotImplementedError(
            f"DICOM file {path} is not greyscale (PhotometricInterpretation {photometric!r}):"
            " only MONOCHROME1 and MONOCHROME2 are supported"
        )
    if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
        raise NotImplementedError(
            f"enhanced DICOM file {path} keeps spacing and rescale in functional groups,"
            " which are not supported yet"
        )
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_encapsulated:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as error:
            raise NotImplementedError(
                f"DICOM file {path}: no decoder exists for transfer syntax {syntax.name} ({syntax})"
            ) from error
        if not decoder.is_available:
            plugins = "; ".join(decoder.missing_dependencies)
            raise ValueError(
                f"DICOM file {path} is compressed ({syntax.name}, {syntax}) and no installed"
                f" plugin can decode it; install one of: {plugins}"
            )
    else:
        expected, actual = get_expected_length(ds, "bytes"), len(ds.PixelData)
        if actual < expected:
            raise ValueError(
                f"DICOM file {path} has truncated pixel data: {actual} bytes, expected"
                f" {expected} (Rows {ds.Rows} x Columns {ds.Columns} x frames"
                f" {int(ds.get('NumberOfFrames') or 1)} x BitsAllocated {ds.BitsAllocated} / 8)"
            )


def _other_plugins(ds) -> str:
    from pydicom.pixels import get_decoder

    try:
        missing = get_decoder(ds.file_meta.TransferSyntaxUID).missing_dependencies
    except (AttributeError, NotImplementedError):
        return ""
    return f"\nplugins not installed that may read it: {'; '.join(missing)}" if missing else ""


def _dicom_spacing(ds) -> tuple[float, float]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])  # row spacing (dy), column spacing (dx)
    return 1.0, 1.0


def _dicom_values(ds, stored: np.ndarray, voi: bool = True) -> np.ndarray:
    """Stored values -> modality -> VOI (if ``voi``) -> MONOCHROME1 inversion; see module doc."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    values, changed = stored, False
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if ds.get("ModalityLUTSequence"):
        values, changed = apply_modality_lut(stored, ds), True
        lo, hi = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif slope is not None and intercept is not None:
        slope, intercept = float(slope), float(intercept)
        if (slope, intercept) != (1.0, 0.0):
            values, changed = apply_modality_lut(stored, ds), True
            lo, hi = lo * slope + intercept, hi * slope + intercept
    voi_lut = ds.get("VOILUTSequence") if voi else None
    if voi_lut and "LUTDescriptor" in voi_lut[0] and "LUTData" in voi_lut[0]:
        if values.dtype.kind == "f":  # LUTs index integers; rescaled values are floats
            values = np.floor(values).astype(np.int64)
        values, changed = apply_voi_lut(values, ds), True
        lo, hi = 0, 2 ** int(voi_lut[0].LUTDescriptor[2]) - 1
    elif voi and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        values, changed = apply_voi_lut(values, ds), True  # window output keeps [lo, hi]
    if ds.PhotometricInterpretation == "MONOCHROME1":
        values = (lo + hi) - values  # stays in the stored dtype for stored values
    if changed:
        return values.astype(np.float32)
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))  # big-endian files
