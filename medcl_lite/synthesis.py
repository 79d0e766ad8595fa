"""Every chapter's recorded reference run side by side (chapter 06, "When does it help?").

The chapters each answer "which pairs are positive?" on their own data; chapter 06 reads their
recorded reference tables (:mod:`medcl_lite.reference`, never retyped) together:

- :func:`gather` stacks one table of every recorded chapter, with a ``chapter`` column and a
  ``where`` column naming each row's setting (``arch``, ``setting``, ``finding`` ... as present);
- :func:`at_smallest_budget` keeps the rows of each chapter's smallest label budget, where
  pretraining should matter most;
- :func:`compare_protocols` reads every chapter's evaluation protocols (full fine-tuning, frozen
  encoder, linear probe ...) as paired differences against random init;
- :func:`headroom` measures the room the smallest budget leaves: random init there against the
  largest budget (all labels when run), per chapter and setting;
- :func:`mask_agreement` asks of a pairing rule how alike the *segmentation masks* of its
  positive pairs are, against its negative pairs: a rule whose positives share their masks pulls
  together what the segmenter must label alike (why PCL's positions suit volumes).

A chapter without a recorded run is listed as missing, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medcl_lite.paired import paired_comparison
from medcl_lite.reference import load_table

__all__ = ["CHAPTERS", "GROUP_COLUMNS", "at_smallest_budget", "budget_key", "compare_protocols", "gather", "headroom",
           "mask_agreement", "pairwise_mask_dice"]

#: The segmentation chapters, in course order (05 scores findings by AUC, not masks by Dice).
CHAPTERS = ("00_quickstart", "01_cl_tci", "02_pcl", "03_lrc", "04_ideal")
#: Columns that name a row's setting inside a chapter's table, when the table has them.
GROUP_COLUMNS = ("arch", "setting", "start", "finding")


def budget_key(n_labelled) -> tuple[bool, float]:
    """Sort key of a label budget: numbers ascending, then ``"all"``."""
    text = str(n_labelled)
    return (text == "all", 0.0 if text == "all" else float(text))


def gather(name: str = "comparison.csv", chapters: Sequence[str] = CHAPTERS) -> tuple[pd.DataFrame, list[str]]:
    """One recorded table of every chapter, stacked: ``(table, missing)``.

    ``table`` has the chapters' own columns plus ``chapter`` and ``where`` (the chapter and its
    :data:`GROUP_COLUMNS`, joined with " · "); ``missing`` lists the chapters that have no recorded
    ``name``. Comparison tables are kept against random init only (their ``baseline`` column, when
    present, may name another method for method-vs-method rows)."""
    parts, missing = [], []
    for chapter in chapters:
        table = load_table(chapter, name)
        if table is None:
            missing.append(chapter)
            continue
        if "baseline" in table.columns:
            table = table[table["baseline"] == "random init"]
        groups = [c for c in GROUP_COLUMNS if c in table.columns]
        where = table[groups].astype(str).agg(" · ".join, axis=1) if groups else pd.Series("", index=table.index)
        table = table.assign(chapter=chapter, where=[" · ".join(filter(None, (chapter, w))) for w in where])
        parts.append(table)
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), missing


def at_smallest_budget(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each chapter's smallest numeric label budget (``n_labelled``), in table order."""
    if table.empty:
        return table
    if "n_labelled" not in table.columns or "chapter" not in table.columns:
        raise ValueError("at_smallest_budget: the table needs 'chapter' and 'n_labelled' columns (gather's output)")
    numeric = table[table["n_labelled"].astype(str) != "all"]
    smallest = numeric.groupby("chapter", sort=False)["n_labelled"].transform(lambda s: min(s, key=budget_key))
    return numeric[numeric["n_labelled"] == smallest].reset_index(drop=True)


def compare_protocols(protocols: pd.DataFrame, value: str = "test_dice") -> pd.DataFrame:
    """Pretrained minus random init per ``where``, ``protocol`` and budget, for :func:`gather`'s
    ``protocols.csv`` rows (one row per run). Runs pair on the same fold and seed, or on the seed
    alone in a chapter without folds (:func:`medcl_lite.paired.paired_comparison`)."""
    if protocols.empty:
        return pd.DataFrame()
    parts = []
    for _, block in protocols.groupby("chapter", sort=False):
        has_folds = "fold" in block.columns and block["fold"].notna().all()
        pair_on = ["fold", "seed"] if has_folds else ["seed"]
        parts.append(paired_comparison(block, ["where", "protocol", "n_labelled"], value, pair_on=pair_on))
    return pd.concat(parts, ignore_index=True)


def headroom(results: pd.DataFrame, value: str = "test_dice", init: str = "random init") -> pd.DataFrame:
    """Room left by the smallest budget, per ``where`` (chapter and setting) of :func:`gather`'s
    results: ``init``'s mean ``value`` at the smallest budget and at the largest one (``"all"`` when
    run), and their difference ``room``. Rows without ``value`` (a chapter scoring another metric)
    are left out."""
    if results.empty:
        return pd.DataFrame(columns=["where", "smallest", "largest", "at smallest", "at largest", "room"])
    if value not in results.columns:
        raise ValueError(f"headroom: no column {value!r} in the results; have {sorted(results.columns)}")
    rows = results[(results["init"] == init) & results[value].notna()]
    out = []
    for where, block in rows.groupby("where", sort=False):
        means = block.groupby(block["n_labelled"].astype(str))[value].mean()
        budgets = sorted(means.index, key=budget_key)
        if len(budgets) < 2:
            continue
        low, high = budgets[0], budgets[-1]
        out.append({"where": where, "chapter": block["chapter"].iloc[0], "smallest": low, "largest": high,
                    "at smallest": means[low], "at largest": means[high], "room": means[high] - means[low]})  # fmt: skip
    return pd.DataFrame(out)


def pairwise_mask_dice(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """``[N, N]`` Dice between the label maps of every two images, averaged over the foreground
    classes present in either map (NaN when neither has foreground).

    Per class ``c``: ``2 |M_i = c and M_j = c| / (|M_i = c| + |M_j = c|)``, from one matrix product
    of the flattened one-hot maps. Args: ``masks [N, H, W]`` integer labels in ``[0, num_classes)``."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"pairwise_mask_dice: masks must be integer [N, H, W], got {masks.dtype} {masks.shape}")
    if masks.size and (masks.min() < 0 or masks.max() >= num_classes):
        raise ValueError(f"pairwise_mask_dice: labels outside [0, {num_classes}): [{masks.min()}, {masks.max()}]")
    flat = masks.reshape(len(masks), -1)
    total = np.zeros((len(masks), len(masks)))
    present = np.zeros_like(total)
    for c in range(1, num_classes):
        onehot = (flat == c).astype(np.float64)  # [N, HW]
        sizes = onehot.sum(axis=1)
        both = sizes[:, None] + sizes[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(both > 0, 2 * (onehot @ onehot.T) / both, 0.0)
        total += dice
        present += both > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0, total / np.maximum(present, 1), np.nan)


def mask_agreement(masks: np.ndarray, positive: np.ndarray, num_classes: int, duplicate: float = 0.8) -> dict:
    """How alike the masks of a pairing rule's positive pairs are, against its negative pairs.

    Args:
        masks: ``[N, H, W]`` label maps of N images.
        positive: ``[N, N]`` bool, the rule's positive pairs (a :mod:`medcl_lite.pairing` mask);
            the diagonal (an image with itself) is ignored.
        duplicate: mask Dice above which a negative pair counts as a *false negative*: two images
            the segmenter must label (almost) alike, pushed apart by the loss.
    Returns:
        ``{"positive pairs", "negative pairs", "mask Dice of positives", "mask Dice of negatives",
        "false-negative share"}`` over the pairs ``i < j`` whose Dice is defined.
    """
    positive = np.asarray(positive, dtype=bool)
    if positive.shape != (len(masks), len(masks)):
        raise ValueError(f"mask_agreement: positive must be [N, N] = {(len(masks),) * 2}, got {positive.shape}")
    dice = pairwise_mask_dice(masks, num_classes)
    upper = np.triu(np.ones_like(positive), k=1) & ~np.isnan(dice)
    pos, neg = dice[upper & positive], dice[upper & ~positive]
    return {
        "positive pairs": int(pos.size),
        "negative pairs": int(neg.size),
        "mask Dice of positives": float(pos.mean()) if pos.size else float("nan"),
        "mask Dice of negatives": float(neg.mean()) if neg.size else float("nan"),
        "false-negative share": float((neg > duplicate).mean()) if neg.size else float("nan"),
    }
