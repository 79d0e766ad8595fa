"""Paired comparisons of initialisations: each method minus the baseline on the same fold and seed.

Fine-tuning runs of two initialisations that share a fold and a seed see the same labelled images,
the same validation and test rows and the same decoder start; their difference removes what the
fold and the seed add to both. So a comparison is made over *pairs*: for method ``m`` and baseline
``b`` (random init), pair ``i`` (a fold x seed) gives

    d_i = value(m, i) - value(b, i),        i = 1 .. n

and is reported as the mean difference ``d̄`` with a 95 % confidence interval, either Student's t
over the pairs

    d̄ ± t_{0.975, n-1} · s_d / √n          (s_d: sample standard deviation of the d_i)

or a percentile bootstrap of ``d̄`` (resampling the pairs). The verdict is ``"better"`` or ``"worse"``
only when the interval excludes 0, else ``"no evidence"``; with fewer than 2 pairs there is no
interval (``"too few pairs"``). Comparing several methods with one baseline and reading off the best
one inflates its difference (the winner's curse): each row is one pre-chosen comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["COLUMNS", "SMOKE_NOTE", "interval", "paired_comparison", "paired_differences", "verdict_text"]

#: Columns of :func:`paired_comparison` after the group columns.
COLUMNS = ["init", "n_pairs", "mean_diff", "ci_low", "ci_high", "verdict"]


def interval(
    differences, level: float = 0.95, method: str = "t", resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of paired differences ``[n]``: Student's t interval (``method="t"``)
    or a percentile bootstrap of the mean (``"bootstrap"``, ``resamples`` draws, seeded). NaN
    bounds for fewer than 2 differences; identical differences give a zero-width interval."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if d.size < 2:
        return mean, float("nan"), float("nan")
    if method == "t":
        half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
        return mean, mean - half, mean + half
    draws = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[draws].mean(axis=1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return mean, float(low), float(high)


def _check_columns(rows: pd.DataFrame, columns: Sequence[str]) -> None:
    if not isinstance(rows, pd.DataFrame):
        raise ValueError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ValueError(f"paired comparison: rows have no column(s) {missing}; they have {list(rows.columns)}")


def paired_differences(
    rows: pd.DataFrame,
    groups: Sequence[str] = ("n_labelled",),
    value: str = "test_dice",
    baseline: str = "random init",
    pair_on: Sequence[str] = ("fold", "seed"),
) -> pd.DataFrame:
    """One row per (group, method, pair): ``d = value(method) - value(baseline)`` on the same
    ``pair_on`` keys (those of them that ``rows`` has). Runs without a baseline partner are left out.

    Returns:
        The ``groups`` columns, ``init``, the pair keys, ``value``, ``baseline_value`` and ``diff``.
    """
    groups = list(groups)
    keys = [k for k in pair_on if k in rows.columns]
    _check_columns(rows, [*groups, "init", value])
    if baseline not in set(rows["init"]):
        raise ValueError(f"paired comparison: no rows of the baseline {baseline!r}; inits are {sorted(set(rows['init']))}")
    on = [*groups, *keys]
    if not on:
        raise ValueError(f"paired comparison: rows have none of the pair keys {list(pair_on)} and no groups")
    base = rows[rows["init"] == baseline][[*on, value]].rename(columns={value: "baseline_value"})
    if base.duplicated(on).any():
        raise ValueError(f"paired comparison: several {baseline!r} runs share {on}; pair on more keys")
    others = rows[rows["init"] != baseline][[*on, "init", value]]
    pairs = others.merge(base, on=on, how="inner")
    pairs["diff"] = pairs[value] - pairs["baseline_value"]
    return pairs[[*groups, "init", *keys, value, "baseline_value", "diff"]]


def paired_comparison(
    rows: pd.DataFrame,
    groups: Sequence[str] = ("n_labelled",),
    value: str = "test_dice",
    baseline: str = "random init",
    pair_on: Sequence[str] = ("fold", "seed"),
    level: float = 0.95,
    method: str = "t",
) -> pd.DataFrame:
    """Each method against ``baseline`` per group, over paired runs (module docstring).

    Returns:
        The ``groups`` columns, then :data:`COLUMNS`: ``init``, ``n_pairs``, ``mean_diff``,
        ``ci_low``, ``ci_high`` (the ``level`` interval) and ``verdict`` (``"better"``,
        ``"worse"``, ``"no evidence"`` or ``"too few pairs"``); methods in order of appearance.
    """
    groups = list(groups)
    pairs = paired_differences(rows, groups, value, baseline, pair_on)
    records = []
    for key, block in pairs.groupby([*groups, "init"], sort=False, dropna=False):
        mean, low, high = interval(block["diff"], level, method)
        n = int(block["diff"].notna().sum())
        verdict = ("too few pairs" if n < 2 else "better" if low > 0 else "worse" if high < 0
                   else "no evidence")  # fmt: skip
        key = key if isinstance(key, tuple) else (key,)
        records.append({**dict(zip([*groups, "init"], key, strict=True)), "n_pairs": n, "mean_diff": mean,
                        "ci_low": low, "ci_high": high, "verdict": verdict})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=[*groups, *COLUMNS])


def _describe(value) -> str:
    return "all labels" if str(value) == "all" else str(value)


#: The line over a smoke run's readings (:func:`verdict_text` with ``smoke=True``).
SMOKE_NOTE = (
    "*Smoke run: a plumbing check (seconds of training on a handful of images). The differences "
    "below are noise, not findings; the cpu size or the recorded reference gives the reading.*\n"
)


def verdict_text(
    comparison: pd.DataFrame,
    groups: Sequence[str] = ("n_labelled",),
    baseline: str = "random init",
    label=None,
    unit: str = "Dice",
    caveat: bool = True,
    smoke: bool = False,
) -> str:
    """The computed reading of :func:`paired_comparison`, one Markdown bullet per row:
    ``- <group>: <init> +0.012 Dice vs <baseline> over 9 pairs, 95 % interval [+0.004, +0.020]: better``.

    ``label(row) -> str`` names a row's group (default: the ``groups`` values joined with ", ",
    ``"all"`` read as "all labels"). When several methods face the same baseline, a last line says
    that reading off the best of them inflates its difference (module docstring); ``caveat=False``
    leaves it out where the rows are not competing methods (e.g. two streams of one model).
    ``smoke=True`` (a smoke-size run: a plumbing check) prints the differences without a verdict,
    under a line that says they are noise.
    """
    groups = list(groups)
    _check_columns(comparison, [*groups, *COLUMNS])
    lines = [SMOKE_NOTE] if smoke else []
    for row in comparison.itertuples(index=False):
        where = label(row) if label else ", ".join(_describe(getattr(row, g)) for g in groups)
        span = "" if row.n_pairs < 2 else f", 95 % interval [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
        verdict = "smoke run, no verdict" if smoke else f"**{row.verdict}**"
        lines.append(f"- {where}: {row.init} {row.mean_diff:+.3f} {unit} vs {baseline} over {row.n_pairs} "
                     f"pair(s){span}: {verdict}")  # fmt: skip
    methods = comparison["init"].nunique()
    if caveat and methods > 1:
        lines.append(f"\n{methods} methods face one baseline here: each line is one comparison, and the best of "
                     "them, picked after the fact, overstates its difference (the winner's curse).")
    return "\n".join(lines)
