"""The prepared on-disk format: one folder per dataset, read back into a :class:`SliceSet`.

Layout of ``root/`` (docs/design.md, "Data": phantoms and real data share it)::

    manifest.csv        one row per 2-D image: META_COLUMNS, extra metadata, ``image``, ``mask``
    dataset.json        name, classes, info, column types, image scale, format_version
    images/<sample_id>.png   2-D images, 16-bit grey (value = round(image * 65535))
    masks/<sample_id>.png    8-bit class indices
    volumes/<volume_id>.nii.gz  slices of a volume (volume_id non-empty), 16-bit, affine from
    labels/<volume_id>.nii.gz   spacing_x/y/z; the row's ``slice_index`` selects the slice
    .complete           written last: a folder without it is incomplete

A folder is built in a temporary sibling and renamed into place, so a reader never sees half of
it. Paths in the manifest are relative to ``root``.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from medcl_lite.data.io import read_image
from medcl_lite.data.sliceset import META_COLUMNS, SliceSet

FORMAT_VERSION = 1
MARKER = ".complete"
IMAGE_SCALE = 65535  # 16-bit quantisation of images in [0, 1]
FILE_COLUMNS = ("image", "mask")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_META_KINDS = {"time": "int", "slice_index": "int", "n_slices": "int", "depth": "float"}


def write_prepared(data: SliceSet, root: str | Path, overwrite: bool = False) -> Path:
    """Write ``data`` as a prepared folder at ``root`` (atomically) and return ``root``.

    An existing prepared folder is replaced only with ``overwrite=True``; a non-empty folder that
    is not a prepared one is never replaced. ``info`` must be JSON-serialisable (tuples come
    back as lists). Volumes (rows with a ``volume_id``) must be complete: slice indices
    ``0 .. n_slices - 1``.

    Raises:
        FileExistsError: ``root`` exists (and ``overwrite`` is False, or it is not prepared).
        ValueError: NaNs or values outside [0, 1], unsafe or duplicate ids, incomplete volumes.
    """
    root = Path(root)
    _check_writable(data)
    _check_target(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        manifest = _write_arrays(data, tmp)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        description = {
            "format_version": FORMAT_VERSION,
            "name": data.name,
            "classes": list(data.classes),
            "info": data.info,
            "image_scale": IMAGE_SCALE,
            "columns": {c: _kind(data.meta[c]) for c in data.meta.columns},
        }
        text = json.dumps(description, indent=2, default=_json_default)
        (tmp / "dataset.json").write_text(text, encoding="utf-8")
        (tmp / MARKER).write_text(f"format_version {FORMAT_VERSION}\n", encoding="utf-8")
        _swap_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def read_prepared(root: str | Path) -> SliceSet:
    """Read a prepared folder back into a :class:`SliceSet` (images exact up to 1/65535).

    Raises:
        FileNotFoundError: missing folder, manifest, dataset.json or an image / mask file.
        ValueError: incomplete folder (no ``.complete``), missing columns, empty required values,
            NaNs, shape mismatches (naming the files), unexpected image types.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"prepared folder not found: {root}")
    if not (root / MARKER).exists():
        raise ValueError(
            f"prepared folder {root} is incomplete (no {MARKER} marker): it was interrupted while"
            " being written; prepare it again"
        )
    for name in ("manifest.csv", "dataset.json"):
        if not (root / name).exists():
            raise FileNotFoundError(f"prepared folder {root} has no {name}")
    description = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    version = description.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{root / 'dataset.json'}: unsupported format_version {version!r}")
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    missing = [c for c in (*META_COLUMNS, *FILE_COLUMNS) if c not in manifest.columns]
    if missing:
        raise ValueError(f"{root / 'manifest.csv'} lacks columns {missing}")
    if manifest.empty:
        raise ValueError(f"{root / 'manifest.csv'} has no rows")
    meta = _typed_meta(manifest, description.get("columns", {}), root / "manifest.csv")
    scale = float(description.get("image_scale", IMAGE_SCALE))
    images, masks = _read_arrays(root, manifest, scale)
    return SliceSet(
        images=images,
        masks=masks,
        meta=meta,
        classes=tuple(description.get("classes", ("background",))),
        name=str(description.get("name", root.name)),
        info=description.get("info", {}),
    )


def open_prepared(name_or_path: str | Path, home: str | Path | None = None) -> SliceSet:
    """A prepared dataset by folder path, or by name under ``data_home(home)/prepared``.

    What the notebooks' ``*_data`` parameters accept: ``"runs/my-acdc"`` or ``"acdc-352"`` (the
    folder ``medcl data prepare acdc --size 352`` writes).

    Raises:
        FileNotFoundError: neither a folder ``name_or_path`` nor ``<data home>/prepared/<name>``
            exists (both tried paths named).
    """
    from medcl_lite.data.download import data_home

    path = Path(name_or_path).expanduser()
    if not path.exists():
        named = data_home(home) / "prepared" / str(name_or_path)
        if not named.exists():
            raise FileNotFoundError(
                f"prepared data {str(name_or_path)!r} not found: neither {path} nor {named} exists;"
                " see `medcl data list` and `medcl data prepare`"
            )
        path = named
    return read_prepared(path)


def load_role(value: str, phantom: SliceSet | None, phantom_site: str) -> tuple[SliceSet, np.ndarray]:
    """``(data, rows)`` for one role of a chapter (pretraining pool, fine-tuning set, ...).

    ``value == "phantom"``: the rows of ``phantom`` at site ``phantom_site``; otherwise every row
    of the prepared folder ``value`` (a path, or a name under ``$MEDCL_DATA/prepared``).
    """
    if value == "phantom":
        if phantom is None:
            raise ValueError("load_role: value 'phantom' needs the phantom SliceSet")
        return phantom, np.flatnonzero(phantom.meta["site"].astype(str).to_numpy() == phantom_site)
    data = open_prepared(value)
    return data, np.arange(len(data))


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` is a complete prepared folder (has the ``.complete`` marker)."""
    return (Path(root) / MARKER).is_file()


# --- writing ----------------------------------------------------------------------------------


def _check_writable(data: SliceSet) -> None:
    if not np.all(np.isfinite(data.images)):
        raise ValueError(f"SliceSet {data.name!r}: images contain NaN or infinite values")
    if data.images.size and (data.images.min() < 0.0 or data.images.max() > 1.0):
        raise ValueError(f"SliceSet {data.name!r}: images must lie in [0, 1] to be written")
    clash = [c for c in FILE_COLUMNS if c in data.meta.columns]
    if clash:
        raise ValueError(f"SliceSet {data.name!r}: meta columns {clash} are reserved for paths")
    ids = data.meta["sample_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"duplicate sample_id values: {sorted(set(ids[ids.duplicated()]))[:5]}")
    volume_ids = data.meta["volume_id"].astype(str)
    for column, values in (("sample_id", ids), ("volume_id", volume_ids[volume_ids != ""])):
        bad = [v for v in values.unique() if not _SAFE_NAME.match(v)]
        if bad:
            raise ValueError(f"{column} values must be file-name safe ([A-Za-z0-9._-]): {bad[:5]}")
    for volume_id, rows in data.meta[volume_ids != ""].groupby("volume_id"):
        n_slices = set(rows["n_slices"].astype(int))
        index = sorted(rows["slice_index"].astype(int))
        if len(n_slices) != 1 or index != list(range(n_slices.pop())):
            raise ValueError(
                f"volume {volume_id!r} is incomplete or inconsistent: slice_index {index[:20]},"
                f" n_slices {sorted(set(rows['n_slices']))}; write_prepared stores whole volumes"
            )


def _check_target(root: Path, overwrite: bool) -> None:
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    looks_prepared = any((root / n).exists() for n in (MARKER, "manifest.csv", "dataset.json"))
    if any(root.iterdir()) and not looks_prepared:
        raise FileExistsError(f"{root} is a non-empty folder that is not a prepared dataset")
    if looks_prepared and not overwrite:
        state = "a complete" if is_complete(root) else "an incomplete"
        raise FileExistsError(f"{root} already holds {state} prepared dataset; use overwrite=True")


def _swap_into_place(tmp: Path, root: Path) -> None:
    if not root.exists():
        tmp.rename(root)
        return
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    root.rename(old)
    try:
        tmp.rename(root)
    except BaseException:
        old.rename(root)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_arrays(data: SliceSet, folder: Path) -> pd.DataFrame:
    """Write images, masks and volumes under ``folder``; return the manifest."""
    from PIL import Image as PILImage

    meta = data.meta.copy()
    quantised = np.round(data.images * IMAGE_SCALE).astype(np.uint16)
    image_paths, mask_paths = [""] * len(meta), [""] * len(meta)
    volume_ids = meta["volume_id"].astype(str).to_numpy()
    flat = np.flatnonzero(volume_ids == "")
    if len(flat):
        (folder / "images").mkdir()
        if data.masks is not None:
            (folder / "masks").mkdir()
    for i in flat:
        sample_id = str(meta.at[i, "sample_id"])
        image_paths[i] = f"images/{sample_id}.png"
        PILImage.fromarray(quantised[i]).save(folder / image_paths[i])
        if data.masks is not None:
            mask_paths[i] = f"masks/{sample_id}.png"
            PILImage.fromarray(data.masks[i].astype(np.uint8)).save(folder / mask_paths[i])
    for volume_id in pd.unique(volume_ids[volume_ids != ""]):
        rows = np.flatnonzero(volume_ids == volume_id)
        rows = rows[np.argsort(meta.loc[rows, "slice_index"].astype(int).to_numpy())]
        spacing = [float(meta.at[rows[0], c]) if c in meta else 1.0 for c in _SPACING]
        image_path, mask_path = f"volumes/{volume_id}.nii.gz", f"labels/{volume_id}.nii.gz"
        _save_nifti(quantised[rows], spacing, folder / image_path)
        if data.masks is not None:
            _save_nifti(data.masks[rows].astype(np.uint8), spacing, folder / mask_path)
        for i in rows:
            image_paths[i] = image_path
            mask_paths[i] = mask_path if data.masks is not None else ""
    meta["image"], meta["mask"] = image_paths, mask_paths
    return meta


_SPACING = ("spacing_x", "spacing_y", "spacing_z")


def _save_nifti(volume: np.ndarray, spacing: list[float], path: Path) -> None:
    """Save ``volume [D, H, W]`` as NIfTI ``[W, H, D]`` (see :mod:`medcl_lite.data.io`)."""
    import nibabel as nib

    path.parent.mkdir(exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    nifti = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine)
    nifti.header.set_data_dtype(volume.dtype)
    nifti.header.set_xyzt_units("mm")
    nib.save(nifti, str(path))


def _kind(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "bool"
    if pd.api.types.is_integer_dtype(column):
        return "int"
    if pd.api.types.is_float_dtype(column):
        return "float"
    return "str"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"dataset info value {value!r} ({type(value).__name__}) is not JSON-serialisable"
    )


# --- reading ----------------------------------------------------------------------------------


def _typed_meta(manifest: pd.DataFrame, kinds: dict, path: Path) -> pd.DataFrame:
    """Metadata columns with their written types; required values must not be empty / NaN."""
    meta = manifest.drop(columns=list(FILE_COLUMNS))
    flat = meta["volume_id"] == ""
    for column in META_COLUMNS:
        empty = meta[column].str.strip().isin(["", "nan", "NaN"])
        if column == "depth":
            empty &= ~flat  # 2-D images have no depth
        if column != "volume_id" and empty.any():
            rows = meta.loc[empty, "sample_id"].tolist()[:5]
            raise ValueError(f"{path}: column {column!r} is empty or NaN for rows {rows}")
    if (manifest["image"] == "").any():
        rows = manifest.loc[manifest["image"] == "", "sample_id"].tolist()[:5]
        raise ValueError(f"{path}: column 'image' is empty for rows {rows}")
    for column in meta.columns:
        kind = _META_KINDS.get(column, kinds.get(column, "str"))
        try:
            if kind == "int":
                meta[column] = np.array([int(v) for v in meta[column]], dtype=np.int64)
            elif kind == "float":
                values = [float(v) if v != "" else np.nan for v in meta[column]]
                meta[column] = np.array(values, dtype=np.float64)
            elif kind == "bool":
                meta[column] = meta[column].map({"True": True, "False": False}).astype(bool)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: column {column!r} is not of type {kind}: {error}") from error
    return meta


def _read_arrays(root: Path, manifest: pd.DataFrame, scale: float):
    cache: dict[str, np.ndarray] = {}

    def load(relative: str) -> np.ndarray:
        if relative not in cache:
            path = root / relative
            if not path.is_file():
                raise FileNotFoundError(f"prepared folder {root}: file {relative} not found")
            array = read_image(path).array
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise ValueError(f"{path} contains NaN or infinite values")
            cache[relative] = array
        return cache[relative]

    def select(relative: str, row: pd.Series) -> np.ndarray:
        array = load(relative)
        if row["volume_id"] == "":
            if array.ndim != 2:
                raise ValueError(f"{root / relative}: expected a 2-D image, got {array.shape}")
            return array
        index = int(row["slice_index"])
        if array.ndim != 3 or not 0 <= index < array.shape[0]:
            raise ValueError(f"{root / relative}: has shape {array.shape}, no slice {index}")
        return array[index]

    has_mask = manifest["mask"] != ""
    if has_mask.any() and not has_mask.all():
        rows = manifest.loc[~has_mask, "sample_id"].tolist()[:5]
        raise ValueError(f"{root / 'manifest.csv'}: some rows have masks, rows {rows} have none")
    images, masks, shape = [], [], None
    for _, row in manifest.iterrows():
        image = select(row["image"], row)
        if image.dtype != np.uint16:
            raise ValueError(f"{root / row['image']}: expected 16-bit values, got {image.dtype}")
        if shape is None:
            shape = image.shape
        if image.shape != shape:
            raise ValueError(f"{root / row['image']}: shape {image.shape}, other images {shape}")
        images.append(image)
        if has_mask.all():
            mask = select(row["mask"], row)
            if mask.shape != image.shape:
                raise ValueError(
                    f"image {root / row['image']} has shape {image.shape} but mask"
                    f" {root / row['mask']} has shape {mask.shape}"
                )
            masks.append(mask.astype(np.uint8))
    stacked = (np.stack(images).astype(np.float32) / np.float32(scale)).astype(np.float32)
    return stacked, (np.stack(masks) if masks else None)
