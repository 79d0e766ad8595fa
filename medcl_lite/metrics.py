"""Segmentation metrics: Dice (per image, pooled over slices, per volume), HD95 (per mask pair
and per volume), result summaries.

Three Dice numbers answer three questions, and papers mix them up (docs/methods.md, "PCL: caveats"):

- :func:`dice_per_image`: one Dice per 2-D image and class; average them for a per-slice mean.
- :func:`dice_pooled`: intersections and sizes summed over *all* slices first, then one Dice per
  class. This is the "Dice pooled over 2-D slices" of the PCL and CL-TCI public code; large
  structures dominate it and empty slices cannot lower it.
- :func:`dice_per_volume`: 3-D Dice per volume (slices grouped by volume id), the honest number
  for CT/MRI, where the volume is the unit a clinician looks at.

**Empty classes.** A class absent from both prediction and target (in an image, or a volume) has
no defined Dice (0 / 0): it is NaN here and left out of means with ``np.nanmean``. Counting it
as 1, as some code does, inflates scores on the many slices that do not contain the structure.

Inputs are integer label maps (class indices), numpy arrays or torch tensors; outputs are numpy
arrays or pandas DataFrames. Everything is vectorised over pixels; only classes are looped over.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from medcl_lite.utils import as_numpy

__all__ = [
    "dice_per_image",
    "dice_per_volume",
    "dice_pooled",
    "hd95",
    "hd95_per_volume",
    "summarize",
    "summarize_hd95",
]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _label_maps(
    pred, target, num_classes: int, include_background: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Checked label maps ``[N, P]`` (pixels flattened) from ``[N, H, W]`` or ``[H, W]`` input."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if num_classes < 2 and not include_background:
        raise ValueError(
            "num_classes must be >= 2 when include_background=False (no foreground class left)"
        )
    arrays = []
    for name, x in (("pred", pred), ("target", target)):
        x = as_numpy(x, name)
        if x.dtype == bool:
            x = x.astype(np.uint8)
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(
                f"{name} must hold integer class indices, got dtype {x.dtype} "
                "(for logits or probabilities take the argmax over the class axis first)"
            )
        if x.ndim == 2:
            x = x[None]
        if x.ndim < 2:
            raise ValueError(f"{name} must be [N, H, W] or [H, W], got shape {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(
                f"{name} has labels in [{x.min()}, {x.max()}], outside [0, {num_classes - 1}] "
                f"for num_classes={num_classes}"
            )
        arrays.append(x.reshape(len(x), -1))
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"pred and target shapes differ: {as_numpy(pred, 'pred').shape} vs "
            f"{as_numpy(target, 'target').shape}"
        )
    return arrays[0], arrays[1]


def _classes(num_classes: int, include_background: bool) -> list[int]:
    return list(range(0 if include_background else 1, int(num_classes)))


def _overlap_counts(
    pred: np.ndarray, target: np.ndarray, classes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """|P ∩ T| and |P| + |T| per image and class, ``[N, K]`` int64 each; inputs ``[N, pixels]``."""
    intersection = np.empty((len(pred), len(classes)), dtype=np.int64)
    sizes = np.empty_like(intersection)
    for k, c in enumerate(classes):
        in_pred, in_target = pred == c, target == c
        intersection[:, k] = np.count_nonzero(in_pred & in_target, axis=1)
        sizes[:, k] = np.count_nonzero(in_pred, axis=1) + np.count_nonzero(in_target, axis=1)
    return intersection, sizes


def _dice_from_counts(intersection: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Dice = 2 |P ∩ T| / (|P| + |T|); NaN where both are empty (0 / 0)."""
    dice = np.full(intersection.shape, np.nan, dtype=np.float64)
    np.divide(2.0 * intersection, sizes, out=dice, where=sizes > 0)
    return dice


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN (and no warning) where a row is all NaN."""
    valid = ~np.isnan(values)
    counts = valid.sum(axis=-1)
    totals = np.where(valid, values, 0.0).sum(axis=-1)
    return np.divide(totals, counts, out=np.full(totals.shape, np.nan), where=counts > 0)


# --------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------
def dice_per_image(pred, target, num_classes: int, include_background: bool = False) -> np.ndarray:
    """Dice of every image and class.

    Args:
        pred, target: integer label maps ``[N, H, W]`` (or one ``[H, W]`` image), numpy or torch.
        num_classes: number of classes including the background (index 0).
        include_background: also score class 0.

    Returns:
        ``[N, K]`` float64, K = ``num_classes - 1`` (``num_classes`` with the background); column
        k is class k + 1 (k without the background). NaN where the class is absent from both
        pred and target of that image: average with ``np.nanmean`` (see the module docstring).
    """
    pred, target = _label_maps(pred, target, num_classes, include_background)
    counts = _overlap_counts(pred, target, _classes(num_classes, include_background))
    return _dice_from_counts(*counts)


def dice_pooled(pred, target, num_classes: int, include_background: bool = False) -> np.ndarray:
    """Dice pooled over 2-D slices: intersections and sizes summed over all images first.

    This is how the PCL and CL-TCI public code report Dice (docs/methods.md, "PCL: caveats"). It
    weights each slice by its structure's size and is usually higher than the mean of
    :func:`dice_per_image`.

    Args:
        pred, target: integer label maps ``[N, H, W]`` (or ``[H, W]``), numpy or torch.
        num_classes: number of classes including the background.
        include_background: also score class 0.

    Returns:
        ``[K]`` float64, one Dice per class; NaN for a class absent from every image.
    """
    pred, target = _label_maps(pred, target, num_classes, include_background)
    intersection, sizes = _overlap_counts(pred, target, _classes(num_classes, include_background))
    return _dice_from_counts(intersection.sum(axis=0), sizes.sum(axis=0))


def dice_per_volume(
    pred,
    target,
    volume_ids,
    num_classes: int,
    include_background: bool = False,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """3-D Dice of every volume, from its 2-D slices (slice order does not matter).

    Overlaps and sizes of all slices of a volume are summed, which equals the Dice of the stacked
    volume (docs/design.md, "Evaluation": the honest per-volume number).

    Args:
        pred, target: integer label maps ``[N, H, W]``, numpy or torch.
        volume_ids: ``[N]`` volume of each slice (e.g. ``SliceSet.meta["volume_id"]``).
        num_classes: number of classes including the background.
        include_background: also score class 0.
        class_names: column names for the scored classes: either all ``num_classes`` names
            (index 0 the background, like ``SliceSet.classes``) or just the K scored ones.
            Default ``dice_1``, ``dice_2``, ... (``dice_0`` for the background).

    Returns:
        One row per volume, sorted by volume id: ``volume_id``, ``n_slices``, one Dice column per
        class (NaN where the class is absent from both pred and target of the volume), and
        ``mean`` (mean over the classes, NaN ignored).
    """
    pred, target = _label_maps(pred, target, num_classes, include_background)
    codes, volumes = _volume_codes(volume_ids, len(pred))
    classes = _classes(num_classes, include_background)
    columns = _class_column_names(classes, num_classes, class_names, "dice_", _DICE_RESERVED)

    intersection, sizes = _overlap_counts(pred, target, classes)
    volume_intersection = np.zeros((len(volumes), len(classes)), dtype=np.int64)
    volume_sizes = np.zeros_like(volume_intersection)
    np.add.at(volume_intersection, codes, intersection)
    np.add.at(volume_sizes, codes, sizes)
    dice = _dice_from_counts(volume_intersection, volume_sizes)

    table = pd.DataFrame(dice, columns=columns)
    table.insert(0, "volume_id", volumes)
    table.insert(1, "n_slices", np.bincount(codes, minlength=len(volumes)))
    table["mean"] = _row_nanmean(dice)
    return table


_DICE_RESERVED = ("volume_id", "n_slices", "mean")
_HD95_RESERVED = (*_DICE_RESERVED, "n_undefined")


def _volume_codes(volume_ids, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Volume index of each of ``n`` slices ``[n]`` and the sorted distinct volume ids."""
    ids = as_numpy(volume_ids, "volume_ids")
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"volume_ids must be one id per slice ({n}), got shape {ids.shape}")
    codes, volumes = pd.factorize(pd.Series(ids), sort=True)
    return codes, np.asarray(volumes)


def _class_column_names(
    classes: list[int],
    num_classes: int,
    class_names: Sequence[str] | None,
    prefix: str,
    reserved: Sequence[str],
) -> list[str]:
    """Table column of each scored class: ``class_names`` or ``f"{prefix}{class_index}"``."""
    if class_names is None:
        return [f"{prefix}{c}" for c in classes]
    names = [str(name) for name in class_names]
    if len(names) == num_classes:
        names = [names[c] for c in classes]
    elif len(names) != len(classes):
        raise ValueError(
            f"class_names must have {num_classes} names (all classes) or {len(classes)} "
            f"(the scored ones), got {len(names)}"
        )
    reserved = set(reserved) & set(names)
    if reserved or len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique and not {sorted(reserved)}, got {names}")
    return names


# --------------------------------------------------------------------------------------------
# HD95
# --------------------------------------------------------------------------------------------
def hd95(pred_mask, target_mask, spacing: float | Sequence[float] | None = None) -> float:
    """95th percentile of the symmetric Hausdorff distance between two masks' boundaries.

    The boundary of a mask is its voxels that a one-voxel erosion (face connectivity) removes;
    voxels on the array's edge count as boundary. The distances from every boundary voxel of
    each mask to the nearest boundary voxel of the other (exact Euclidean distance transforms,
    ``scipy.ndimage.distance_transform_edt``) are pooled and their 95th percentile returned,
    as ``medpy.metric.hd95`` does (MONAI instead takes the larger of the two directed
    percentiles; the two agree on symmetric shapes).

    Conventions: NaN when either mask is empty. One empty mask (a missed or hallucinated
    structure) has no finite distance; both empty is NaN too, for the same reason Dice is: a
    slice without the structure says nothing about boundary accuracy, and scoring it 0 would
    flatter the mean. Average with ``np.nanmean`` and report how many cases were NaN.

    Args:
        pred_mask, target_mask: boolean (or 0/1) masks of the same 2-D ``[H, W]`` or 3-D
            ``[D, H, W]`` shape, numpy or torch.
        spacing: voxel size in mm, one number or one per axis; default 1 (distances in voxels).

    Returns:
        HD95 in the unit of ``spacing``.
    """
    masks = [_binary_mask(pred_mask, "pred_mask"), _binary_mask(target_mask, "target_mask")]
    if masks[0].shape != masks[1].shape:
        raise ValueError(
            f"pred_mask and target_mask shapes differ: {masks[0].shape} vs {masks[1].shape}"
        )
    sampling = _spacing(spacing, masks[0].ndim)
    if not (masks[0].any() and masks[1].any()):
        return float("nan")
    pred_edge, target_edge = (_boundary(mask) for mask in masks)
    to_target = ndimage.distance_transform_edt(~target_edge, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)
    distances = np.concatenate([to_target[pred_edge], to_pred[target_edge]])
    return float(np.percentile(distances, 95))


def _binary_mask(x, name: str) -> np.ndarray:
    mask = as_numpy(x, name)
    if mask.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2-D [H, W] or 3-D [D, H, W] mask, got {mask.shape}")
    if mask.dtype != bool:
        if mask.size and not np.isin(mask, (0, 1)).all():
            raise ValueError(
                f"{name} must be boolean (or 0/1); for a label map pass `labels == class_index`"
            )
        mask = mask.astype(bool)
    return mask


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"spacing must be one positive number or {ndim} (one per axis), got {spacing!r}"
        )
    return tuple(float(v) for v in values)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (or on the array's edge)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


# --------------------------------------------------------------------------------------------
# HD95 per volume
# --------------------------------------------------------------------------------------------
_SPACING_COLUMNS = ("spacing_z", "spacing_y", "spacing_x")  # SliceSet.meta names, [D, H, W] order


def hd95_per_volume(
    pred,
    target,
    volume_ids,
    slice_index,
    num_classes: int,
    spacing=None,
    include_background: bool = False,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """3-D HD95 of every volume and class, from its 2-D slices stacked in ``slice_index`` order.

    The slices of a volume may come in any order and need not be contiguous in N; they are
    stacked into ``[D, H, W]`` sorted by ``slice_index`` and scored with :func:`hd95` (boundary
    distances in 3-D; the volume is the unit, as for :func:`dice_per_volume`). A volume must be a
    contiguous run of slices (any start, no gap, no repeat): the distance across a missing slice
    would be wrong, so a gap is an error naming the volume. A one-slice volume is a slab one
    voxel thick, all of it surface (3-D convention): its HD95 can differ from the 2-D one.

    Args:
        pred, target: integer label maps ``[N, H, W]`` of 2-D slices, numpy or torch.
        volume_ids: ``[N]`` volume of each slice (e.g. ``SliceSet.meta["volume_id"]``).
        slice_index: ``[N]`` integer position of each slice in its volume (``meta["slice_index"]``).
        num_classes: number of classes including the background.
        spacing: voxel size in mm, in array-axis order **(z, y, x)** = ``[D, H, W]`` = (between
            slices, rows, columns), as ``medcl_lite.data.io`` returns it. ``None``: 1 (distances
            in voxels); one number or one ``(z, y, x)`` triple for all volumes; or per slice an
            ``[N, 3]`` array-like ``(z, y, x)``, e.g. ``meta[["spacing_z", "spacing_y",
            "spacing_x"]]``. A DataFrame holding all three ``spacing_*`` columns (``meta``
            itself) is read by column name. Per-slice spacing must be constant within a volume.
        include_background: also score class 0.
        class_names: column names, as in :func:`dice_per_volume`; default ``hd95_1``, ...

    Returns:
        One row per volume, sorted by volume id: ``volume_id``, ``n_slices``, one HD95 column
        per class (unit of ``spacing``; NaN where pred or target lacks the class in the volume),
        ``mean`` (over classes, NaN ignored) and ``n_undefined`` (number of NaN classes).
        Summarise with :func:`summarize_hd95`, which reports the undefined cases too.
    """
    pred, target = _label_volumes(pred, target, num_classes, include_background)
    codes, volumes = _volume_codes(volume_ids, len(pred))
    positions = _slice_positions(slice_index, len(pred))
    spacings = _slice_spacings(spacing, len(pred))
    classes = _classes(num_classes, include_background)
    columns = _class_column_names(classes, num_classes, class_names, "hd95_", _HD95_RESERVED)

    values = np.full((len(volumes), len(classes)), np.nan)
    n_slices = np.zeros(len(volumes), dtype=np.int64)
    for v, volume_id in enumerate(volumes):
        rows = _volume_rows(codes == v, positions, volume_id)
        sampling = _volume_spacing(spacings[rows], volume_id)
        n_slices[v] = len(rows)
        for k, c in enumerate(classes):
            values[v, k] = hd95(pred[rows] == c, target[rows] == c, spacing=sampling)

    table = pd.DataFrame(values, columns=columns)
    table.insert(0, "volume_id", volumes)
    table.insert(1, "n_slices", n_slices)
    table["mean"] = _row_nanmean(values)
    table["n_undefined"] = np.isnan(values).sum(axis=1)
    return table


def summarize_hd95(table: pd.DataFrame) -> dict:
    """Honest summary of a :func:`hd95_per_volume` table: mean of the defined values AND the
    number of undefined ones (NaN: a class missing from pred or target of a volume).

    Leaving NaN out of a mean silently hides the worst failures (a missed structure has no
    finite HD95), so the count of undefined cases must be reported next to the mean.

    Args:
        table: output of :func:`hd95_per_volume` (one row per volume, one column per class).

    Returns:
        ``mean``: mean over all defined (volume, class) values; ``n_defined``, ``n_undefined``,
        ``n_cases`` (volumes x classes); ``per_class``: class column -> mean over volumes of
        the defined values; ``per_class_undefined``: class column -> NaN count; ``text``: e.g.
        ``"4.21 (defined for 18 of 20 volume-class cases; 2 undefined)"``.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [column for column in _HD95_RESERVED if column not in table.columns]
    if missing:
        raise ValueError(
            f"summarize_hd95: table has no column(s) {missing}; pass hd95_per_volume's output"
        )
    class_columns = [column for column in table.columns if column not in _HD95_RESERVED]
    values = table[class_columns].to_numpy(dtype=np.float64)
    defined = ~np.isnan(values)
    n_defined, n_cases = int(defined.sum()), int(values.size)
    mean = float(values[defined].mean()) if n_defined else float("nan")
    per_class = _row_nanmean(values.T) if len(values) else np.full(len(class_columns), np.nan)
    mean_text = "–" if np.isnan(mean) else f"{mean:.2f}"
    return {
        "mean": mean,
        "n_defined": n_defined,
        "n_undefined": n_cases - n_defined,
        "n_cases": n_cases,
        "per_class": dict(zip(class_columns, per_class.tolist(), strict=True)),
        "per_class_undefined": dict(
            zip(class_columns, (~defined).sum(axis=0).tolist(), strict=True)
        ),
        "text": f"{mean_text} (defined for {n_defined} of {n_cases} volume-class cases; "
        f"{n_cases - n_defined} undefined)",
    }


def _label_volumes(
    pred, target, num_classes: int, include_background: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Checked label maps ``[N, H, W]`` (exactly 3-D; same shape, not only the same size)."""
    shapes = [as_numpy(x, name).shape for name, x in (("pred", pred), ("target", target))]
    for name, shape in zip(("pred", "target"), shapes, strict=True):
        if len(shape) != 3:
            raise ValueError(f"{name} must be 2-D slices [N, H, W], got shape {shape}")
    if shapes[0] != shapes[1]:
        raise ValueError(f"pred and target shapes differ: {shapes[0]} vs {shapes[1]}")
    flat = _label_maps(pred, target, num_classes, include_background)
    return flat[0].reshape(shapes[0]), flat[1].reshape(shapes[1])


def _slice_positions(slice_index, n: int) -> np.ndarray:
    """``slice_index`` as ``[n]`` int64, checked to hold one integer per slice."""
    positions = as_numpy(slice_index, "slice_index")
    if positions.ndim != 1 or len(positions) != n:
        raise ValueError(
            f"slice_index must be one integer per slice ({n}), got shape {positions.shape}"
        )
    if not np.issubdtype(positions.dtype, np.integer):
        if not (np.issubdtype(positions.dtype, np.floating) and np.all(positions % 1 == 0)):
            raise ValueError(
                f"slice_index must hold integers, got dtype {positions.dtype}: {positions[:5]}"
            )
    return positions.astype(np.int64)


def _slice_spacings(spacing, n: int) -> np.ndarray:
    """Spacing ``(z, y, x)`` of every slice, ``[n, 3]`` float64 (see :func:`hd95_per_volume`)."""
    if isinstance(spacing, pd.DataFrame) and set(_SPACING_COLUMNS) <= set(spacing.columns):
        spacing = spacing[list(_SPACING_COLUMNS)]
    values = None if spacing is None else as_numpy(spacing, "spacing")
    if values is None or values.ndim < 2:
        return np.tile(_spacing(spacing, 3), (n, 1))
    if values.shape != (n, 3):
        raise ValueError(
            f"spacing must be one (z, y, x) triple or one per slice [{n}, 3], got shape "
            f"{values.shape}"
        )
    return values.astype(np.float64)


def _volume_rows(in_volume: np.ndarray, positions: np.ndarray, volume_id) -> np.ndarray:
    """Rows of one volume sorted by slice position, ``[D]``; error on a gap or a repeat."""
    rows = np.flatnonzero(in_volume)
    rows = rows[np.argsort(positions[rows], kind="stable")]
    steps = np.diff(positions[rows])
    if np.any(steps != 1):
        index = positions[rows].tolist()
        problem = "repeats a slice_index" if np.any(steps == 0) else "has a gap in slice_index"
        raise ValueError(
            f"volume {volume_id!r} {problem} ({index[:20]}); HD95 needs contiguous slices "
            "(pass whole volumes, or score the sub-volumes separately with different ids)"
        )
    return rows


def _volume_spacing(spacings: np.ndarray, volume_id) -> tuple[float, ...]:
    """The one ``(z, y, x)`` spacing of a volume's slices ``[D, 3]``; error if they differ."""
    if not np.allclose(spacings, spacings[0], rtol=1e-6, atol=0.0, equal_nan=True):
        distinct = np.unique(spacings, axis=0)[:3].tolist()
        raise ValueError(
            f"spacing must be constant within a volume; volume {volume_id!r} has {distinct}"
        )
    try:
        return _spacing(spacings[0], 3)
    except ValueError as error:
        raise ValueError(f"volume {volume_id!r}: {error}") from None


# --------------------------------------------------------------------------------------------
# result tables
# --------------------------------------------------------------------------------------------
def summarize(df: pd.DataFrame, by: Sequence[str] | str, value: str = "dice") -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` per group, plus a ``"mean ± std"`` text.

    The papers report mean ± std over folds or seeds
    (docs/methods.md, "Protocol common to all chapters"). ``std`` uses ddof=1 (the sample
    standard deviation); a group with one value has std NaN, shown as ``"0.812 ± –"``. NaN values
    (e.g. empty-class Dice) are left out, and ``n`` counts the values actually used.

    Args:
        df: one row per measurement (e.g. per seed and volume).
        by: grouping column(s), e.g. ``["init", "n_labelled"]``; ``[]`` summarises everything.
        value: the numeric column to summarise.

    Returns:
        The ``by`` columns, then ``mean``, ``std``, ``n`` and ``mean ± std`` (3 decimals),
        one row per group, sorted by the groups.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    by = [by] if isinstance(by, str) else list(by)
    missing = [column for column in [*by, value] if column not in df.columns]
    if missing:
        raise ValueError(f"summarize: df has no column(s) {missing}; it has {list(df.columns)}")
    if not pd.api.types.is_numeric_dtype(df[value]):
        raise ValueError(f"summarize: column {value!r} must be numeric, got {df[value].dtype}")

    if by:
        grouped = df.groupby(by, sort=True, dropna=False, observed=True)[value]
        table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    else:
        column = df[value]
        table = pd.DataFrame(
            {"mean": [column.mean()], "std": [column.std()], "n": [column.count()]}
        )
    table["mean ± std"] = [
        _format_mean_std(m, s) for m, s in zip(table["mean"], table["std"], strict=True)
    ]
    return table


def _format_mean_std(mean: float, std: float) -> str:
    mean_text = "–" if pd.isna(mean) else f"{mean:.3f}"
    std_text = "–" if pd.isna(std) else f"{std:.3f}"
    return f"{mean_text} ± {std_text}"
