"""Paired comparisons: closed forms (identical pairs, a known shift), agreement with scipy's t
interval and a plain loop, the bootstrap, and the pairing itself (same fold and seed)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medcl_lite.paired import interval, paired_comparison, paired_differences


def _rows(shift: dict[str, float], noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """3 folds x 4 seeds x 2 budgets: random init at a per-run level, each method shifted."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold, s, n in itertools.product(range(3), range(4), ["1", "4"]):
        level = 0.7 + 0.05 * fold + 0.01 * s + (0.1 if n == "4" else 0.0)  # shared by the pair
        rows.append({"init": "random init", "fold": fold, "seed": s, "n_labelled": n, "test_dice": level})
        for init, delta in shift.items():
            value = level + delta + noise * rng.standard_normal()
            rows.append({"init": init, "fold": fold, "seed": s, "n_labelled": n, "test_dice": value})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed)  # order must not matter


def test_identical_pairs_give_a_zero_interval_and_no_evidence():
    table = paired_comparison(_rows({"SimCLR": 0.0}))
    assert list(table.n_pairs) == [12, 12]
    assert np.allclose(table[["mean_diff", "ci_low", "ci_high"]].to_numpy(), 0.0)
    assert set(table.verdict) == {"no evidence"}


def test_a_known_shift_is_recovered_exactly():
    table = paired_comparison(_rows({"SimCLR": 0.05, "MoCo": -0.02}), method="bootstrap")
    simclr, moco = table[table.init == "SimCLR"], table[table.init == "MoCo"]
    assert np.allclose(simclr[["mean_diff", "ci_low", "ci_high"]].to_numpy(), 0.05)
    assert np.allclose(moco[["mean_diff", "ci_low", "ci_high"]].to_numpy(), -0.02)
    assert set(simclr.verdict) == {"better"} and set(moco.verdict) == {"worse"}


def test_t_interval_equals_scipy_and_a_plain_loop():
    d = np.array([0.03, -0.01, 0.04, 0.02, 0.00, 0.05])
    mean, low, high = interval(d)
    ref = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (low, high) == pytest.approx(ref, abs=1e-12)
    total = 0.0
    for x in d:
        total += (x - mean) ** 2
    half = stats.t.ppf(0.975, len(d) - 1) * (total / (len(d) - 1)) ** 0.5 / len(d) ** 0.5
    assert (low, high) == pytest.approx((mean - half, mean + half))


def test_bootstrap_is_close_to_t_on_normal_differences_and_seeded():
    d = np.random.default_rng(1).normal(0.02, 0.03, size=200)
    _, t_low, t_high = interval(d)
    mean, b_low, b_high = interval(d, method="bootstrap")
    assert (b_low, b_high) == pytest.approx((t_low, t_high), abs=0.001)
    assert interval(d, method="bootstrap") == (mean, b_low, b_high)


def test_pairs_are_same_fold_and_seed():
    rows = _rows({"SimCLR": 0.05}, noise=0.01)
    pairs = paired_differences(rows)
    assert len(pairs) == 24
    base = rows[rows.init == "random init"].set_index(["n_labelled", "fold", "seed"]).test_dice
    expected = pairs.test_dice - base.loc[list(zip(pairs.n_labelled, pairs.fold, pairs.seed, strict=True))].to_numpy()
    assert np.allclose(pairs["diff"], expected)
    # a run without its baseline partner is left out, not paired with another one
    rows = rows[~((rows.init == "random init") & (rows.fold == 0))]
    assert paired_comparison(rows).n_pairs.tolist() == [8, 8]


def test_too_few_pairs_and_bad_input_are_named():
    one = _rows({"SimCLR": 0.05}).query("fold == 0 and seed == 0")
    assert set(paired_comparison(one).verdict) == {"too few pairs"}
    rows = _rows({"SimCLR": 0.05})
    with pytest.raises(ValueError, match="no rows of the baseline 'supervised'"):
        paired_comparison(rows, baseline="supervised")
    with pytest.raises(ValueError, match="several 'random init' runs share"):
        paired_comparison(rows, pair_on=("fold",))
    with pytest.raises(ValueError, match=r"no column\(s\) \['volume_dice'\]"):
        paired_comparison(rows, value="volume_dice")
    with pytest.raises(ValueError, match="method must be 't' or 'bootstrap'"):
        interval([0.1, 0.2], method="z")
    with pytest.raises(ValueError, match="level must be in"):
        interval([0.1, 0.2], level=95)


def test_verdict_text_reads_each_row_and_warns_about_picking_the_best():
    from medcl_lite.paired import verdict_text

    table = paired_comparison(_rows({"SimCLR": 0.05, "MoCo": 0.0}))
    text = verdict_text(table)
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == len(table) == 4
    assert "- 1: SimCLR +0.050 Dice vs random init over 12 pair(s), 95 % interval [+0.050, +0.050]: **better**" in lines
    assert any(line.startswith("- 4: MoCo +0.000") and line.endswith("**no evidence**") for line in lines)
    assert "winner's curse" in text and "winner's curse" not in verdict_text(table, caveat=False)
    one = verdict_text(table[table.init == "SimCLR"].assign(n_labelled=["1", "all"]))
    assert "winner's curse" not in one and "- all labels: SimCLR" in one
    named = verdict_text(table[(table.init == "SimCLR") & (table.n_labelled == "1")], label=lambda row: f"budget {row.n_labelled}", unit="AUC")
    assert named.startswith("- budget 1: SimCLR +0.050 AUC vs random init")
    few = paired_comparison(_rows({"SimCLR": 0.1}).query("fold == 0 and seed == 0"))
    assert "interval" not in verdict_text(few) and "too few pairs" in verdict_text(few)
    with pytest.raises(ValueError, match="verdict"):
        verdict_text(table.drop(columns="verdict"))


def test_verdict_text_of_a_smoke_run_gives_differences_without_verdicts():
    from medcl_lite.paired import SMOKE_NOTE, verdict_text

    table = paired_comparison(_rows({"SimCLR": 0.05}))
    text = verdict_text(table, smoke=True)
    assert text.startswith(SMOKE_NOTE) and "noise" in SMOKE_NOTE
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == len(table) and all(line.endswith("smoke run, no verdict") for line in lines)
    assert "**better**" not in text and "**better**" in verdict_text(table)
