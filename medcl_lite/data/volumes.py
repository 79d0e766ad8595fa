"""Volumes for the PCL chapter: NIfTI files and DICOM series, as ``[D, H, W]`` arrays.

Conventions are those of :mod:`medcl_lite.data.io`: an :class:`~medcl_lite.data.io.Image` with
``array [D, H, W]`` (slice axis first) and ``spacing = (dz, dy, dx)`` in mm. Both readers give the
same closest-canonical (RAS+) axis order, so a label map stored as NIfTI lines up with its image
stored as a DICOM series, and two files with the same anatomy but different affines read the
same: ``D`` inferior to superior, ``H`` posterior to anterior, ``W`` patient left to right (for
an axial acquisition; oblique ones go to the closest axes, never resampled).

A DICOM series is a folder of single-frame DICOM files (found by the ``DICM`` marker at byte
128, any suffix; sub-folders and a ``DICOMDIR`` are ignored). Slices are ordered by their
``ImagePositionPatient`` projected on the slice normal (the cross product of the two
``ImageOrientationPatient`` directions), never by file name or ``InstanceNumber``. Values are the
modality values (HU for CT: rescale slope/intercept applied, no VOI windowing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcl_lite.data.io import (
    NIFTI_SUFFIXES,
    Image,
    _canonical_axes,
    _has_dicom_magic,
    _read_dicom,
    _suffix,
    read_image,
)

# A slice step may deviate this much (relative) from the smallest step. Positions are decimal
# strings with sub-micrometre precision, so real series stay far below it and a missing slice
# (a step twice as large) far above it.
SLICE_STEP_TOLERANCE = 0.01
ORIENTATION_TOLERANCE = 1e-4  # direction cosines that agree this closely are the same
SPACING_TOLERANCE = 1e-3  # relative: image and label spacing that agree this closely are equal
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR SOP Class, holds no image


def read_nifti_volume(path: str | Path) -> Image:
    """A 3-D NIfTI file as ``[D, H, W]`` in RAS+ axis order (see the module doc of io.py).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming ``path``: not a ``.nii``/``.nii.gz`` file, a 2-D image, or any error
            of :func:`~medcl_lite.data.io.read_image`.
    """
    path = Path(path)
    if _suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"{path} is not a NIfTI file (expected {', '.join(NIFTI_SUFFIXES)})")
    image = read_image(path)
    if image.array.ndim != 3:
        raise ValueError(f"NIfTI file {path} holds a 2-D image {image.array.shape}, not a volume")
    return image


def read_dicom_series(folder: str | Path) -> Image:
    """The single-frame DICOM files of ``folder`` as one volume ``[D, H, W]`` in HU, RAS+ axes.

    ``spacing`` is ``(dz, dy, dx)``: ``dz`` from the slice positions (``SpacingBetweenSlices``,
    else ``SliceThickness``, else 1.0 for a single slice), ``(dy, dx)`` from ``PixelSpacing``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: naming the folder or the file at fault: no DICOM file; several series (their
            ``SeriesInstanceUID``s listed); a multi-frame file; missing position/orientation;
            ``Rows``/``Columns``, orientation or pixel spacing that differ between files; two
            slices at one position; a gap (missing slice) or uneven slice steps.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"DICOM series folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (a DICOM series is a folder of files)")
    headers = _series_headers(folder)
    normal = _check_geometry(headers, folder)
    positions = {
        path: float(np.dot(_vector(ds, "ImagePositionPatient"), normal))
        for path, ds in headers.items()
    }
    paths = sorted(headers, key=positions.get)
    first = headers[paths[0]]
    dz = _slice_step(paths, [positions[p] for p in paths], first, folder)
    slices = [_read_slice(path) for path in paths]
    volume = np.stack([image.array for image in slices])  # [k, j, i] = slice, row, column
    dy, dx = slices[0].spacing
    rows, columns = _vector(first, "ImageOrientationPatient").reshape(2, 3)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, 0] = lps_to_ras * rows * dx  # column index i runs along the row direction
    affine[:3, 1] = lps_to_ras * columns * dy
    affine[:3, 2] = lps_to_ras * normal * dz
    affine[:3, 3] = lps_to_ras * _vector(first, "ImagePositionPatient")
    data, zooms = _canonical_axes(volume.T, affine, [dx, dy, dz], folder)
    return Image(array=np.ascontiguousarray(data.T), spacing=tuple(reversed(zooms)), path=folder)


def read_volume_pair(image_path: str | Path, label_path: str | Path) -> tuple[Image, Image]:
    """An image volume and its label map (each a NIfTI file or a DICOM series folder).

    The label array is returned as the smallest integer dtype that holds its values.

    Raises:
        ValueError: naming the file: an empty volume, NaN or infinite image values, non-integer
            label values; naming both files: different shapes, or spacings that differ by more
            than ``SPACING_TOLERANCE`` (relative).
    """
    image, label = _read_volume(Path(image_path)), _read_volume(Path(label_path))
    for volume in (image, label):
        if volume.array.size == 0:
            raise ValueError(f"volume {volume.path} is empty (shape {volume.array.shape})")
    if image.array.dtype.kind == "f" and not np.all(np.isfinite(image.array)):
        bad = int(np.count_nonzero(~np.isfinite(image.array)))
        raise ValueError(f"image {image.path} holds {bad} NaN or infinite values")
    label.array = _integer_labels(label.array, label.path)
    if image.array.shape != label.array.shape:
        raise ValueError(
            f"image {image.path} has shape {image.array.shape} but label {label.path} has shape"
            f" {label.array.shape} (both [D, H, W] after reorientation to RAS+)"
        )
    if not np.allclose(image.spacing, label.spacing, rtol=SPACING_TOLERANCE, atol=0):
        raise ValueError(
            f"image {image.path} has spacing {image.spacing} mm but label {label.path} has"
            f" {label.spacing} mm (dz, dy, dx; relative tolerance {SPACING_TOLERANCE})"
        )
    return image, label


def _read_volume(path: Path) -> Image:
    if not path.exists():
        raise FileNotFoundError(f"volume not found: {path}")
    if path.is_dir():
        return read_dicom_series(path)
    if _suffix(path) in NIFTI_SUFFIXES:
        return read_nifti_volume(path)
    raise ValueError(
        f"{path}: a volume is a NIfTI file ({', '.join(NIFTI_SUFFIXES)}) or a DICOM series folder"
    )


def _integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        fractional = ~finite | (array != np.round(array))
        if fractional.any():
            value = array[fractional].flat[0]
            raise ValueError(
                f"label {path} holds {int(fractional.sum())} non-integer values (e.g. {value});"
                " a label map holds class indices"
            )
    elif array.dtype.kind not in "iub":
        raise ValueError(f"label {path} has dtype {array.dtype}, expected integer class indices")
    low, high = int(array.min()), int(array.max())
    dtype = np.result_type(np.min_scalar_type(low), np.min_scalar_type(high))
    return array.astype(dtype)


def _series_headers(folder: Path) -> dict[Path, object]:
    """Headers (no pixels) of the DICOM files of one series in ``folder``, by path."""
    import pydicom

    headers = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.stat().st_size < 132 or not _has_dicom_magic(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as error:  # truncated / corrupt headers raise many types
            raise ValueError(
                f"cannot read DICOM file {path}: {type(error).__name__}: {error}"
            ) from error
        if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
            continue
        headers[path] = ds
    if not headers:
        raise ValueError(
            f"folder {folder} holds no DICOM file (none with the 'DICM' marker at byte 128)"
        )
    series: dict[str, list[Path]] = {}
    for path, ds in headers.items():
        series.setdefault(str(ds.get("SeriesInstanceUID", "(none)")), []).append(path)
    if len(series) > 1:
        listed = "; ".join(f"{uid}: {len(p)} files, e.g. {p[0].name}" for uid, p in series.items())
        raise ValueError(
            f"folder {folder} holds {len(series)} DICOM series, expected one: {listed}"
        )
    return headers


def _vector(ds, keyword: str) -> np.ndarray:
    return np.array([float(v) for v in ds.get(keyword)], dtype=np.float64)


def _check_geometry(headers: dict, folder: Path) -> np.ndarray:
    """Check that all files share matrix, orientation and pixel spacing; return the normal."""
    reference_path, reference = next(iter(headers.items()))
    for path, ds in headers.items():
        if int(ds.get("NumberOfFrames") or 1) != 1:
            raise ValueError(
                f"DICOM file {path} in series {folder} has {ds.NumberOfFrames} frames; a series"
                " folder must hold single-frame files"
            )
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            value = ds.get(keyword)
            if value is None or len(value) != (3 if keyword == "ImagePositionPatient" else 6):
                raise ValueError(
                    f"DICOM file {path} has no valid {keyword}: cannot place it in series {folder}"
                )
        for keyword in ("Rows", "Columns"):
            if ds.get(keyword) != reference.get(keyword):
                raise ValueError(
                    f"DICOM file {path} has {keyword} {ds.get(keyword)} but"
                    f" {reference_path.name} has {reference.get(keyword)} (series {folder})"
                )
        orientation = _vector(ds, "ImageOrientationPatient")
        if not np.allclose(
            orientation, _vector(reference, "ImageOrientationPatient"), atol=ORIENTATION_TOLERANCE
        ):
            raise ValueError(
                f"DICOM file {path} has ImageOrientationPatient {orientation.tolist()}, unlike"
                f" {reference_path.name} (series {folder})"
            )
        spacing = ds.get("PixelSpacing")
        if (spacing is None) != (reference.get("PixelSpacing") is None) or (
            spacing is not None
            and not np.allclose(
                [float(v) for v in spacing], [float(v) for v in reference.PixelSpacing], rtol=1e-4
            )
        ):
            raise ValueError(
                f"DICOM file {path} has PixelSpacing {spacing}, unlike {reference_path.name}"
                f" ({reference.get('PixelSpacing')}) (series {folder})"
            )
    rows, columns = _vector(reference, "ImageOrientationPatient").reshape(2, 3)
    normal = np.cross(rows, columns)
    if np.linalg.norm(normal) < 0.5:
        raise ValueError(
            f"DICOM file {reference_path}: ImageOrientationPatient {[*rows, *columns]} does not"
            " hold two perpendicular directions"
        )
    return normal / np.linalg.norm(normal)


def _slice_step(paths: list[Path], positions: list[float], first, folder: Path) -> float:
    """``dz`` from sorted positions; a gap or uneven steps raise naming the files."""
    if len(paths) == 1:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = first.get(keyword)
            if value is not None and float(value) > 0:
                return float(value)
        return 1.0
    steps = np.diff(positions)
    for index, step in enumerate(steps):
        if step <= 1e-6:
            raise ValueError(
                f"series {folder}: {paths[index].name} and {paths[index + 1].name} lie at the same"
                f" position {positions[index]:.4f} mm along the slice normal"
            )
    reference = float(steps.min())
    for index, step in enumerate(steps):
        ratio = float(step) / reference
        if abs(ratio - 1) > SLICE_STEP_TOLERANCE:
            between = (
                f"between {paths[index].name} ({positions[index]:.4f} mm) and"
                f" {paths[index + 1].name} ({positions[index + 1]:.4f} mm)"
            )
            if abs(ratio - round(ratio)) <= SLICE_STEP_TOLERANCE * round(ratio):
                raise ValueError(
                    f"series {folder} has a gap: {round(ratio) - 1} missing slice(s) {between};"
                    f" the other slices are {reference:.4f} mm apart"
                )
            raise ValueError(
                f"series {folder} has uneven slice steps: {step:.4f} mm {between}, elsewhere"
                f" {reference:.4f} mm"
            )
    return (positions[-1] - positions[0]) / (len(paths) - 1)


def _read_slice(path: Path) -> Image:
    """One slice through io.py's DICOM reader, without windowing (HU)."""
    try:
        return _read_dicom(path, voi=False)
    except (NotImplementedError, ValueError) as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"cannot read DICOM file {path}: {error}") from error
    except Exception as error:  # truncated / corrupt files raise many types
        raise ValueError(
            f"cannot read DICOM file {path} (truncated or corrupt?): {type(error).__name__}:"
            f" {error}"
        ) from error
