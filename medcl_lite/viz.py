"""The pictures the notebooks show: images, positive pairs and masks, curves, overlays, results.

Every function builds and returns a :class:`matplotlib.figure.Figure` and never calls
``plt.show()``: a notebook displays the returned figure, a script saves it with
:func:`save_figure`. Inputs may be numpy arrays or torch tensors (any device).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from medcl_lite.checkpoint import atomic_write
from medcl_lite.utils import as_numpy

__all__ = [
    "plot_curves",
    "plot_dice_vs_labels",
    "plot_embeddings",
    "plot_headroom",
    "plot_paired",
    "plot_roc",
    "save_figure",
    "show_correspondences",
    "show_heatmaps",
    "show_images",
    "show_mask",
    "show_overlays",
    "show_pairs",
]

#: Colours of the foreground classes 1, 2, ... (class 0, the background, is never drawn).
CLASS_COLOURS = plt.get_cmap("tab10").colors

_PANEL_INCHES = 1.8


# --------------------------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------------------------
def _image_stack(images, name: str = "images") -> np.ndarray:
    """Grey [N, H, W] or RGB [N, H, W, 3] from [N, H, W], [N, 1|3, H, W] or [H, W]."""
    array = as_numpy(images, name)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 4 and array.shape[1] == 3:
        array = np.moveaxis(array, 1, -1)
    elif array.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W] or [N, 1, H, W], got shape {array.shape}")
    if len(array) == 0:
        raise ValueError(f"{name} is empty")
    return array.astype(np.float32, copy=False)


def _grey_range(images: np.ndarray) -> dict:
    """vmin/vmax 0..1 for images in [0, 1] (so brightness changes stay visible), else auto."""
    finite = images[np.isfinite(images)]
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        return {"vmin": 0.0, "vmax": 1.0}
    return {}


def _check_titles(titles: Sequence[str] | None, count: int, name: str = "titles") -> list:
    if titles is None:
        return [None] * count
    titles = list(titles)
    if len(titles) < count:
        raise ValueError(f"{name} has {len(titles)} entries for {count} images")
    return titles


def _bare(ax) -> None:
    """No ticks or frame, but keep the axis so that a y label (a row name) stays visible."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------------------------
# images and pairs
# --------------------------------------------------------------------------------------------
def show_images(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cmap: str = "gray",
    suptitle: str | None = None,
) -> Figure:
    """A grid of images, ``ncols`` per row.

    Args:
        images: ``[N, H, W]`` or ``[N, 1, H, W]`` (``[N, 3, H, W]`` is shown as RGB). Values in
            [0, 1] are drawn on a fixed 0..1 grey scale, so intensity augmentations are visible;
            other ranges (e.g. normalised tensors) are scaled per image.
        titles: one title per image.
        ncols: images per row.
        cmap: colour map of grey images.
        suptitle: title of the whole figure.

    Returns:
        A figure with one axis per image.
    """
    stack = _image_stack(images)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    titles = _check_titles(titles, len(stack))
    ncols = min(ncols, len(stack))
    nrows = math.ceil(len(stack) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(_PANEL_INCHES * ncols, _PANEL_INCHES * nrows + 0.4), squeeze=False
    )
    value_range = _grey_range(stack)
    for index, ax in enumerate(axes.flat):
        if index >= len(stack):
            fig.delaxes(ax)
            continue
        ax.imshow(stack[index], cmap=cmap, **value_range)
        ax.set_axis_off()
        if titles[index] is not None:
            ax.set_title(str(titles[index]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_pairs(
    first,
    second,
    titles: Sequence[str] | None = None,
    row_labels: tuple[str, str] = ("view 1", "view 2"),
    suptitle: str | None = None,
) -> Figure:
    """Positive pairs as two rows: column i shows ``first[i]`` above ``second[i]``.

    Args:
        first, second: ``[N, H, W]`` or ``[N, 1, H, W]``, the two views (or the anchor and its
            positive, e.g. two time points of one patient for CL-TCI).
        titles: one title per pair (column).
        row_labels: names of the two rows.
        suptitle: title of the whole figure.

    Returns:
        A figure with 2N axes (row-major: the N of the first row, then the second).
    """
    top, bottom = _image_stack(first, "first"), _image_stack(second, "second")
    if len(top) != len(bottom):
        raise ValueError(f"first and second must have as many images: {len(top)} vs {len(bottom)}")
    if len(row_labels) != 2:
        raise ValueError(f"row_labels must be two names, got {row_labels!r}")
    titles = _check_titles(titles, len(top))
    n = len(top)
    fig, axes = plt.subplots(
        2, n, figsize=(_PANEL_INCHES * n + 0.4, 2 * _PANEL_INCHES + 0.4), squeeze=False
    )
    for row, (stack, label) in enumerate(zip((top, bottom), row_labels, strict=True)):
        value_range = _grey_range(stack)
        for column in range(n):
            ax = axes[row, column]
            ax.imshow(stack[column], cmap="gray", **value_range)
            _bare(ax)
            if row == 0 and titles[column] is not None:
                ax.set_title(str(titles[column]), fontsize=9)
        axes[row, 0].set_ylabel(label)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_correspondences(view1, view2, points1, points2, title: str | None = None) -> Figure:
    """Two views side by side with lines joining corresponding locations (IDEAL's dense positives).

    Args:
        view1, view2: ``[H, W]`` (or ``[1, H, W]``) images of one slice under two augmentations.
        points1, points2: ``[M, 2]`` (row, column) pixel positions in ``view1`` / ``view2``; point
            ``m`` of one view is the positive of point ``m`` of the other.
        title: figure title.
    """
    left, right = (_image_stack(v, name)[0] for v, name in ((view1, "view1"), (view2, "view2")))
    p1, p2 = (np.asarray(as_numpy(p, name), dtype=float) for p, name in ((points1, "points1"), (points2, "points2")))
    if p1.ndim != 2 or p1.shape[1] != 2 or p1.shape != p2.shape:
        raise ValueError(f"points1 and points2 must both be [M, 2] (row, column), got {p1.shape} and {p2.shape}")
    gap = left.shape[1] // 8
    canvas = np.full((max(left.shape[0], right.shape[0]), left.shape[1] + gap + right.shape[1]), np.nan)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap :] = right
    fig, ax = plt.subplots(figsize=(2 * _PANEL_INCHES * 1.6, _PANEL_INCHES * 1.6))
    ax.imshow(canvas, cmap="gray", **_grey_range(np.stack([left, right])))
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, len(p1), endpoint=False))
    offset = left.shape[1] + gap
    for (r1, c1), (r2, c2), colour in zip(p1, p2, colours, strict=True):
        ax.plot([c1, c2 + offset], [r1, r2], "-", color=colour, lw=0.8, alpha=0.8)
        ax.plot([c1, c2 + offset], [r1, r2], "o", color=colour, ms=2.5)
    _bare(ax)
    ax.set_title(title or "view 1  |  view 2: lines join corresponding locations", fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# positive masks
# --------------------------------------------------------------------------------------------
_MAX_TICK_LABELS = 40


def show_mask(
    mask,
    title: str | None = None,
    row_label: str = "anchor",
    col_label: str = "candidate",
    tick_labels: Sequence | None = None,
) -> Figure:
    """A boolean positive mask ``[Nq, Nk]`` as a picture: which pairs are positive?

    The notebooks' central figure (docs/design.md, "The one idea"): dark cells are positive pairs.

    Args:
        mask: boolean ``[Nq, Nk]`` (e.g. from ``medcl_lite.pairing``).
        title: figure title; the number of positives is appended.
        row_label, col_label: axis names.
        tick_labels: names of the rows and columns (e.g. patient ids or depths): one sequence
            for a square mask, or a pair ``(row_names, column_names)``. Shown up to 40 per axis.

    Returns:
        A figure with one axis.
    """
    array = as_numpy(mask, "mask")
    if array.ndim != 2:
        raise ValueError(f"mask must be [Nq, Nk], got shape {array.shape}")
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError("mask must be boolean (or 0/1)")
        array = array.astype(bool)
    n_rows, n_cols = array.shape
    row_names, col_names = _mask_tick_labels(tick_labels, n_rows, n_cols)

    side = min(8.0, 2.5 + 0.18 * max(n_rows, n_cols))
    fig, ax = plt.subplots(figsize=(side * max(n_cols / max(n_rows, 1), 0.5) + 1.5, side))
    colours = ListedColormap(["#f4f4f4", "#1b7837"])
    ax.imshow(array, cmap=colours, vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    if max(n_rows, n_cols) <= 64:  # cell borders help reading small masks
        ax.set_xticks(np.arange(-0.5, n_cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
    for names, set_ticks, set_labels, count in (
        (row_names, ax.set_yticks, ax.set_yticklabels, n_rows),
        (col_names, ax.set_xticks, ax.set_xticklabels, n_cols),
    ):
        if names is not None and count <= _MAX_TICK_LABELS:
            set_ticks(np.arange(count))
            set_labels([str(name) for name in names], fontsize=7)
    ax.tick_params(axis="x", labelrotation=90 if col_names is not None else 0)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    summary = f"{int(array.sum())} positive pairs of {array.size}"
    ax.set_title(f"{title}\n{summary}" if title else summary)
    legend = [
        Patch(facecolor="#1b7837", label="positive"),
        Patch(facecolor="#f4f4f4", edgecolor="0.6", label="negative"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _mask_tick_labels(tick_labels, n_rows: int, n_cols: int) -> tuple[list | None, list | None]:
    if tick_labels is None:
        return None, None
    labels = list(tick_labels)
    is_pair = (
        len(labels) == 2
        and all(isinstance(part, (Sequence, np.ndarray)) for part in labels)
        and not any(isinstance(part, str) for part in labels)
    )
    if is_pair and (len(labels[0]), len(labels[1])) == (n_rows, n_cols):
        return list(labels[0]), list(labels[1])
    if len(labels) == n_rows == n_cols:
        return labels, labels
    raise ValueError(
        f"tick_labels must be {n_rows} names (square mask) or a pair of {n_rows} row and "
        f"{n_cols} column names, got {len(labels)} entries"
    )


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------
def plot_curves(
    histories: Mapping[str, pd.DataFrame],
    x: str = "step",
    y: str = "loss",
    title: str | None = None,
    logy: bool = False,
) -> Figure:
    """One line per run: ``y`` against ``x`` from each run's history table.

    Args:
        histories: run name -> history DataFrame (e.g. a run's ``metrics.csv``); rows where
            ``y`` is NaN (e.g. validation logged every few steps) are skipped.
        x, y: column names.
        title: axis title.
        logy: logarithmic y axis.

    Returns:
        A figure with one axis and one line per run.
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("histories must be a non-empty dict of run name -> DataFrame")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, history in histories.items():
        if not isinstance(history, pd.DataFrame):
            raise ValueError(
                f"histories[{name!r}] must be a DataFrame, got {type(history).__name__}"
            )
        missing = [column for column in (x, y) if column not in history.columns]
        if missing:
            raise ValueError(
                f"histories[{name!r}] has no column(s) {missing}; it has {list(history.columns)}"
            )
        rows = history[[x, y]].dropna()
        ax.plot(rows[x].to_numpy(), rows[y].to_numpy(), label=str(name))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(title="run")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_roc(scores: Mapping[str, np.ndarray], labels, title: str | None = None) -> Figure:
    """ROC curves of several scorers of one binary label (zero-shot findings, LRCLR chapter).

    Args:
        scores: name -> ``[N]`` scores (higher = finding more likely), e.g. CLIP and LRCLR.
        labels: ``[N]`` 0/1 truth.
        title: axis title.
    Returns:
        One axis: a curve per scorer with its AUC in the legend, and the chance diagonal.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.asarray(as_numpy(labels, "labels")).astype(bool).ravel()
    if truth.all() or not truth.any():
        raise ValueError("labels must hold both classes to draw a ROC curve")
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for name, values in scores.items():
        values = np.asarray(as_numpy(values, f"scores[{name!r}]"), dtype=float).ravel()
        if values.shape != truth.shape:
            raise ValueError(f"scores[{name!r}] has {values.shape[0]} values for {truth.shape[0]} labels")
        fpr, tpr, _ = roc_curve(truth, values)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(truth, values):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def show_heatmaps(images, heatmaps, boxes=None, titles: Sequence[str] | None = None, ncols: int = 4) -> Figure:
    """Images with a heat map over each (e.g. what a report sentence attends to) and boxes.

    Args:
        images: ``[N, H, W]`` grey images; heatmaps: ``[N, H, W]`` non-negative maps (each
            scaled to its own maximum for display).
        boxes: per image ``None`` or a ``(row0, col0, row1, col1)`` half-open pixel box drawn in
            green (e.g. where the finding is).
        titles: one title per image (short: the sentence).
        ncols: images per row.
    """
    from matplotlib.patches import Rectangle

    stack, heat = _image_stack(images, "images"), _image_stack(heatmaps, "heatmaps")
    if stack.shape != heat.shape:
        raise ValueError(f"images and heatmaps must have one shape, got {stack.shape} and {heat.shape}")
    boxes = [None] * len(stack) if boxes is None else list(boxes)
    if len(boxes) != len(stack):
        raise ValueError(f"boxes must have one entry per image ({len(stack)}), got {len(boxes)}")
    titles = _check_titles(titles, len(stack))
    ncols = max(1, min(ncols, len(stack)))
    nrows = math.ceil(len(stack) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.4 * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(stack):
            fig.delaxes(ax)
            continue
        ax.imshow(stack[i], cmap="gray", **_grey_range(stack[i : i + 1]))
        peak = float(heat[i].max())
        ax.imshow(heat[i] / peak if peak > 0 else heat[i], cmap="inferno", alpha=0.45, vmin=0, vmax=1)
        if boxes[i] is not None:
            r0, c0, r1, c1 = boxes[i]
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="lime", lw=1.2))
        _bare(ax)
        if titles[i] is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# segmentation overlays
# --------------------------------------------------------------------------------------------
def show_overlays(
    images,
    targets,
    preds=None,
    class_names: Sequence[str] | None = None,
    n: int = 6,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Images with the ground truth as contours and the prediction filled semi-transparent.

    Args:
        images: ``[N, H, W]`` or ``[N, 1, H, W]``.
        targets: integer label maps ``[N, H, W]`` (0 = background).
        preds: integer label maps ``[N, H, W]``, or logits ``[N, C, H, W]`` (argmax taken);
            None draws the ground truth only.
        class_names: names of all classes, index 0 the background (e.g. ``SliceSet.classes``).
        n: how many images (the first n).
        titles: one title per shown image.

    Returns:
        A figure with one axis per shown image and a legend (one colour per class).
    """
    stack = _image_stack(images)
    target_maps = _label_stack(targets, "targets")
    pred_maps = None
    if preds is not None:
        pred_maps = as_numpy(preds, "preds")
        if pred_maps.ndim == 4:
            pred_maps = pred_maps.argmax(axis=1)
        pred_maps = _label_stack(pred_maps, "preds")
    for name, maps in (("targets", target_maps), ("preds", pred_maps)):
        if maps is not None and maps.shape != stack.shape[:3]:
            raise ValueError(f"{name} shape {maps.shape} does not match images {stack.shape[:3]}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    count = min(n, len(stack))
    titles = _check_titles(titles, count)

    largest = max(int(m.max()) for m in (target_maps, pred_maps) if m is not None)
    num_classes = len(class_names) if class_names is not None else largest + 1
    if largest >= num_classes:
        raise ValueError(f"labels go up to {largest} but class_names has {num_classes} names")
    names = (
        list(class_names) if class_names is not None else [f"class {c}" for c in range(num_classes)]
    )
    colours = [CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)] for c in range(num_classes)]

    ncols = min(count, 3)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.0 * ncols + 1.6, 3.0 * nrows + 0.3), squeeze=False
    )
    value_range = _grey_range(stack)
    for index, ax in enumerate(axes.flat):
        if index >= count:
            fig.delaxes(ax)
            continue
        ax.imshow(stack[index], cmap="gray", **value_range)
        for c in range(1, num_classes):
            if pred_maps is not None and (pred_maps[index] == c).any():
                fill = np.zeros((*pred_maps.shape[1:], 4))
                fill[pred_maps[index] == c] = to_rgba(colours[c], alpha=0.4)
                ax.imshow(fill, interpolation="nearest")
            region = target_maps[index] == c
            if region.any() and not region.all():
                ax.contour(region.astype(float), levels=[0.5], colors=[colours[c]], linewidths=1.5)
        ax.set_axis_off()
        if titles[index] is not None:
            ax.set_title(str(titles[index]), fontsize=9)

    handles = [Patch(color=colours[c], label=names[c]) for c in range(1, num_classes)]
    handles.append(Line2D([], [], color="0.3", linewidth=1.5, label="ground truth (contour)"))
    if pred_maps is not None:
        handles.append(Patch(facecolor="0.3", alpha=0.4, label="prediction (filled)"))
    fig.legend(handles=handles, loc="center right", frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / (3.0 * ncols + 1.6), 1))
    return fig


def _label_stack(labels, name: str) -> np.ndarray:
    array = as_numpy(labels, name)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be label maps [N, H, W], got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} has negative labels")
    return array


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
_ALL = "all"


def plot_dice_vs_labels(
    df: pd.DataFrame,
    x: str = "n_labelled",
    y: str = "dice",
    hue: str | None = "init",
    title: str | None = None,
) -> Figure:
    """Dice against the label budget: mean ± std over seeds (rows) for each ``hue``.

    The x axis is log2 with the actual budgets as tick labels; the string ``"all"`` (every
    label) is placed one step after the largest number. Std uses ddof=1; a single seed has no
    error bar. Series are nudged sideways a little so that their error bars do not overlap.

    Args:
        df: one row per run, with columns ``x`` (positive numbers or "all"), ``y`` and ``hue``.
        x, y: budget and score columns.
        hue: column naming the series (e.g. the initialisation); None for one series.
        title: axis title.

    Returns:
        A figure with one axis and one error-bar container per series.
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise ValueError("df must be a non-empty DataFrame")
    columns = [x, y] + ([hue] if hue is not None else [])
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"plot_dice_vs_labels: df has no column(s) {missing}")
    budgets = [_budget(value, x) for value in df[x]]
    numbers = [b for b in budgets if b != _ALL]
    if not numbers:
        raise ValueError(f"column {x!r} needs at least one numeric budget besides 'all'")
    all_position = math.log2(max(numbers)) + 1.0
    data = pd.DataFrame(
        {
            "position": [all_position if b == _ALL else math.log2(b) for b in budgets],
            "value": pd.to_numeric(df[y], errors="raise").to_numpy(),
            "series": df[hue].astype(str).to_numpy() if hue is not None else y,
        }
    )
    series_names = list(dict.fromkeys(data["series"]))
    width = 0.06 * (len(series_names) - 1)
    offsets = np.linspace(-width / 2, width / 2, len(series_names))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for offset, name in zip(offsets, series_names, strict=True):
        stats = (
            data[data["series"] == name]
            .groupby("position")["value"]
            .agg(["mean", "std", "count"])
            .sort_index()
        )
        label = f"{name} (n={int(stats['count'].max())} seeds)" if hue is not None else y
        ax.errorbar(
            stats.index.to_numpy() + offset,
            stats["mean"].to_numpy(),
            yerr=stats["std"].fillna(0.0).to_numpy(),
            marker="o",
            capsize=3,
            label=label,
        )
    ticks = sorted(
        {(p, b) for p, b in zip(data["position"], budgets, strict=True)}, key=lambda t: t[0]
    )
    ax.set_xticks([p for p, _ in ticks])
    ax.set_xticklabels([_ALL if b == _ALL else f"{b:g}" for _, b in ticks])
    ax.set_xlabel(f"{x} (log2 scale)")
    ax.set_ylabel(f"{y} (mean ± std)")
    ax.grid(alpha=0.3)
    if hue is not None:
        ax.legend(title=hue)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_paired(
    comparison: pd.DataFrame,
    label: Sequence[str],
    baseline: str = "random init",
    unit: str = "Dice",
    title: str | None = None,
) -> Figure:
    """The paired comparisons of :func:`medcl_lite.paired.paired_comparison` as a forest plot: one
    line per row, its mean difference (dot) and 95 % interval (bar), a vertical line at 0.

    A bar clear of 0 is a "better" (right) or "worse" (left) verdict; one that crosses 0 is "no
    evidence". Rows with fewer than two pairs have no interval and show the dot alone.

    Args:
        comparison: rows with ``mean_diff``, ``ci_low``, ``ci_high``, ``verdict`` and ``label``'s columns.
        label: the columns that name a row, joined with " · " (e.g. ``["protocol", "site", "init"]``).
        baseline, unit: the axis label, "<unit> difference vs <baseline>".
    """
    needed = ["mean_diff", "ci_low", "ci_high", "verdict", *label]
    if not isinstance(comparison, pd.DataFrame) or comparison.empty:
        raise ValueError("plot_paired: comparison must be a non-empty DataFrame (paired_comparison's output)")
    missing = [c for c in needed if c not in comparison.columns]
    if missing:
        raise ValueError(f"plot_paired: comparison has no column(s) {missing}")
    rows = comparison.reset_index(drop=True)
    names = [" · ".join("all labels" if str(v) == "all" else str(v) for v in values)
             for values in rows[list(label)].itertuples(index=False)]  # fmt: skip
    colours = {"better": "tab:green", "worse": "tab:red"}
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * len(rows)))
    positions = np.arange(len(rows))[::-1]  # the first row on top
    for y, row in zip(positions, rows.itertuples(index=False), strict=True):
        colour = colours.get(row.verdict, "tab:grey")
        if np.isfinite(row.ci_low) and np.isfinite(row.ci_high):
            ax.plot([row.ci_low, row.ci_high], [y, y], color=colour, linewidth=2)
        ax.plot([row.mean_diff], [y], "o", color=colour)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(positions)
    ax.set_yticklabels(names)
    ax.set_xlabel(f"{unit} difference vs {baseline} (mean and 95 % interval over pairs)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", label=v) for v, c in [*colours.items(), ("no evidence", "tab:grey")]]
    ax.legend(handles=handles, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_headroom(room: pd.DataFrame, target: float | None = None, title: str | None = None) -> Figure:
    """Room left by the smallest label budget, one line per setting: random init's score at the
    smallest budget (open dot) and at the largest (filled dot), joined (a dumbbell plot).

    Args:
        room: :func:`medcl_lite.synthesis.headroom`'s table (``where``, ``smallest``, ``largest``,
            ``at smallest``, ``at largest``, ``room``).
        target: optional room the course asks of its data (e.g. 0.10 Dice), written on each line's
            label as met or not.
    """
    needed = ["where", "smallest", "largest", "at smallest", "at largest", "room"]
    if not isinstance(room, pd.DataFrame) or room.empty or any(c not in room.columns for c in needed):
        raise ValueError(f"plot_headroom: room must be a non-empty DataFrame with columns {needed}")
    rows = room.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.4 * len(rows)))
    positions = np.arange(len(rows))[::-1]
    names = []
    for y, (_, row) in zip(positions, rows.iterrows(), strict=True):
        low, high = row["at smallest"], row["at largest"]
        ax.plot([low, high], [y, y], color="tab:grey", linewidth=2)
        ax.plot([low], [y], "o", markerfacecolor="white", color="tab:blue")
        ax.plot([high], [y], "o", color="tab:blue")
        mark = "" if target is None else (" ✓" if row["room"] >= target else " ✗")
        names.append(f"{row['where']}: {row['smallest']} → {row['largest']}, room {row['room']:+.3f}{mark}")
    ax.set_yticks(positions)
    ax.set_yticklabels(names)
    ax.set_xlabel("random init score (open: smallest budget, filled: largest)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _budget(value, column: str) -> float | str:
    if isinstance(value, str):
        if value.strip().lower() == _ALL:
            return _ALL
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"column {column!r}: {value!r} is neither a number nor 'all'"
            ) from None
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"column {column!r}: budgets must be positive numbers (log2), got {value}")
    return value


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------
def plot_embeddings(
    features,
    labels,
    method: str = "pca",
    title: str | None = None,
    label_name: str = "patient",
    max_legend: int = 12,
    seed: int = 0,
) -> Figure:
    """A 2-D projection of features (PCA or t-SNE), coloured by a label.

    Shows what pretraining learned: e.g. CL-TCI embeddings cluster by patient, PCL embeddings
    order by depth.

    Args:
        features: ``[N, D]`` (e.g. pooled encoder features), numpy or torch.
        labels: ``[N]``. Strings, integers and booleans are categories (one colour each, a
            legend when there are at most ``max_legend``); floats are continuous (e.g. depth)
            and get a colour bar.
        method: ``"pca"`` or ``"tsne"`` (perplexity min(30, (N - 1) / 3), PCA initialisation).
        title: axis title.
        label_name: what the labels are, for the legend / colour bar.
        max_legend: largest number of categories listed in a legend.
        seed: random state of the projection.

    Returns:
        A figure with one axis (two with a colour bar).
    """
    data = as_numpy(features, "features").astype(np.float64)
    if data.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {data.shape}")
    values = as_numpy(labels, "labels")
    if values.ndim != 1 or len(values) != len(data):
        raise ValueError(f"labels must be [N] with N = {len(data)}, got shape {values.shape}")
    if len(data) < 3 or data.shape[1] < 2:
        raise ValueError(f"features need at least 3 samples and 2 dimensions, got {data.shape}")
    points, axis_names = _project(data, method, seed)

    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    if values.dtype.kind == "f":
        scatter = ax.scatter(points[:, 0], points[:, 1], c=values, cmap="viridis", s=14)
        fig.colorbar(scatter, ax=ax, label=label_name)
    else:
        categories = list(dict.fromkeys(values.tolist()))
        palette = _category_colours(len(categories))
        for index, category in enumerate(categories):
            chosen = values == category
            colour = palette[index]
            ax.scatter(
                points[chosen, 0], points[chosen, 1], color=colour, s=14, label=str(category)
            )
        if len(categories) <= max_legend:
            ax.legend(title=label_name, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
        else:
            ax.text(
                0.01,
                0.01,
                f"{len(categories)} {label_name} values (colours; legend omitted)",
                transform=ax.transAxes,
                fontsize=8,
            )
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title or f"{method.upper()} of {len(data)} embeddings, coloured by {label_name}")
    fig.tight_layout()
    return fig


def _category_colours(count: int) -> list:
    """Distinct colours: tab10 up to 10 categories, tab20 up to 20, then evenly spaced hues."""
    if count <= 10:
        return list(plt.get_cmap("tab10").colors[:count])
    if count <= 20:
        return list(plt.get_cmap("tab20").colors[:count])
    return [plt.get_cmap("hsv")(index / count) for index in range(count)]


def _project(data: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, tuple[str, str]]:
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        points = pca.fit_transform(data)
        ratio = pca.explained_variance_ratio_ * 100
        return points, (f"PC 1 ({ratio[0]:.0f} % variance)", f"PC 2 ({ratio[1]:.0f} % variance)")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(data) - 1) / 3)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(data), ("t-SNE 1", "t-SNE 2")
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` atomically: write a temporary file in the same folder, then ``os.replace``.

    A reader (or a crashed run) never sees a half-written figure. Parent folders are created;
    the format comes from the suffix (``.png``, ``.pdf``, ``.svg`` ...).

    Returns:
        The path written.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    file_format = path.suffix.lstrip(".").lower()
    if not file_format:
        raise ValueError(f"path {str(path)!r} needs a suffix naming the format, e.g. '.png'")
    return atomic_write(path, lambda f: fig.savefig(f, format=file_format, dpi=dpi, bbox_inches="tight"))
