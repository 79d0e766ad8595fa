"""Reading the chapters' recorded reference tables side by side (chapter 06)."""

import pandas as pd
import pytest

from medcl_lite import synthesis


@pytest.fixture
def references(tmp_path, monkeypatch):
    """Two recorded chapters (one with settings and a method-vs-method row), one missing."""
    monkeypatch.setenv("MEDCL_REFERENCE", str(tmp_path))
    (tmp_path / "00_quickstart").mkdir()
    pd.DataFrame([
        {"n_labelled": n, "init": "SimCLR", "n_pairs": 3, "mean_diff": d, "ci_low": d - 0.1, "ci_high": d + 0.1,
         "verdict": "no evidence"} for n, d in (("2", -0.02), ("1", -0.06), ("all", -0.03))
    ]).to_csv(tmp_path / "00_quickstart" / "comparison.csv", index=False)  # fmt: skip
    pd.DataFrame([
        {"n_labelled": n, "init": "random init", "seed": s, "test_dice": base + 0.01 * s}
        for n, base in (("1", 0.80), ("4", 0.86), ("all", 0.90)) for s in range(3)
    ]).to_csv(tmp_path / "00_quickstart" / "results.csv", index=False)  # fmt: skip
    (tmp_path / "02_pcl").mkdir()
    pd.DataFrame([
        {"setting": s, "n_labelled": n, "init": init, "n_pairs": 3, "mean_diff": 0.05, "ci_low": 0.01,
         "ci_high": 0.09, "verdict": "better", "baseline": base}
        for s in ("semi", "transfer") for n in ("6", "2") for init, base in (("PCL", "random init"), ("PCL", "SimCLR"))
    ]).to_csv(tmp_path / "02_pcl" / "comparison.csv", index=False)  # fmt: skip
    return tmp_path


def test_gather_stacks_recorded_chapters_and_names_the_missing(references):
    table, missing = synthesis.gather("comparison.csv")
    assert missing == ["01_cl_tci", "03_lrc", "04_ideal"]
    assert list(table.chapter.unique()) == ["00_quickstart", "02_pcl"]
    assert len(table) == 3 + 4  # 02's rows against SimCLR are left out
    assert set(table[table.chapter == "02_pcl"]["where"]) == {"02_pcl · semi", "02_pcl · transfer"}
    assert set(table[table.chapter == "00_quickstart"]["where"]) == {"00_quickstart"}
    assert table.n_labelled.map(type).eq(str).all()  # "1", not 1: budgets stay labels


def test_at_smallest_budget_per_chapter(references):
    table, _ = synthesis.gather("comparison.csv")
    smallest = synthesis.at_smallest_budget(table)
    assert smallest.groupby("chapter").n_labelled.unique().map(list).to_dict() == {"00_quickstart": ["1"],
                                                                                   "02_pcl": ["2"]}
    assert smallest[smallest.chapter == "00_quickstart"].mean_diff.tolist() == [-0.06]
    with pytest.raises(ValueError, match="n_labelled"):
        synthesis.at_smallest_budget(pd.DataFrame({"x": [1]}))


def test_headroom_is_random_init_from_smallest_to_largest_budget(references):
    results, missing = synthesis.gather("results.csv")
    assert "02_pcl" in missing
    room = synthesis.headroom(results).set_index("where")
    assert room.loc["00_quickstart", "smallest"] == "1" and room.loc["00_quickstart", "largest"] == "all"
    assert room.loc["00_quickstart", "at smallest"] == pytest.approx(0.81)
    assert room.loc["00_quickstart", "room"] == pytest.approx(0.10)
    with pytest.raises(ValueError, match="test_dice_volume"):
        synthesis.headroom(results, value="test_dice_volume")


def test_budget_key_orders_numbers_then_all():
    assert sorted(["all", "10", "2", "1"], key=synthesis.budget_key) == ["1", "2", "10", "all"]


def test_nothing_recorded_gives_empty_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_REFERENCE", str(tmp_path))
    table, missing = synthesis.gather()
    assert table.empty and missing == list(synthesis.CHAPTERS)
    assert synthesis.at_smallest_budget(table).empty and synthesis.headroom(table).empty


def test_pairwise_mask_dice_closed_form():
    import numpy as np

    masks = np.zeros((3, 4, 4), dtype=np.int64)
    masks[0, :2] = 1  # 8 pixels of class 1
    masks[1, :1] = 1  # 4 of them
    masks[1, 3] = 2  # and 4 pixels of class 2, absent from image 0
    dice = synthesis.pairwise_mask_dice(masks, 3)
    assert dice[0, 1] == pytest.approx((2 * 4 / 12 + 0.0) / 2)  # class 1: 2*4/(8+4); class 2: 0
    assert dice[0, 0] == 1.0 and dice[1, 0] == dice[0, 1]
    assert np.isnan(dice[2, 2]) and dice[0, 2] == 0.0  # image 2 has no foreground
    with pytest.raises(ValueError, match="outside"):
        synthesis.pairwise_mask_dice(masks, 2)


def test_mask_agreement_separates_positives_from_negatives():
    import numpy as np

    masks = np.zeros((4, 4, 4), dtype=np.int64)
    masks[0, :2] = masks[1, :2] = 1  # 0 and 1 identical
    masks[2, 2:] = masks[3, 2:] = 1  # 2 and 3 identical, disjoint from 0 and 1
    positive = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    out = synthesis.mask_agreement(masks, positive, 2)
    assert out["positive pairs"] == 2 and out["negative pairs"] == 4
    assert out["mask Dice of positives"] == 1.0 and out["mask Dice of negatives"] == 0.0
    assert out["false-negative share"] == 0.0
    instance = synthesis.mask_agreement(masks, np.eye(4, dtype=bool), 2)  # SimCLR: every other image negative
    assert instance["positive pairs"] == 0 and instance["false-negative share"] == pytest.approx(2 / 6)


def test_compare_protocols_pairs_within_each_chapter(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_REFERENCE", str(tmp_path))
    (tmp_path / "00_quickstart").mkdir()
    pd.DataFrame([
        {"protocol": p, "n_labelled": "1", "init": init, "seed": s, "test_dice": 0.7 + 0.01 * s + shift}
        for p, gain in (("full", -0.05), ("frozen encoder", 0.02)) for s in range(3)
        for init, shift in (("random init", 0.0), ("SimCLR", gain))
    ]).to_csv(tmp_path / "00_quickstart" / "protocols.csv", index=False)  # fmt: skip
    rows, missing = synthesis.gather("protocols.csv", ["00_quickstart"])
    table = synthesis.compare_protocols(rows).set_index("protocol")
    assert table.loc["full", "mean_diff"] == pytest.approx(-0.05) and table.loc["full", "verdict"] == "worse"
    assert table.loc["frozen encoder", "verdict"] == "better" and table.loc["frozen encoder", "n_pairs"] == 3
    assert synthesis.compare_protocols(pd.DataFrame()).empty
