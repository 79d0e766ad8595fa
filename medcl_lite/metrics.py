"""Segmentation metrics: Dice (per image, pooled over slices, per volume), HD95, result summaries.

Three Dice numbers answer three questions, and papers mix them up (METHODS.md, "PCL caveats"):

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

__all__ = ["dice_per_image", "dice_per_volume", "dice_pooled", "hd95", "summarize"]


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

    This is how the PCL and CL-TCI public code report Dice (METHODS.md). It weights each slice by
    its structure's size and is usually higher than the mean of :func:`dice_per_image`.

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
    volume (DESIGN.md, "Runs": the honest per-volume number).

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
    ids = as_numpy(volume_ids, "volume_ids")
    if ids.ndim != 1 or len(ids) != len(pred):
        raise ValueError(
            f"volume_ids must be one id per slice ({len(pred)}), got shape {ids.shape}"
        )
    classes = _classes(num_classes, include_background)
    columns = _dice_column_names(classes, num_classes, class_names)

    codes, volumes = pd.factorize(pd.Series(ids), sort=True)
    intersection, sizes = _overlap_counts(pred, target, classes)
    volume_intersection = np.zeros((len(volumes), len(classes)), dtype=np.int64)
    volume_sizes = np.zeros_like(volume_intersection)
    np.add.at(volume_intersection, codes, intersection)
    np.add.at(volume_sizes, codes, sizes)
    dice = _dice_from_counts(volume_intersection, volume_sizes)

    table = pd.DataFrame(dice, columns=columns)
    table.insert(0, "volume_id", np.asarray(volumes))
    table.insert(1, "n_slices", np.bincount(codes, minlength=len(volumes)))
    table["mean"] = _row_nanmean(dice)
    return table


def _dice_column_names(
    classes: list[int], num_classes: int, class_names: Sequence[str] | None
) -> list[str]:
    if class_names is None:
        return [f"dice_{c}" for c in classes]
    names = [str(name) for name in class_names]
    if len(names) == num_classes:
        names = [names[c] for c in classes]
    elif len(names) != len(classes):
        raise ValueError(
            f"class_names must have {num_classes} names (all classes) or {len(classes)} "
            f"(the scored ones), got {len(names)}"
        )
    reserved = {"volume_id", "n_slices", "mean"} & set(names)
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
# result tables
# --------------------------------------------------------------------------------------------
def summarize(df: pd.DataFrame, by: Sequence[str] | str, value: str = "dice") -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` per group, plus a ``"mean ± std"`` text.

    The papers report mean ± std over folds or seeds (METHODS.md, "Protocol"). ``std`` uses
    ddof=1 (the sample standard deviation); a group with one value has std NaN, shown as
    ``"0.812 ± –"``. NaN values (e.g. empty-class Dice) are left out, and ``n`` counts the
    values actually used.

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
