"""Preparers of real multi-organ abdominal CT (LRC): BTCV (Synapse) and AMOS 2022 (Zenodo).

Both are image/label NIfTI pairs prepared like the cardiac CT sets of :mod:`medcl_lite.data.catalog.volumes` (same
intensity, geometry and display orientation, one SliceSet row per slice with ``depth`` and
spacing). The label maps are turned into classes by ``classes``:

- ``"phantom"`` (default): the abdominal phantom's classes :data:`ABDOMEN_CLASSES` (liver,
  spleen, right and left kidney, stomach); every other organ becomes background.
- ``"all"``: every organ of the dataset, in its own value order, named (:data:`BTCV_ORGANS`,
  :data:`AMOS_ORGANS`).

Label values (checked against public sources, see the catalog entries):

- BTCV (Landman et al. 2015; MONAI model zoo ``swin_unetr_btcv_segmentation`` README): 1 spleen,
  2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta,
  9 inferior vena cava, 10 portal and splenic veins, 11 pancreas, 12 right adrenal gland,
  13 left adrenal gland.
- AMOS (the archive's ``dataset.json``; Ji et al. 2022): 1 spleen, 2 right kidney, 3 left kidney,
  4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 postcava (inferior vena cava),
  10 pancreas, 11 right adrenal gland, 12 left adrenal gland, 13 duodenum, 14 bladder,
  15 prostate/uterus. Cases ``amos_0001`` ... ``amos_0500`` are CT, ``amos_0501`` ... ``0600``
  MRI (:data:`AMOS_LAST_CT_ID`); only CT is prepared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from medcl_lite.data.catalog._common import Scan, source_folder
from medcl_lite.data.catalog.volumes import VolumeItem, _nifti_files, _prepare_scanned, _stem
from medcl_lite.data.phantoms.abdomen import ABDOMEN_CLASSES
from medcl_lite.data.sliceset import SliceSet

#: BTCV label value -> organ.
BTCV_ORGANS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_splenic_veins",
    11: "pancreas",
    12: "adrenal_right",
    13: "adrenal_left",
}
#: AMOS 2022 label value -> organ (``postcava`` named ``inferior_vena_cava`` as in BTCV).
AMOS_ORGANS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "pancreas",
    11: "adrenal_right",
    12: "adrenal_left",
    13: "duodenum",
    14: "bladder",
    15: "prostate_uterus",
}
#: AMOS case numbers up to this one are CT, higher ones MRI (500 CT + 100 MRI cases).
AMOS_LAST_CT_ID = 500
CLASS_MODES = ("phantom", "all")
_BTCV = re.compile(r"^(img|label)(\d+)$")
_AMOS = re.compile(r"^amos_(\d+)$")
_AMOS_FOLDER = re.compile(r"^(images|labels)(Tr|Va|Ts)$")
_AMOS_SPLITS = {"Tr": "train", "Va": "validation", "Ts": "test"}


def organ_label_map(
    organs: dict[int, str], classes: str = "phantom"
) -> tuple[dict[int, int], tuple[str, ...]]:
    """Stored label value -> class index, and the class names, for ``classes`` (module doc).

    ``"phantom"``: organs named in :data:`ABDOMEN_CLASSES` keep their class, every other organ
    becomes 0 (background). ``"all"``: value ``v`` stays ``v`` and the classes are
    ``("background", organs[1], ...)`` (values must run 1..K).
    """
    if classes == "phantom":
        label_map = {0: 0}
        for value, organ in organs.items():
            label_map[value] = ABDOMEN_CLASSES.index(organ) if organ in ABDOMEN_CLASSES else 0
        return label_map, ABDOMEN_CLASSES
    if classes == "all":
        if sorted(organs) != list(range(1, len(organs) + 1)):
            raise ValueError(f"organ values must run 1..K, got {sorted(organs)}")
        names = ("background", *(organs[v] for v in sorted(organs)))
        return {0: 0, **{v: v for v in organs}}, names
    raise ValueError(f"classes must be one of {CLASS_MODES}, got {classes!r}")


# --- BTCV -------------------------------------------------------------------------------------


def scan_btcv(source: str | Path) -> Scan:
    """BTCV ``RawData/Training/img/imgNNNN.nii.gz`` with ``RawData/Training/label/
    labelNNNN.nii.gz`` (any folders below ``source``), paired by the number NNNN.

    Images below a ``Testing`` folder have no public labels and are skipped (a note says how
    many); any other image without its label, or label without its image, is a problem.
    """
    source = source_folder(source)
    images: dict[int, list[Path]] = {}
    labels: dict[int, list[Path]] = {}
    skipped = 0
    for path in _nifti_files(source):
        match = _BTCV.match(_stem(path))
        if not match:
            continue
        if "Testing" in path.relative_to(source).parts:
            skipped += match.group(1) == "img"
            continue
        kind = images if match.group(1) == "img" else labels
        kind.setdefault(int(match.group(2)), []).append(path)
    if not images:
        return Scan([f"no BTCV images imgNNNN.nii.gz under {source} (expected e.g."
                     " RawData/Training/img/img0001.nii.gz)"])  # fmt: skip
    problems, items = [], []
    for number in sorted(set(images) | set(labels)):
        found_images, found_labels = images.get(number, []), labels.get(number, [])
        for kind, found in (("images", found_images), ("labels", found_labels)):
            if len(found) > 1:
                shown = ", ".join(str(p) for p in found)
                problems.append(f"several BTCV {kind} numbered {number:04d}: {shown}")
        if not found_labels:
            problems.append(
                f"missing label label{number:04d}.nii.gz for image {found_images[0]}"
                f" (none below {source})"
            )
            continue
        if not found_images:
            problems.append(f"label {found_labels[0]} has no image img{number:04d}.nii.gz")
            continue
        image = found_images[0]
        extra = {"source_file": str(image.relative_to(source))}
        name = f"btcv_{number:04d}"
        items.append(VolumeItem(name, name, image, found_labels[0], extra=extra))
    notes = [f"{len(items)} labelled CT volumes"]
    if skipped:
        notes.append(f"{skipped} Testing images skipped (no public labels)")
    return Scan(problems, items, notes=notes)


def prepare_btcv(
    source: str | Path,
    size: int = 256,
    progress: bool = True,
    classes: str = "phantom",
    spacing_mm: float | None = None,
    max_patients: int | None = None,
) -> SliceSet:
    """BTCV abdominal CT -> SliceSet; ``classes="phantom"`` (:data:`ABDOMEN_CLASSES`, other
    organs background) or ``"all"`` (the 13 organs of :data:`BTCV_ORGANS`). ``max_patients``
    keeps the first volumes by number."""
    return _prepare_organs("BTCV", scan_btcv, BTCV_ORGANS, source, size, progress, classes,
                           spacing_mm, max_patients)  # fmt: skip


# --- AMOS 2022 --------------------------------------------------------------------------------


def scan_amos(source: str | Path) -> Scan:
    """AMOS 2022 ``amos22/images{Tr,Va}/amos_NNNN.nii.gz`` with ``labels{Tr,Va}/`` files of
    the same name (any folder above them), CT cases only.

    MRI cases (number above :data:`AMOS_LAST_CT_ID`) and ``imagesTs`` (no public labels) are
    skipped, with notes; a CT image without its label is a problem. A ``dataset.json`` next to
    the folders is checked to list the label values of :data:`AMOS_ORGANS`.
    """
    source = source_folder(source)
    images, labels = [], {}
    mri = test = 0
    for path in _nifti_files(source):
        folder, match = _AMOS_FOLDER.match(path.parent.name), _AMOS.match(_stem(path))
        if not (folder and match):
            continue
        if folder.group(1) == "labels":
            labels[(path.parent.parent, folder.group(2), path.name)] = path
        elif int(match.group(1)) > AMOS_LAST_CT_ID:
            mri += 1
        elif folder.group(2) == "Ts":
            test += 1
        else:
            images.append((path, folder.group(2)))
    if not images:
        return Scan([f"no AMOS CT images amos_NNNN.nii.gz (NNNN <= {AMOS_LAST_CT_ID}) in"
                     f" imagesTr/ or imagesVa/ under {source}"])  # fmt: skip
    problems, items, roots = [], [], set()
    for image, split in images:
        root = image.parent.parent
        roots.add(root)
        label = labels.get((root, split, image.name))
        if label is None:
            problems.append(f"missing label {root / f'labels{split}' / image.name} for {image}")
            continue
        extra = {"split": _AMOS_SPLITS[split], "source_file": str(image.relative_to(source))}
        name = _stem(image)
        items.append(VolumeItem(name, name, image, label, extra=extra))
    for root in sorted(roots):
        problems += _check_amos_json(root / "dataset.json")
    notes = [f"{len(items)} labelled CT volumes"]
    if mri:
        notes.append(f"{mri} MRI images skipped (amos_NNNN above {AMOS_LAST_CT_ID}; CT only)")
    if test:
        notes.append(f"{test} imagesTs CT images skipped (no public labels)")
    return Scan(problems, items, notes=notes)


def _check_amos_json(path: Path) -> list[str]:
    """Problems with AMOS's ``dataset.json`` labels (none when the file is absent)."""
    if not path.is_file():
        return []
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
        values = sorted(int(v) for v in stored)
    except (ValueError, AttributeError) as error:
        return [f"{path}: cannot read its 'labels' ({type(error).__name__}: {error})"]
    expected = [0, *AMOS_ORGANS]
    if values != expected:
        return [f"{path} lists label values {values}, expected {expected} (AMOS 2022)"]
    return []


def prepare_amos(
    source: str | Path,
    size: int = 256,
    progress: bool = True,
    classes: str = "phantom",
    spacing_mm: float | None = None,
    max_patients: int | None = None,
) -> SliceSet:
    """AMOS 2022 CT (training and validation cases with labels; MRI skipped) -> SliceSet.

    ``classes="phantom"`` (:data:`ABDOMEN_CLASSES`) or ``"all"`` (the 15 organs of
    :data:`AMOS_ORGANS`). Column ``split`` is ``train`` or ``validation`` (the challenge's).
    ``max_patients`` keeps the first cases by number; all 300 CT cases at 256 px take several
    GB of memory.
    """
    return _prepare_organs("AMOS", scan_amos, AMOS_ORGANS, source, size, progress, classes,
                           spacing_mm, max_patients)  # fmt: skip


def _prepare_organs(
    title: str,
    scan: Callable[[Path], Scan],
    organs: dict[int, str],
    source: str | Path,
    size: int,
    progress: bool,
    classes: str,
    spacing_mm: float | None,
    max_patients: int | None,
) -> SliceSet:
    """``prepare_btcv`` / ``prepare_amos``: dataset ``title`` ("BTCV", named ``title.lower()``)
    laid out as ``scan`` checks, its ``organs`` mapped to ``classes`` (:func:`organ_label_map`);
    ``info`` gets ``classes_mode`` and ``label_source``."""
    label_map, names = organ_label_map(organs, classes)
    source = source_folder(source)
    data = _prepare_scanned(
        scan(source),
        source,
        size,
        name=title.lower(),
        modality="ct",
        spacing_mm=spacing_mm,
        label_map=label_map,
        classes=names,
        progress=progress,
        max_patients=max_patients,
    )
    if classes == "phantom":
        label_source = "organ labels mapped to the abdominal phantom's classes; others background"
    else:
        label_source = "organ labels kept as stored (value = class index)"
    data.info.update({"classes_mode": classes, "label_source": f"{title} {label_source}"})
    return data
