"""Preparers of real chest X-ray datasets: a source folder -> a :class:`SliceSet`.

Every dataset has a ``scan_<name>(source)`` that checks the folder layout and lists what is
missing (used by ``medcl data check``), and a ``prepare_<name>(source, size, ...)`` that reads the
images one at a time (see :mod:`._common` for the intensity and geometry choices).

Segmentation sets here (lung masks, classes as the phantom's :data:`XRAY_CLASSES`): Montgomery,
JSRT with the SCR masks, Shenzhen with the Stirenko et al. masks. Right/left lung classes come
from the lungs' position in the image, never from folder names (:mod:`._lungs`). The temporal
pretraining pools (NIH ChestX-ray14, CheXpert, MIMIC-CXR) are in :mod:`.pools`.
"""

from __future__ import annotations

from pathlib import Path

from medcl_lite.data.catalog._common import (
    Item,
    Scan,
    build_sliceset,
    find_dir,
    find_files,
    is_hidden,
    read_array,
    source_folder,
)
from medcl_lite.data.catalog._lungs import (
    LungSplitError,
    binary_mask,
    lung_label_map,
    split_lungs,
)
from medcl_lite.data.phantoms.chest_xray import XRAY_CLASSES
from medcl_lite.data.sliceset import SliceSet

#: Pixel spacings published with the datasets (mm).
MONTGOMERY_SPACING_MM = 0.0875
JSRT_SPACING_MM = 0.175
CONVENTION = "radiological: patient's right on the image left; right/left from lung positions"


class _TwoMasks:
    """Label function for one mask file per lung; counts which lung the first folder held."""

    def __init__(self, first_folder: str):
        self.first_folder, self.first_on_image_left, self.total = first_folder, 0, 0

    def __call__(self, item: Item) -> tuple:
        first, second = item.masks
        a = binary_mask(read_array(first), first)
        b = binary_mask(read_array(second), second)
        labels, first_is_right = lung_label_map(a, b, f"lung masks {first} and {second}")
        self.total += 1
        self.first_on_image_left += int(first_is_right)
        return labels

    def note(self) -> str:
        return (
            f"masks in {self.first_folder!r} held the lung on the image left (patient's right) in"
            f" {self.first_on_image_left} of {self.total} images; classes follow image position"
        )


# --- Montgomery -------------------------------------------------------------------------------


def scan_montgomery(source: str | Path) -> Scan:
    """``MontgomerySet/CXR_png/MCUCXR_XXXX_Y.png`` + ``ManualMask/{leftMask,rightMask}/`` (same
    names); ``Y`` is 1 for tuberculosis."""
    source = source_folder(source)
    folders = {n: find_dir(source, n) for n in ("CXR_png", "leftMask", "rightMask")}
    problems = [
        f"no folder {n!r} under {source} (expected MontgomerySet/"
        f"{'CXR_png' if n == 'CXR_png' else 'ManualMask/' + n}/MCUCXR_XXXX_Y.png)"
        for n, folder in folders.items()
        if folder is None
    ]
    if problems:
        return Scan(problems)
    images = sorted(folders["CXR_png"].glob("*.png"))
    if not images:
        return Scan([f"no .png images in {folders['CXR_png']}"])
    items = []
    for image in images:
        masks = (folders["leftMask"] / image.name, folders["rightMask"] / image.name)
        problems += [f"missing mask {m}" for m in masks if not m.is_file()]
        stem = image.stem
        items.append(
            Item(
                sample_id=stem,
                patient_id=stem.rsplit("_", 1)[0],
                time=0,
                image=image,
                masks=masks,
                spacing_mm=MONTGOMERY_SPACING_MM,
                extra={"tb": _tb_flag(stem), "source_file": str(image.relative_to(source))},
            )
        )
    return Scan(problems, items)


def prepare_montgomery(source: str | Path, size: int = 256, progress: bool = True) -> SliceSet:
    """Montgomery County CXR set (138 PA images, lung masks) -> SliceSet with lung classes."""
    return _prepare_two_masks("montgomery", scan_montgomery, "leftMask", source, size, progress)


def _prepare_two_masks(name: str, scan, first_mask: str, source, size: int, progress: bool) -> SliceSet:
    """Scan ``source``, stop on any problem, then build the SliceSet from one mask per lung
    (``first_mask`` names the folder of the first mask of each pair, for the left/right note)."""
    source = source_folder(source)
    found = scan(source)
    found.raise_problems(name, source)
    sides = _TwoMasks(first_mask)
    data = build_sliceset(
        found.items,
        size,
        name=name,
        classes=XRAY_CLASSES,
        labels=sides,
        info={"convention": CONVENTION},
        progress=progress,
    )
    data.info["left_right"] = sides.note()
    return data


def _tb_flag(stem: str) -> int:
    """``..._0`` normal, ``..._1`` tuberculosis (Montgomery and Shenzhen file names)."""
    suffix = stem.rsplit("_", 1)[-1]
    if suffix not in ("0", "1"):
        raise ValueError(f"file name {stem!r} does not end in _0 or _1 (normal / tuberculosis)")
    return int(suffix)


# --- JSRT + SCR -------------------------------------------------------------------------------


def scan_jsrt(source: str | Path) -> Scan:
    """JSRT ``*.IMG`` (e.g. ``All247images/JPCLN001.IMG``) and SCR masks
    ``.../masks/left lung/JPCLN001.gif`` and ``.../masks/right lung/`` (any fold folders)."""
    source = source_folder(source)
    images = find_files(source, [".img"])
    problems = [] if images else [f"no JSRT .IMG images under {source} (e.g. All247images/)"]
    masks = {}
    for side in ("left lung", "right lung"):
        folders = sorted(
            p for p in source.rglob(side) if p.is_dir() and not is_hidden(p.relative_to(source))
        )
        if not folders:
            problems.append(f"no SCR mask folder {side!r} under {source} (e.g. masks/{side}/)")
        masks[side] = {p.stem.upper(): p for f in folders for p in sorted(f.glob("*.gif"))}
    if problems:
        return Scan(problems)
    items = []
    for image in images:
        key = image.stem.upper()
        pair = tuple(masks[side].get(key) for side in ("left lung", "right lung"))
        problems += [
            f"missing SCR mask {side}/{image.stem}.gif"
            for side, path in zip(("left lung", "right lung"), pair, strict=True)
            if path is None
        ]
        items.append(
            Item(
                sample_id=image.stem,
                patient_id=image.stem,
                time=0,
                image=image,
                masks=pair,
                spacing_mm=JSRT_SPACING_MM,
                extra={
                    "nodule": int(key.startswith("JPCLN")),
                    "source_file": str(image.relative_to(source)),
                },
            )
        )
    return Scan(problems, items)


def prepare_jsrt(source: str | Path, size: int = 256, progress: bool = True) -> SliceSet:
    """JSRT (247 PA images, 2048 x 2048, 12-bit) with SCR lung masks -> SliceSet."""
    return _prepare_two_masks("jsrt", scan_jsrt, "left lung", source, size, progress)


# --- Shenzhen ---------------------------------------------------------------------------------


def scan_shenzhen(source: str | Path) -> Scan:
    """``ChinaSet_AllFiles/CXR_png/CHNCXR_XXXX_Y.png`` and masks ``CHNCXR_XXXX_Y_mask.png``
    anywhere below ``source`` (the Kaggle mask release covers 566 of the 662 images)."""
    source = source_folder(source)
    folder = find_dir(source, "CXR_png")
    if folder is None:
        return Scan([f"no folder 'CXR_png' under {source} (expected ChinaSet_AllFiles/CXR_png/)"])
    images = sorted(folder.glob("*.png"))
    masks = {p.name[: -len("_mask.png")]: p for p in find_files(source, [".png"])}
    masks = {k: p for k, p in masks.items() if p.name.endswith("_mask.png")}
    problems = [] if images else [f"no .png images in {folder}"]
    if not masks:
        problems.append(
            f"no lung masks (*_mask.png) under {source}: download the Shenzhen lung masks"
            " (Kaggle 'yoctoman/shcxr-lung-mask') and unpack them into the source folder"
        )
    if problems:
        return Scan(problems)
    items = [
        Item(
            sample_id=image.stem,
            patient_id=image.stem.rsplit("_", 1)[0],
            time=0,
            image=image,
            masks=(masks[image.stem],),
            extra={"tb": _tb_flag(image.stem), "source_file": str(image.relative_to(source))},
        )
        for image in images
        if image.stem in masks
    ]
    notes = []
    if len(items) < len(images):
        notes.append(f"{len(images) - len(items)} images have no lung mask and are left out")
    orphans = sorted(set(masks) - {i.stem for i in images})
    if orphans:
        notes.append(f"{len(orphans)} masks have no image (e.g. {masks[orphans[0]].name})")
    if not items:
        problems.append(f"none of the {len(images)} images in {folder} has a *_mask.png mask")
    return Scan(problems, items, notes=notes)


def _shenzhen_labels(item: Item):
    mask = item.masks[0]
    first, second = split_lungs(binary_mask(read_array(mask), mask), mask)
    return lung_label_map(first, second, mask)[0]


def prepare_shenzhen(source: str | Path, size: int = 256, progress: bool = True) -> SliceSet:
    """Shenzhen CXR set with the Stirenko et al. (2018) lung masks (both lungs in one mask, split
    into right and left by connected components) -> SliceSet; images without mask left out.

    A mask that cannot be split into two lungs (one piece, no narrow bridge: a few touching
    lungs, :class:`LungSplitError`) skips its image, listed in ``info["skipped_images"]``; any
    other error (unreadable or empty mask) stops the prepare, naming the file."""
    source = source_folder(source)
    scan = scan_shenzhen(source)
    scan.raise_problems("shenzhen", source)
    info = {"convention": CONVENTION, "notes": scan.notes}
    return build_sliceset(
        scan.items,
        size,
        name="shenzhen",
        classes=XRAY_CLASSES,
        labels=_shenzhen_labels,
        info=info,
        progress=progress,
        skip=(LungSplitError,),
    )
