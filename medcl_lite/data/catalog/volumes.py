"""Preparers of real cardiac volumes (PCL): ACDC cine MRI and CT image/label NIfTI pairs.

Every volume becomes ``n_slices`` rows of a :class:`SliceSet` with ``volume_id``,
``slice_index``, ``n_slices``, ``depth = (slice_index + 1) / n_slices`` (PCL, eq. 1) and the
in-plane and slice spacing of the prepared pixels (``spacing_x``, ``spacing_y``, ``spacing_z``,
mm), like :func:`medcl_lite.data.phantoms.cardiac.make_cardiac_volumes`. Volumes are read with
:mod:`medcl_lite.data.volumes` (``[D, H, W]`` in RAS+ axis order, spacing ``(dz, dy, dx)``).

Preparation choices (written into each prepared dataset's ``info``):

- **intensity**: per-volume z-score, clipped to [-3, 3] and mapped linearly to [0, 1]
  (``(z + 3) / 6``); CT is first clipped to its own 0.5-99.5 percentiles. A constant volume is
  an error, never a blank image.
- **geometry** with ``spacing_mm`` (ACDC default 1.25 mm, METHODS "ACDC resampled in-plane to
  1.25 mm"): each slice is resampled to that pixel spacing (images linear with anti-aliasing when
  shrinking, masks nearest), then centre-cropped or zero-padded to ``size x size``, so one pixel
  is ``spacing_mm`` in every volume. With ``spacing_mm=None`` (CT default) each slice is
  zero-padded to a square and resized to ``size x size`` (see :mod:`._common`). Slices are never
  resampled along the slice axis.
- **orientation** (``info["orientation"]``, :data:`DISPLAY_ORIENTATION`): slices run superior
  to inferior (slice 0 the most superior, so ``depth`` runs from above the cardiac base towards
  the apex for short-axis stacks) and each slice is shown in the radiological convention
  (anterior at the top, the patient's right on the image left). This is the RAS+ array of
  :mod:`medcl_lite.data.volumes` with all three axes reversed (slice order, and a 180 degree
  in-plane rotation), image and mask alike; spacing is unchanged. Why: it matches the cardiac
  phantom (:mod:`medcl_lite.data.phantoms.cardiac`, RV on the image left, depth from base to
  apex) and radiological reading, so real and phantom slices look alike; PCL itself only needs
  one depth direction within a dataset. Files without qform and sform (NIfTI codes 0) carry no
  orientation and keep their stored order (listed in ``info["unoriented_volumes"]``).
  A multi-slice stack (slice step above ``SLICE_ANISOTROPY`` times the pixel size) whose
  stored slice axis would end up in the image plane after the closest-RAS+ reordering (an
  oblique short-axis stack closer to an in-plane axis than to superior-inferior) keeps its
  stored slice axis, ordered so that slice 0 is the most superior, and its stored in-plane
  order (an oblique plane has no radiological convention); such volumes are listed in
  ``info["oblique_stacks"]``. Cutting the stack across its slices is never an option.
- **labels**: ACDC -> the phantom's :data:`CARDIAC_CLASSES`; ImageCHD and MM-WHS -> one class
  order, :data:`MMWHS_CLASSES` (CHD -> MM-WHS transfer; CHD values above
  :data:`CHD_LAST_LABEL` become background, as in PCL, listed in ``info["set_to_background"]``);
  HVSMR -> :data:`HVSMR_CLASSES`. Any other stored value is an error naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcl_lite.data.catalog._common import (
    Scan,
    find_files,
    is_hidden,
    pad_to_square,
    resize_image,
    resize_labels,
    source_folder,
)
from medcl_lite.data.io import NIFTI_SUFFIXES, _canonical_axes, _suffix
from medcl_lite.data.phantoms.cardiac import CARDIAC_CLASSES
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.volumes import read_volume_pair

Z_CLIP = 3.0  # z-scores beyond +-Z_CLIP are clipped before mapping to [0, 1]
CT_PERCENTILES = (0.5, 99.5)
ACDC_SPACING_MM = 1.25
#: ACDC label value -> index into CARDIAC_CLASSES (ACDC: 1 RV, 2 MYO, 3 LV).
ACDC_TO_CARDIAC = {
    0: 0,
    1: CARDIAC_CLASSES.index("rv"),
    2: CARDIAC_CLASSES.index("myocardium"),
    3: CARDIAC_CLASSES.index("lv"),
}
#: MM-WHS label values (challenge description) -> classes; the first four as the phantom's.
MMWHS_CLASSES = (*CARDIAC_CLASSES, "la", "ra", "aorta", "pulmonary_artery")
MMWHS_TO_CLASSES = {0: 0, 500: 1, 205: 2, 600: 3, 420: 4, 550: 5, 820: 6, 850: 7}
#: ImageCHD label values 1..7 (Xu et al. 2020): LV, RV, LA, RA, myocardium, aorta, pulmonary
#: artery.
CHD_STRUCTURES = ("lv", "rv", "la", "ra", "myocardium", "aorta", "pulmonary_artery")
#: ImageCHD value -> index into :data:`MMWHS_CLASSES` (CHD -> MM-WHS transfer: one class order).
CHD_TO_CLASSES = {0: 0, **{v: MMWHS_CLASSES.index(n) for v, n in enumerate(CHD_STRUCTURES, 1)}}
#: Stored CHD values above this (other structures) become background, as PCL's preprocessing.
CHD_LAST_LABEL = 7
#: HVSMR 2016 label values (1 myocardium, 2 blood pool) -> classes.
HVSMR_CLASSES = ("background", "myocardium", "blood_pool")
HVSMR_TO_CLASSES = {0: 0, 1: 1, 2: 2}
DISPLAY_ORIENTATION = (
    "slices superior->inferior; in-plane radiological: anterior up, patient's right on image left"
)
#: A stack whose slice step exceeds this many times its pixel size is a multi-slice (2-D)
#: acquisition, whose stored slice axis must stay the slice axis.
SLICE_ANISOTROPY = 1.5
#: HVSMR 2016 views; every training patient comes in all three (same anatomy).
HVSMR_VIEWS = ("axial_crop", "axial_full", "sa_crop")
#: The view PCL used (short-axis, cropped around the heart).
HVSMR_VIEW = "sa_crop"
_PATIENT = re.compile(r"^patient\d{3}$")
_HVSMR = re.compile(r"^(training|testing)_(axial_full|axial_crop|sa_crop)_pat(\d+)$")
_MMWHS = re.compile(r"^(ct|mr)_(train|test)_\d+_image$")


@dataclass
class VolumeItem:
    """One volume to prepare (a 3-D NIfTI, or one frame of a 4-D cine NIfTI).

    Attributes:
        volume_id, patient_id: SliceSet metadata.
        image: the image file; ``label`` its label map (None: unlabelled).
        frame: 1-based cine frame (ACDC numbering); None for a 3-D file. For a 4-D ``image``
            without ``frame`` every frame becomes a volume.
        extra: further metadata columns.
    """

    volume_id: str
    patient_id: str
    image: Path
    label: Path | None = None
    frame: int | None = None
    extra: dict = field(default_factory=dict)


# --- ACDC -------------------------------------------------------------------------------------


def read_info_cfg(path: Path) -> dict[str, str]:
    """ACDC ``Info.cfg`` (``Key: value`` lines) as a dict; a line without ``:`` is an error."""
    info = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}, line {number}: expected 'Key: value', got {line!r}")
        info[key.strip()] = value.strip()
    return info


def scan_acdc(source: str | Path, frames: str = "labelled") -> Scan:
    """ACDC ``.../patientXXX/`` folders (any depth, e.g. ``training/`` and ``testing/``) with
    ``Info.cfg`` (ED, ES), ``patientXXX_frameYY.nii.gz`` + ``_gt`` at ED and ES (``frames=
    "labelled"``) or ``patientXXX_4d.nii.gz`` (``frames="all"``: every cine frame, unlabelled).
    Hidden folders and macOS archive debris (``__MACOSX/.../patientXXX/``) are skipped."""
    if frames not in ("labelled", "all"):
        raise ValueError(f"acdc: frames must be 'labelled' or 'all', got {frames!r}")
    source = source_folder(source)
    folders = sorted(
        (
            p
            for p in source.rglob("patient*")
            if p.is_dir() and _PATIENT.match(p.name) and not is_hidden(p.relative_to(source))
        ),
        key=lambda p: p.name,
    )
    if not folders:
        return Scan([f"no patientXXX folders under {source} (expected e.g. training/patient001/)"])
    problems, items, notes, no_cine = [], [], [], 0
    for folder in folders:
        patient, cfg = folder.name, folder / "Info.cfg"
        if not cfg.is_file():
            problems.append(f"missing {cfg}")
            continue
        info = read_info_cfg(cfg)
        phases = {}
        for key in ("ED", "ES"):
            try:
                phases[key] = int(info[key])
            except (KeyError, ValueError):
                problems.append(f"{cfg}: no integer {key} frame (got {info.get(key)!r})")
        extra = {"split": folder.parent.name, "group": info.get("Group", "")}
        cine = folder / f"{patient}_4d.nii.gz"
        no_cine += not cine.is_file()
        if frames == "all":
            if not cine.is_file():
                problems.append(f"missing {cine}")
            else:
                items.append(VolumeItem(patient, patient, cine, extra={**extra, **phases}))
            continue
        for key, number in phases.items():
            image = folder / f"{patient}_frame{number:02d}.nii.gz"
            label = folder / f"{patient}_frame{number:02d}_gt.nii.gz"
            problems += [f"missing {p}" for p in (image, label) if not p.is_file()]
            items.append(
                VolumeItem(
                    f"{patient}_frame{number:02d}",
                    patient,
                    image,
                    label,
                    frame=number,
                    extra={**extra, "phase": key},
                )
            )
    notes.append(f"{len(items)} volumes of {len({i.patient_id for i in items})} patients")
    if frames == "labelled" and no_cine:
        notes.append(f"{no_cine} patients have no patientXXX_4d.nii.gz (needed for frames=all)")
    return Scan(problems, items, notes=notes)


def prepare_acdc(
    source: str | Path,
    size: int = 256,
    progress: bool = True,
    frames: str = "labelled",
    spacing_mm: float | None = ACDC_SPACING_MM,
    max_patients: int | None = None,
) -> SliceSet:
    """ACDC cine MRI -> SliceSet with the phantom's classes (background, lv, myocardium, rv).

    ``frames="labelled"``: the ED and ES volumes with masks (column ``phase``); ``"all"``: every
    cine frame of ``patientXXX_4d.nii.gz``, unlabelled (PCL pretraining). Column ``frame`` holds
    the 1-based cine frame. ``max_patients`` keeps the first patients (by name); all frames at
    256 px need about 10 GB of memory.
    """
    source = source_folder(source)
    data = _prepare_scanned(
        scan_acdc(source, frames),
        source,
        size,
        name="acdc",
        modality="mri",
        spacing_mm=spacing_mm,
        label_map=ACDC_TO_CARDIAC if frames == "labelled" else None,
        classes=CARDIAC_CLASSES,
        progress=progress,
        max_patients=max_patients,
    )
    data.info.update({"frames": frames, "label_source": "ACDC 1 RV, 2 MYO, 3 LV remapped"})
    return data


# --- CT image / label pairs (CHD, MM-WHS, HVSMR) ----------------------------------------------


def scan_nifti_pairs(
    source: str | Path, image_suffix: str = "_image", label_suffix: str = "_label"
) -> Scan:
    """NIfTI images below ``source`` whose name (without ``.nii``/``.nii.gz``) ends with
    ``image_suffix`` (``""``: every NIfTI that is not a label), each with the label file of the
    same name ending with ``label_suffix``: next to the image, else the one file of that name
    anywhere below ``source`` (e.g. ``image/`` and ``label/`` or ``GroundTruth/`` folders)."""
    source = source_folder(source)
    files = _nifti_files(source)
    images = [
        p for p in files if _stem(p).endswith(image_suffix) and not _stem(p).endswith(label_suffix)
    ]
    if not images:
        return Scan([f"no NIfTI images named *{image_suffix}.nii.gz under {source}"])
    problems, items = _pair_items(source, files, images, image_suffix, label_suffix)
    return Scan(problems, items, notes=[f"{len(items)} image/label volume pairs"])


def scan_hvsmr(source: str | Path, view: str | None = HVSMR_VIEW) -> Scan:
    """HVSMR 2016 training volumes ``training_{view}_patN.nii.gz`` with
    ``training_{view}_patN-label.nii.gz`` (next to them or in another folder, e.g.
    ``GroundTruth/``); ``patient_id`` is ``patN``.

    Every patient comes in three views of the same anatomy (:data:`HVSMR_VIEWS`), so one view is
    kept (default :data:`HVSMR_VIEW`, PCL's ``sa_crop``; ``view=None``: every ``NAME.nii.gz`` +
    ``NAME-label.nii.gz`` pair, any names; the views of one patient then share its
    ``patient_id``). ``testing_*`` volumes have no public labels and are skipped (a note says
    how many).
    """
    if view is not None and view not in HVSMR_VIEWS:
        raise ValueError(f"hvsmr: view must be one of {HVSMR_VIEWS} or None, got {view!r}")
    source = source_folder(source)
    files = _nifti_files(source)
    images, skipped, notes = [], 0, []
    for path in files:
        stem = _stem(path)
        if stem.endswith("-label"):
            continue
        match = _HVSMR.match(stem)
        if match and match.group(1) == "testing":
            skipped += 1
        elif view is None or (match and match.group(2) == view):
            images.append(path)
    if not images:
        wanted = "NAME.nii.gz" if view is None else f"training_{view}_patN.nii.gz"
        return Scan([f"no HVSMR images named {wanted} under {source}"])
    problems, items = _pair_items(source, files, images, "", "-label")
    for item in items:
        match = _HVSMR.match(item.volume_id)
        if match:
            item.patient_id = f"pat{int(match.group(3))}"
            item.extra["view"] = match.group(2)
    notes.append(f"{len(items)} image/label volume pairs of {len({i.patient_id for i in items})}"
                 f" patients" + ("" if view is None else f" (view {view})"))  # fmt: skip
    if skipped:
        notes.append(f"{skipped} testing_* volumes skipped (no public labels)")
    return Scan(problems, items, notes=notes)


def scan_mmwhs(source: str | Path) -> Scan:
    """MM-WHS CT training pairs ``ct_train_XXXX_image.nii.gz`` + ``ct_train_XXXX_label.nii.gz``
    (as :func:`scan_nifti_pairs`); the release's other volumes (``mr_train_*``, ``ct_test_*``,
    ``mr_test_*``, other ``*_image`` names) are skipped and counted in a note."""
    return _scan_mmwhs(source)[0]


def _scan_mmwhs(source: str | Path) -> tuple[Scan, dict[str, int]]:
    """:func:`scan_mmwhs` and the skipped volumes per kind (``{"mr_train_*": 20, ...}``)."""
    source = source_folder(source)
    files = _nifti_files(source)
    images, skipped = [], {}
    for path in files:
        stem = _stem(path)
        if not stem.endswith("_image"):
            continue
        match = _MMWHS.match(stem)
        kind = f"{match.group(1)}_{match.group(2)}_*" if match else "other *_image"
        if kind == "ct_train_*":
            images.append(path)
        else:
            skipped[kind] = skipped.get(kind, 0) + 1
    skipped = dict(sorted(skipped.items()))
    notes = [_skipped_note(skipped)] if skipped else []
    if not images:
        problem = f"no MM-WHS CT training images ct_train_XXXX_image.nii.gz under {source}"
        return Scan([problem], notes=notes), skipped
    problems, items = _pair_items(source, files, images, "_image", "_label")
    notes.insert(0, f"{len(items)} CT training image/label volume pairs")
    return Scan(problems, items, notes=notes), skipped


def _skipped_note(skipped: dict[str, int]) -> str:
    """``{"ct_test_*": 40, "mr_train_*": 20}`` -> "40 ct_test_* and 20 mr_train_* volumes
    skipped (only ct_train_* is prepared)"."""
    parts = [f"{n} {kind}" for kind, n in skipped.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{listed} volumes skipped (only ct_train_* is prepared)"


def prepare_nifti_pairs(
    source: str | Path,
    size: int = 256,
    progress: bool = True,
    image_suffix: str = "_image",
    label_suffix: str = "_label",
    spacing_mm: float | None = None,
    name: str = "ct",
    modality: str = "ct",
    label_map: dict[int, int] | None = None,
    classes: tuple[str, ...] | None = None,
) -> SliceSet:
    """Image/label NIfTI pairs -> SliceSet (intensity: see the module doc; ``modality="ct"``
    adds the percentile clip).

    ``label_map`` maps stored label values to class indices into ``classes`` (a value not in it
    is an error); without it the stored values are kept and ``classes`` defaults to
    ``background, label_1, ... label_K`` (K the largest value found).
    """
    source = source_folder(source)
    return _prepare_scanned(
        scan_nifti_pairs(source, image_suffix, label_suffix),
        source,
        size,
        name=name,
        modality=modality,
        spacing_mm=spacing_mm,
        label_map=label_map,
        classes=classes,
        progress=progress,
    )


def prepare_chd(
    source: str | Path, size: int = 256, progress: bool = True, spacing_mm: float | None = None
) -> SliceSet:
    """ImageCHD CT (``ct_XXXX_image.nii.gz`` + ``ct_XXXX_label.nii.gz``) -> SliceSet with
    :data:`MMWHS_CLASSES` (:data:`CHD_TO_CLASSES`).

    Stored values above :data:`CHD_LAST_LABEL` (other structures) become background, as in PCL's
    preprocessing; ``info["set_to_background"]`` lists them with their voxel counts.
    """
    source = source_folder(source)
    data = _prepare_scanned(
        scan_chd(source),
        source,
        size,
        name="chd",
        modality="ct",
        spacing_mm=spacing_mm,
        label_map=CHD_TO_CLASSES,
        classes=MMWHS_CLASSES,
        progress=progress,
        background_above=CHD_LAST_LABEL,
    )
    data.info["label_source"] = (
        "ImageCHD 1 LV, 2 RV, 3 LA, 4 RA, 5 myocardium, 6 aorta, 7 pulmonary artery remapped to"
        f" the MM-WHS class order; values above {CHD_LAST_LABEL} set to background"
    )
    return data


def prepare_mmwhs(
    source: str | Path, size: int = 256, progress: bool = True, spacing_mm: float | None = None
) -> SliceSet:
    """MM-WHS CT training set (:func:`scan_mmwhs`), labels 500, 205, 600, 420, 550, 820, 850 ->
    :data:`MMWHS_CLASSES`; ``info["skipped_volumes"]`` counts the volumes of other kinds."""
    source = source_folder(source)
    scan, skipped = _scan_mmwhs(source)
    data = _prepare_scanned(
        scan,
        source,
        size,
        name="mmwhs",
        modality="ct",
        spacing_mm=spacing_mm,
        label_map=MMWHS_TO_CLASSES,
        classes=MMWHS_CLASSES,
        progress=progress,
    )
    data.info.update({"skipped_volumes": skipped, "notes": scan.notes})
    return data


def prepare_hvsmr(
    source: str | Path,
    size: int = 256,
    progress: bool = True,
    spacing_mm: float | None = None,
    view: str | None = HVSMR_VIEW,
) -> SliceSet:
    """HVSMR 2016 cardiovascular MR, one ``view`` (see :func:`scan_hvsmr`), z-scored as MRI (no
    percentile clip), labels 1 myocardium, 2 blood pool -> :data:`HVSMR_CLASSES` (any other
    value is an error). Column ``view`` names the HVSMR view."""
    source = source_folder(source)
    data = _prepare_scanned(
        scan_hvsmr(source, view),
        source,
        size,
        name="hvsmr",
        modality="mri",
        spacing_mm=spacing_mm,
        label_map=HVSMR_TO_CLASSES,
        classes=HVSMR_CLASSES,
        progress=progress,
    )
    data.info["view"] = view if view is not None else "all"
    data.info["label_source"] = "HVSMR 2016 1 myocardium, 2 blood pool"
    return data


def scan_chd(source: str | Path) -> Scan:
    """Layout check of :func:`prepare_chd` (ImageCHD ``ct_XXXX_image`` / ``_label`` pairs)."""
    return scan_nifti_pairs(source)


def _nifti_files(source: Path) -> list[Path]:
    return [p for p in find_files(source, [".nii", ".gz"]) if _suffix(p) in NIFTI_SUFFIXES]


def _pair_items(
    source: Path, files: list[Path], images: list[Path], image_suffix: str, label_suffix: str
) -> tuple[list[str], list[VolumeItem]]:
    """One :class:`VolumeItem` per image with its label (see :func:`scan_nifti_pairs`)."""
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)
    problems, items = [], []
    for image in images:
        base = _stem(image)[: len(_stem(image)) - len(image_suffix)]
        label = image.with_name(base + label_suffix + _suffix(image))
        if not label.is_file():
            found = by_name.get(label.name, [])
            if len(found) == 1:
                label = found[0]
            elif found:
                shown = ", ".join(str(p) for p in found)
                problems.append(f"several labels named {label.name} for image {image}: {shown}")
            else:
                problems.append(
                    f"missing label {label} for image {image} (no {label.name} below {source})"
                )
        extra = {"source_file": str(image.relative_to(source))}
        items.append(VolumeItem(base, base, image, label, extra=extra))
    return problems, items


# --- shared steps -----------------------------------------------------------------------------


def to_unit(volume: np.ndarray, path: Path, modality: str) -> np.ndarray:
    """``[D, H, W]`` -> float32 in [0, 1]: (CT: percentile clip,) z-score, clip, rescale."""
    values = volume.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"volume {path} holds NaN or infinite values")
    if modality == "ct":
        values = np.clip(values, *np.percentile(values, CT_PERCENTILES))
    std = float(values.std())
    if std <= 0:
        raise ValueError(f"volume {path} is constant (every voxel {values.flat[0]:g})")
    z = np.clip((values - values.mean()) / std, -Z_CLIP, Z_CLIP)
    return ((z + Z_CLIP) / (2 * Z_CLIP)).astype(np.float32)


def fit_slice(
    image: np.ndarray,
    labels: np.ndarray | None,
    spacing_yx: tuple[float, float],
    size: int,
    spacing_mm: float | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """One slice ``[H, W]`` -> ``[size, size]`` (and its labels), with the new (dy, dx) in mm."""
    if spacing_mm is None:
        side = max(image.shape)
        out = resize_image(pad_to_square(image), size)
        mask = None if labels is None else resize_labels(pad_to_square(labels), size)
        return out, mask, (spacing_yx[0] * side / size, spacing_yx[1] * side / size)
    from skimage.transform import resize

    shape = tuple(
        max(1, round(n * s / spacing_mm)) for n, s in zip(image.shape, spacing_yx, strict=True)
    )
    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    image = resize(image, shape, order=1, anti_aliasing=shrink, preserve_range=True)
    out = _crop_or_pad(np.clip(image, 0.0, 1.0).astype(np.float32), size)
    mask = None
    if labels is not None:
        labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True)
        mask = _crop_or_pad(labels.astype(np.uint8), size)
    return out, mask, (float(spacing_mm), float(spacing_mm))


def _crop_or_pad(array: np.ndarray, size: int) -> np.ndarray:
    """Centre crop or zero-pad ``[H, W]`` to ``[size, size]``."""
    out = np.zeros((size, size), array.dtype)
    h, w = array.shape
    src_y, dst_y = max(0, (h - size) // 2), max(0, (size - h) // 2)
    src_x, dst_x = max(0, (w - size) // 2), max(0, (size - w) // 2)
    n_y, n_x = min(h, size), min(w, size)
    out[dst_y : dst_y + n_y, dst_x : dst_x + n_x] = array[src_y : src_y + n_y, src_x : src_x + n_x]
    return out


def _background_above(labels: np.ndarray, last: int) -> tuple[np.ndarray, dict[int, int]]:
    """``labels`` with every value above ``last`` set to 0, and ``{value: voxels}`` so set."""
    above = labels > last
    if not above.any():
        return labels, {}
    values, counts = np.unique(labels[above], return_counts=True)
    return np.where(above, 0, labels), {int(v): int(n) for v, n in zip(values, counts, strict=True)}


def _map_labels(labels: np.ndarray, label_map: dict[int, int] | None, path: Path) -> np.ndarray:
    values = np.unique(labels)
    if label_map is None:
        if values.min() < 0 or values.max() > 255:
            raise ValueError(f"label {path} holds values {values.tolist()[:10]}, outside 0..255")
        return labels.astype(np.uint8)
    unknown = [int(v) for v in values if int(v) not in label_map]
    if unknown:
        raise ValueError(
            f"label {path} holds values {unknown[:10]} that are not classes of this dataset"
            f" (known: {sorted(label_map)})"
        )
    lut = np.zeros(max(label_map) + 1, np.uint8)
    for value, index in label_map.items():
        lut[value] = index
    return lut[labels.astype(np.int64)]


def to_display(volume: np.ndarray) -> np.ndarray:
    """RAS+ ``[D, H, W]`` (inferior->superior, posterior->anterior, left->right) -> display
    order (:data:`DISPLAY_ORIENTATION`): every axis reversed, i.e. slices superior->inferior and
    each slice rotated by 180 degrees (anterior up, patient's right on the image left)."""
    return np.ascontiguousarray(volume[::-1, ::-1, ::-1])


def _voxel_order(path: Path) -> tuple[str, tuple[tuple[int, int], ...] | None, bool]:
    """How a volume file is read: ``(mode, order, superior_last)``.

    ``mode`` is ``"display"`` (oriented: RAS+, then :func:`to_display`), ``"stored"`` (NIfTI
    without qform/sform: stored order kept) or ``"stack"`` (an oblique multi-slice stack whose
    stored slice axis must stay the slice axis, see the module doc). ``order`` gives, for each
    voxel axis, ``(output axis (0 R, 1 A, 2 S), +1 or -1 when reversed)`` on reading (None when
    unknown: a DICOM series, or a degenerate affine the reader reports). ``superior_last``: the
    stored slice axis points superior (so reversing it puts the most superior slice first).
    """
    if path.is_dir():
        return "display", None, False
    import nibabel as nib
    from nibabel.orientations import io_orientation

    nifti = nib.load(str(path))
    header = nifti.header
    if not (int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0):
        return "stored", ((0, 1), (1, 1), (2, 1)), False
    ornt = io_orientation(nifti.affine)
    if np.isnan(ornt).any() or len(nifti.shape) < 3:
        return "display", None, False  # the reader names the file and the degenerate axis
    order = tuple((int(axis), int(flip)) for axis, flip in ornt)
    zooms = [float(z) if z > 0 else 1.0 for z in header.get_zooms()[:3]]
    superior_last = bool(nifti.affine[2, 2] > 0)
    if order[2][0] != 2 and zooms[2] > SLICE_ANISOTROPY * max(zooms[:2]):
        return "stack", order, superior_last
    return "display", order, superior_last


def _to_stack(volume: np.ndarray, order, superior_last: bool) -> np.ndarray:
    """RAS+ ``[D, H, W]`` of an oblique stack -> ``[k, j, i]`` in stored voxel order, the stored
    slice axis ``k`` first and reversed when it points superior (slice 0 the most superior)."""
    ras = volume.T  # [R, A, S] output axes
    for axis, flip in order:
        if flip < 0:
            ras = np.flip(ras, axis=axis)
    stored = ras.transpose([axis for axis, _ in order])  # [i, j, k]
    stack = stored.transpose(2, 1, 0)
    return np.ascontiguousarray(stack[::-1] if superior_last else stack)


def _stack_spacing(spacing: tuple[float, float, float], order) -> tuple[float, float, float]:
    """Spacing ``(dz, dy, dx)`` of RAS+ axes -> ``(dk, dj, di)`` of the stored axes."""
    ras = tuple(reversed(spacing))
    stored = [ras[axis] for axis, _ in order]
    return (stored[2], stored[1], stored[0])


def _read_item(item: VolumeItem):
    """Yield ``(frame, image [D, H, W], labels or None, spacing (dz, dy, dx), mode)`` of one
    item (``mode`` from :func:`_voxel_order`), in display order when the file is oriented."""
    mode, order, superior_last = _voxel_order(item.image)

    def arrange(volume: np.ndarray) -> np.ndarray:
        if mode == "display":
            return to_display(volume)
        return _to_stack(volume, order, superior_last) if mode == "stack" else volume

    def arrange_spacing(spacing):
        return _stack_spacing(spacing, order) if mode == "stack" else tuple(spacing)

    if item.label is not None:
        label_mode, label_order, _ = _voxel_order(item.label)
        if order is not None and label_order is not None and order != label_order:
            raise ValueError(
                f"image {item.image} and label {item.label} store their axes in different"
                f" orders ((R/A/S axis, direction) per voxel axis: {list(order)} vs"
                f" {list(label_order)}"
                f"{'; only one carries an orientation' if 'stored' in (mode, label_mode) else ''})"
            )
        image, label = read_volume_pair(item.image, item.label)
        yield (item.frame, arrange(image.array), arrange(label.array),
               arrange_spacing(image.spacing), mode)  # fmt: skip
        return
    import nibabel as nib

    nifti = nib.load(str(item.image))
    data = np.asarray(np.asanyarray(nifti.dataobj))
    one_frame = data.ndim == 3  # a 3-D file: no cine frame to name
    if one_frame:
        data = data[..., None]
    if data.ndim != 4:
        raise ValueError(f"{item.image} has shape {data.shape}: expected a 3-D or 4-D NIfTI")
    zooms = [float(z) if z > 0 else 1.0 for z in nifti.header.get_zooms()[:3]]
    for t in range(data.shape[3]):
        volume, spacing = data[..., t], zooms
        if mode != "stored":  # reordered as read_image does, then arranged
            volume, spacing = _canonical_axes(volume, nifti.affine, zooms, item.image)
        volume = np.ascontiguousarray(volume.T)  # [i, j, k] -> [D, H, W]
        frame = None if one_frame else t + 1
        yield frame, arrange(volume), None, arrange_spacing(tuple(reversed(spacing))), mode


def _first_patients(items: list[VolumeItem], max_patients: int | None) -> list[VolumeItem]:
    if max_patients is None:
        return items
    if not isinstance(max_patients, (int, np.integer)) or max_patients < 1:
        raise ValueError(f"max_patients must be an integer >= 1 or None, got {max_patients!r}")
    keep = sorted({i.patient_id for i in items})[:max_patients]
    return [i for i in items if i.patient_id in keep]


def _prepare_scanned(
    scan: Scan,
    source: Path,
    size: int,
    *,
    name: str,
    max_patients: int | None = None,
    **build,
) -> SliceSet:
    """What every ``prepare_*`` does after its scan: raise the ``scan``'s problems (of the
    ``source`` folder, dataset ``name``), keep the first ``max_patients`` patients and
    :func:`_build` the rest (``build``: its keyword arguments)."""
    scan.raise_problems(name, source)
    return _build(_first_patients(scan.items, max_patients), size, name=name, **build)


def _build(
    items: list[VolumeItem],
    size: int,
    *,
    name: str,
    modality: str,
    spacing_mm: float | None,
    label_map: dict[int, int] | None,
    classes: tuple[str, ...] | None,
    progress: bool,
    background_above: int | None = None,
) -> SliceSet:
    """Read, normalise and fit every volume of ``items`` into one SliceSet of slices.

    Extra columns: ``modality``, ``frame`` (1-based cine frame, -1 for 3-D files), the items'
    ``extra`` (ACDC: ``phase`` ED / ES / "", ``split``, ``group``; pairs: ``source_file``;
    HVSMR: ``view``), ``orig_height``, ``orig_width``, ``orig_spacing_x``, ``orig_spacing_y``
    (mm). Slices are in display order (module doc, "orientation"). With ``background_above``,
    stored label values above it become 0 before ``label_map``; ``info["set_to_background"]``
    lists each such value with its voxels (in the stored volumes) and volumes.
    """
    from tqdm.auto import tqdm

    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if spacing_mm is not None and not float(spacing_mm) > 0:
        raise ValueError(f"spacing_mm must be > 0 or None, got {spacing_mm!r}")
    if not items:
        raise ValueError(f"{name}: no volumes to prepare")
    labelled = items[0].label is not None
    images, masks, rows, unoriented, stacks = [], [], [], [], []
    dropped: dict[int, list[int]] = {}  # value set to background -> [voxels, volumes]
    for item in tqdm(items, desc=f"preparing {name}", disable=not progress):
        for frame, volume, labels, (dz, dy, dx), mode in _read_item(item):
            volume = to_unit(volume, item.image, modality)
            if labels is not None and background_above is not None:
                labels, counts = _background_above(labels, background_above)
                for value, voxels in counts.items():
                    total = dropped.setdefault(value, [0, 0])
                    total[0], total[1] = total[0] + voxels, total[1] + 1
            if labels is not None:
                labels = _map_labels(labels, label_map, item.label)
            volume_id = (
                item.volume_id if item.frame or frame is None else f"{item.volume_id}_t{frame:02d}"
            )
            kept = {"stored": unoriented, "stack": stacks}.get(mode)
            if kept is not None and item.volume_id not in kept:
                kept.append(item.volume_id)
            n = volume.shape[0]
            for k in range(n):
                image, mask, (sy, sx) = fit_slice(
                    volume[k], None if labels is None else labels[k], (dy, dx), size, spacing_mm
                )
                images.append(image)
                masks.append(mask)
                extra = dict(item.extra)
                if "ED" in extra:  # a cine frame: name its phase
                    ed, es = extra.pop("ED"), extra.pop("ES", None)
                    extra["phase"] = "ED" if frame == ed else "ES" if frame == es else ""
                rows.append(
                    {
                        "sample_id": f"{volume_id}_s{k:02d}",
                        "patient_id": item.patient_id,
                        "site": name,
                        "time": 0,
                        "volume_id": volume_id,
                        "slice_index": k,
                        "n_slices": n,
                        "depth": (k + 1) / n,
                        "spacing_x": sx,
                        "spacing_y": sy,
                        "spacing_z": float(dz),
                        "modality": modality,
                        "frame": -1 if frame is None else int(frame),
                        **extra,
                        "orig_height": int(volume.shape[1]),
                        "orig_width": int(volume.shape[2]),
                        "orig_spacing_x": float(dx),
                        "orig_spacing_y": float(dy),
                    }
                )
    mask_array = np.stack(masks) if labelled else None
    if classes is None:
        top = int(mask_array.max()) if mask_array is not None else 0
        classes = ("background", *(f"label_{i}" for i in range(1, top + 1)))
    info = {
        "modality": modality,
        "image_size": int(size),
        "intensity": (
            f"CT clipped to percentiles {list(CT_PERCENTILES)}, then " if modality == "ct" else ""
        )
        + f"per-volume z-score clipped to [-{Z_CLIP:g}, {Z_CLIP:g}], mapped to [0, 1]",
        "geometry": "zero-pad to a centred square, then resize"
        if spacing_mm is None
        else f"in-plane resampling to {float(spacing_mm):g} mm, centre crop / zero-pad",
        "resampling": "images linear (anti-aliased when shrinking); masks nearest",
        "orientation": DISPLAY_ORIENTATION,
    }
    if unoriented:
        info["unoriented_volumes"] = unoriented  # no qform / sform: stored order kept
    if stacks:
        info["oblique_stacks"] = stacks  # stored slice axis (superior first), stored in-plane
    if background_above is not None:
        info["set_to_background"] = [
            {"value": value, "voxels": voxels, "volumes": volumes}
            for value, (voxels, volumes) in sorted(dropped.items())
        ]
    return SliceSet(np.stack(images), mask_array, pd.DataFrame(rows), tuple(classes), name, info)


def _stem(path: Path) -> str:
    return path.name[: -len(_suffix(path))]
