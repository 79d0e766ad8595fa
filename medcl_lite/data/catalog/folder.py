"""Your own data: a Decathlon / nnU-Net folder of volumes, or a folder of 2-D images and masks.

``medcl data prepare folder --source DIR`` turns either layout into prepared folders (the format
of :mod:`medcl_lite.data.prepared`), which every chapter's ``*_data`` parameter accepts:

**Volumes** (Medical Segmentation Decathlon, nnU-Net v1/v2 raw datasets)::

    DIR/dataset.json          "labels" (v2: {"background": 0, "liver": 1}; v1: {"0": "background"}),
                              "channel_names" (v2) or "modality" (v1): {"0": "CT"}
    DIR/imagesTr/CASE_0000.nii.gz   one file per channel (suffix _XXXX), or CASE.nii.gz (MSD)
    DIR/labelsTr/CASE.nii.gz        the label map of CASE (values listed in dataset.json)
    DIR/imagesTs/...                optional, unlabelled: pretraining only

**2-D images**::

    DIR/images/NAME.png|.jpg|.jpeg|.dcm     images (grey; DICOM with its VOI window)
    DIR/masks/NAME.png (or NAME_mask.png)   class indices 0..K-1 (0/255 for one class)
    DIR/meta.csv                            optional: case, patient_id, time, site

Rules, as for the named datasets: a volume is one patient unless ``meta.csv`` says otherwise
(``case`` = the case or image name without suffix), slices carry ``depth = (slice_index + 1) /
n_slices`` (PCL eq. 1), one channel is prepared (``channel``, default 0: a chapter trains on grey
images). Images without a label map (imagesTs, or no mask of that name) are unlabelled: they go
to the pretraining pool only. So :func:`prepare_folder` returns two sets: the labelled one (the
fine-tuning set, written at ``OUT``) and, when some images are unlabelled, the pool of every
image without masks (written at ``OUT-pool``).

Refused, naming the file: an empty folder or unknown layout, an unreadable image, image / label
shape or spacing mismatch, a non-integer label map, a label value that ``dataset.json`` (or
``classes``) does not list, a label without its image, a ``meta.csv`` that misses cases.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medcl_lite.data.catalog._common import (
    Item,
    Scan,
    build_sliceset,
    find_files,
    read_array,
    read_table,
    source_folder,
)
from medcl_lite.data.catalog.volumes import VolumeItem, _build, _nifti_files, _stem
from medcl_lite.data.io import DICOM_SUFFIXES, PNG_JPEG_SUFFIXES
from medcl_lite.data.sliceset import SliceSet, concat

IMAGE_SUFFIXES = (*PNG_JPEG_SUFFIXES, *DICOM_SUFFIXES)
MASK_SUFFIXES = (".png",)
#: Endings a 2-D mask name may add to its image's name.
MASK_ENDINGS = ("", "_mask", "_label", "_seg")
#: Suffix of the folder that holds the pretraining pool, next to the labelled set.
POOL_SUFFIX = "-pool"
META_FILE = "meta.csv"
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CT_NAMES = ("ct",)


@dataclass(frozen=True)
class Labels:
    """What a label map holds: ``classes`` (background first) and stored value -> class index."""

    classes: tuple[str, ...]
    value_to_class: dict[int, int]


def detect_layout(source: Path) -> str | None:
    """``"volumes"`` (``dataset.json`` or ``imagesTr/``), ``"images"`` (``images/``) or None."""
    if (source / "dataset.json").is_file() or (source / "imagesTr").is_dir():
        return "volumes"
    if (source / "images").is_dir():
        return "images"
    return None


def scan_folder(source: str | Path, channel: int = 0) -> Scan:
    """Layout check of :func:`prepare_folder` (``medcl data check folder --source DIR``)."""
    source = source_folder(source)
    layout = detect_layout(source)
    if layout == "volumes":
        return scan_volumes(source, channel)
    if layout == "images":
        return scan_images(source)
    return Scan([f"{source} holds neither dataset.json / imagesTr/ (volumes, Decathlon or"
                 " nnU-Net layout) nor images/ (2-D images and masks); see"
                 " `medcl data check folder`"])  # fmt: skip


# --- dataset.json -------------------------------------------------------------------------------


def read_dataset_json(path: Path) -> tuple[Labels, dict[str, str]]:
    """``(labels, channels)`` of a Decathlon (v1) or nnU-Net v2 ``dataset.json``.

    ``labels`` maps values to names in v1 (``{"0": "background", "1": "liver"}``) and names to
    values in v2 (``{"background": 0, "liver": 1}``); classes are ordered by value, so stored
    values ``0, 1, 2, 5`` become class indices ``0, 1, 2, 3``. ``channels`` is ``channel_names``
    (v2) or ``modality`` (v1), e.g. ``{"0": "CT"}``.

    Raises:
        ValueError: unreadable JSON, no ``labels``, a region-based (list) label, no value 0.
    """
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {type(error).__name__}: {error}") from error
    stored = description.get("labels") if isinstance(description, dict) else None
    if not isinstance(stored, dict) or not stored:
        raise ValueError(f"{path} has no 'labels' mapping (e.g. {{\"background\": 0, \"liver\": 1}})")
    pairs = []
    for key, value in stored.items():
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: label {key!r} is region-based ({value}); give one value per class")
        try:  # v2: name -> value; v1: "value" -> name
            pairs.append((int(value), str(key)) if not _is_int(key) else (int(key), str(value)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: label {key!r}: {value!r} is not a class value") from error
    pairs.sort()
    values = [v for v, _ in pairs]
    if len(set(values)) != len(values) or values[0] != 0:
        raise ValueError(f"{path}: label values {values} must be distinct and include 0 (background)")
    channels = description.get("channel_names") or description.get("modality") or {}
    labels = Labels(tuple(n for _, n in pairs), {v: k for k, (v, _) in enumerate(pairs)})
    return labels, {str(k): str(v) for k, v in dict(channels).items()}


def _is_int(text: object) -> bool:
    try:
        int(str(text))
    except ValueError:
        return False
    return True


def modality_of(channels: dict[str, str], channel: int) -> str:
    """``"ct"`` when the channel's name says CT (percentile clip before the z-score), else
    ``"mri"`` (z-score only; MRI, PET, ... and unnamed channels)."""
    name = channels.get(str(channel), "").strip().lower()
    return "ct" if name in _CT_NAMES else "mri"


# --- volumes ------------------------------------------------------------------------------------


def scan_volumes(source: Path, channel: int = 0) -> Scan:
    """The volume layout (module doc): labelled items from ``imagesTr`` + ``labelsTr``, unlabelled
    ones from ``imagesTs`` and from ``imagesTr`` images without a label."""
    problems, notes = [], []
    if not isinstance(channel, (int, np.integer)) or channel < 0:
        raise ValueError(f"channel must be an integer >= 0, got {channel!r}")
    if not (source / "dataset.json").is_file():
        problems.append(f"missing {source / 'dataset.json'} (its 'labels' name the classes)")
    cases = {}
    for folder, labelled in (("imagesTr", True), ("imagesTs", False)):
        found, skipped = _cases(source / folder, channel)
        for case, path in found.items():
            if case in cases:
                problems.append(f"case {case!r} is in both imagesTr/ and imagesTs/: {path}")
            cases[case] = (path, labelled)
        if skipped:
            notes.append(f"{folder}/: {skipped} files of other channels skipped (channel {channel})")
    if not cases:
        problems.append(f"no NIfTI images in {source / 'imagesTr'} or {source / 'imagesTs'}")
    label_dir = source / "labelsTr"
    labels = {_stem(p): p for p in _nifti_files(label_dir)} if label_dir.is_dir() else {}
    for case, path in sorted(labels.items()):
        if case not in cases:
            problems.append(f"label {path} has no image {case}_{channel:04d}.nii.gz or {case}.nii.gz in imagesTr/")
    items, unlabelled_tr = [], 0
    for case, (path, in_train) in sorted(cases.items()):
        problems += _four_d(path)
        label = labels.get(case) if in_train else None
        unlabelled_tr += in_train and label is None
        extra = {"source_file": str(path.relative_to(source)), "split": "train" if in_train else "test"}
        items.append(VolumeItem(case, case, path, label, extra=extra))
    problems += _apply_meta(source, items, "volume_id")
    n_labelled = sum(i.label is not None for i in items)
    notes.insert(0, f"{n_labelled} labelled and {len(items) - n_labelled} unlabelled volumes")
    if unlabelled_tr:
        notes.append(f"{unlabelled_tr} imagesTr volumes have no label in labelsTr/: pretraining only")
    return Scan(problems, items, notes=notes)


def _cases(folder: Path, channel: int) -> tuple[dict[str, Path], int]:
    """Case name -> image file of ``channel`` (``CASE_XXXX``, or ``CASE`` without a suffix)."""
    if not folder.is_dir():
        return {}, 0
    found, skipped = {}, 0
    for path in _nifti_files(folder):
        match = _CHANNEL.match(_stem(path))
        if match is None:
            found[_stem(path)] = path
        elif int(match["channel"]) == channel:
            found[match["case"]] = path
        else:
            skipped += 1
    return found, skipped


def _four_d(path: Path) -> list[str]:
    """A problem when ``path`` holds several channels in one file (MSD v1 multi-modal tasks)."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as error:  # nibabel raises several types for a broken header
        return [f"cannot read {path}: {type(error).__name__}: {error}"]
    if len(shape) == 4 and shape[3] > 1:
        return [f"{path} holds {shape[3]} channels in one 4-D file; split it into one file per"
                " channel (nnU-Net layout, CASE_0000.nii.gz ...) and choose one with -o channel=K"]  # fmt: skip
    if len(shape) not in (3, 4):
        return [f"{path} has shape {shape}: expected a 3-D volume"]
    return []


def _prepare_volumes(source: Path, scan: Scan, size: int, progress: bool, name: str,
                     channel: int, spacing_mm: float | None, modality: str | None,
                     classes: list[str] | None) -> dict[str, SliceSet]:  # fmt: skip
    labels, channels = read_dataset_json(source / "dataset.json")
    if classes is not None:
        labels = Labels(_class_names(classes, len(labels.classes)), labels.value_to_class)
    modality = modality or modality_of(channels, channel)
    labelled = [i for i in scan.items if i.label is not None]
    build = dict(size=size, name=name, modality=modality, spacing_mm=spacing_mm,
                 progress=progress)  # fmt: skip
    parts = {}
    if labelled:
        parts[""] = _build(labelled, label_map=labels.value_to_class, classes=labels.classes, **build)
    unlabelled = [i for i in scan.items if i.label is None]
    if unlabelled:
        rest = _build(unlabelled, label_map=None, classes=labels.classes, **build)
        parts[POOL_SUFFIX if labelled else ""] = _pool(parts.get(""), rest, scan.items, "volume_id")
    for data in parts.values():
        data.info.update({"layout": "volumes (Decathlon / nnU-Net)", "channel": channel,
                          "channel_name": channels.get(str(channel), "")})  # fmt: skip
    return parts


# --- 2-D images ---------------------------------------------------------------------------------


def scan_images(source: Path) -> Scan:
    """The 2-D layout (module doc): ``images/`` with masks of the same name in ``masks/``."""
    problems, notes = [], []
    image_files = find_files(source / "images", IMAGE_SUFFIXES)
    if not image_files:
        return Scan([f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source / 'images'}"])
    by_name: dict[str, Path] = {}
    for path in image_files:
        key = path.stem
        if key in by_name:
            problems.append(f"two images named {key!r}: {by_name[key]} and {path}")
        by_name[key] = path
    mask_dir = source / "masks"
    masks = {p.stem: p for p in find_files(mask_dir, MASK_SUFFIXES)} if mask_dir.is_dir() else {}
    used, items = set(), []
    for key, path in sorted(by_name.items()):
        found = [key + e for e in MASK_ENDINGS if key + e in masks]
        if len(found) > 1:
            problems.append(f"image {path} has several masks: {[str(masks[k]) for k in found]}")
        used.update(found)
        mask = (masks[found[0]],) if found else ()
        extra = {"source_file": str(path.relative_to(source))}
        items.append(Item(_safe_id(key), _safe_id(key), 0, path, mask, extra=extra))
    for key in sorted(set(masks) - used):
        problems.append(f"mask {masks[key]} has no image of that name in {source / 'images'}")
    if len({i.sample_id for i in items}) < len(items):
        problems.append("image names differ only in characters outside [A-Za-z0-9._-]; rename them")
    problems += _apply_meta(source, items, "sample_id")
    n_labelled = sum(bool(i.masks) for i in items)
    notes.append(f"{n_labelled} images with masks and {len(items) - n_labelled} without (pretraining only)")
    return Scan(problems, items, notes=notes)


class _MaskReader:
    """Label function of :func:`build_sliceset`: a mask file -> class indices ``[H, W]``.

    Values must be class indices ``0 .. n_classes - 1``; a 0/255 mask with two classes (one
    foreground) is read as 0/1. Without ``n_classes`` (no class names given) the values are kept
    and the largest value seen decides the classes.
    """

    def __init__(self, n_classes: int | None):
        self.n_classes, self.largest, self.binary_255 = n_classes, 0, 0

    def __call__(self, item: Item) -> np.ndarray:
        path = item.masks[0]
        array = np.asarray(read_array(path))
        if array.ndim == 3 and array.shape[-1] in (3, 4) and _is_grey(array):
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"mask {path} has shape {array.shape}: expected one class index per pixel (grey PNG)")
        values = np.unique(array)
        if self.n_classes == 2 and set(values.tolist()) <= {0, 255}:
            self.binary_255 += 1
            return (array == 255).astype(np.uint8)
        top = int(values.max())
        limit = 255 if self.n_classes is None else self.n_classes - 1
        if values.min() < 0 or top > limit:
            bad = [int(v) for v in values if v < 0 or v > limit]
            raise ValueError(f"mask {path} holds values {bad[:10]} that are not class indices 0..{limit}"
                             + ("" if self.n_classes is None else f" ({self.n_classes} classes)"))  # fmt: skip
        self.largest = max(self.largest, top)
        return array.astype(np.uint8)


def _is_grey(array: np.ndarray) -> bool:
    return bool(np.all(array[..., 0] == array[..., 1]) and np.all(array[..., 0] == array[..., 2]))


def _prepare_images(source: Path, scan: Scan, size: int, progress: bool, name: str,
                    classes: list[str] | None) -> dict[str, SliceSet]:  # fmt: skip
    labelled = [i for i in scan.items if i.masks]
    names = None if classes is None else _class_names(classes, None)
    info = {"modality": "image", "layout": "2-D images and masks"}
    parts = {}
    if labelled:
        reader = _MaskReader(None if names is None else len(names))
        data = build_sliceset(labelled, size, name=name, classes=names or ("background",),
                              info=info, labels=reader, progress=progress)  # fmt: skip
        if names is None:
            data.classes = ("background", *(f"label_{k}" for k in range(1, reader.largest + 1)))
        if reader.binary_255:
            data.info["mask_values"] = f"0/255 read as 0/1 in {reader.binary_255} masks"
        parts[""] = data
    unlabelled = [i for i in scan.items if not i.masks]
    if unlabelled:
        classes_of_pool = parts[""].classes if parts else names or ("background",)
        rest = build_sliceset(unlabelled, size, name=name, classes=classes_of_pool, info=info,
                              progress=progress)  # fmt: skip
        parts[POOL_SUFFIX if labelled else ""] = _pool(parts.get(""), rest, scan.items, "sample_id")
    return parts


def _pool(labelled: SliceSet | None, unlabelled: SliceSet, items: list, key: str) -> SliceSet:
    """The pretraining pool: the ``labelled`` set's images without masks (read once, not again)
    and the ``unlabelled`` ones, in the order of the scanned ``items`` (by ``key``: their
    ``volume_id`` / ``sample_id``), with the unlabelled set's ``info``."""
    if labelled is None:
        return unlabelled
    pool = concat([replace(labelled, masks=None), unlabelled])
    position = {getattr(item, key): k for k, item in enumerate(items)}
    pool = pool.subset(np.argsort(pool.meta[key].map(position).to_numpy(), kind="stable"))
    pool.info = dict(unlabelled.info)
    return pool


# --- shared -------------------------------------------------------------------------------------


def _safe_id(text: str) -> str:
    """A file-name safe id (prepared folders name files by it)."""
    return _UNSAFE.sub("_", text).strip("_") or "image"


def _class_names(classes: list[str] | str, expected: int | None) -> tuple[str, ...]:
    """Class names from ``--classes`` (a list, or ``"a,b,c"``), background first."""
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    if len(names) < 2 or any(not n for n in names) or len(set(names)) < len(names):
        raise ValueError(f"classes {classes!r}: give at least two distinct names, background first")
    if expected is not None and len(names) != expected:
        raise ValueError(f"classes {names}: dataset.json lists {expected} label values")
    return tuple(names)


def _apply_meta(source: Path, items: list, id_field: str) -> list[str]:
    """Patient, time and site from ``source/meta.csv`` into ``items`` (problems listed)."""
    path = source / META_FILE
    if not path.is_file():
        return []
    try:
        table = read_table(path, [])
    except ValueError as error:
        return [str(error)]
    key = "case" if "case" in table.columns else "image" if "image" in table.columns else None
    if key is None:
        return [f"{path} needs a column 'case' (the case or image name without suffix)"]
    table[key] = [_safe_id(Path(str(v)).name.split(".")[0]) for v in table[key]]
    if table[key].duplicated().any():
        return [f"{path}: cases listed twice: {sorted(set(table[key][table[key].duplicated()]))[:5]}"]
    rows = table.set_index(key)
    missing = [getattr(i, id_field) for i in items if getattr(i, id_field) not in rows.index]
    if missing:
        return [f"{path} does not list {len(missing)} cases, e.g. {missing[:5]}"]
    problems = []
    for item in items:
        row = rows.loc[getattr(item, id_field)]
        if "patient_id" in rows.columns:
            item.patient_id = _safe_id(str(row["patient_id"]))
        if "site" in rows.columns:
            item.extra["site"] = str(row["site"])
        if "time" in rows.columns:
            if not _is_int(row["time"]) or int(row["time"]) < 0:
                problems.append(f"{path}: time {row['time']!r} of {getattr(item, id_field)} is not an integer >= 0")
            elif hasattr(item, "time"):
                item.time = int(row["time"])
            else:
                item.extra["time"] = int(row["time"])
    return problems


def prepare_folder(
    source: str | Path,
    size: int = 256,
    progress: bool = True,
    classes: list[str] | str | None = None,
    channel: int = 0,
    spacing_mm: float | None = None,
    modality: str | None = None,
    name: str | None = None,
) -> dict[str, SliceSet]:
    """A folder in one of the two layouts (module doc) -> ``{"": labelled, "-pool": pool}``.

    Args:
        classes: class names, background first (2-D: default ``label_1 ...`` by the values
            found; volumes: default the names of ``dataset.json``).
        channel: the channel prepared (nnU-Net ``CASE_XXXX`` suffix; volumes only).
        spacing_mm: in-plane resampling (volumes; None: pad to square and resize).
        modality: ``"ct"`` or ``"mri"`` intensity normalisation (default: from dataset.json).
        name: dataset name in tables and the ``site`` column (default: the folder's name).

    Returns:
        folder suffix -> SliceSet: ``""`` the labelled set (or the pool, when nothing is
        labelled), ``"-pool"`` every image without masks when some are unlabelled.
    """
    source = source_folder(source)
    if modality not in (None, "ct", "mri"):
        raise ValueError(f"modality must be 'ct', 'mri' or None, got {modality!r}")
    name = _safe_id(name or source.name)
    scan = scan_folder(source, channel)
    scan.raise_problems(f"folder {name}", source)
    if detect_layout(source) == "volumes":
        parts = _prepare_volumes(source, scan, size, progress, name, channel, spacing_mm, modality, classes)
    else:
        parts = _prepare_images(source, scan, size, progress, name, classes)
    for data in parts.values():
        data.info["notes"] = list(scan.notes)
    return parts
