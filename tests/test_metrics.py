"""Tests for medcl_lite.metrics: closed forms, hand-computed values and invariants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medcl_lite.metrics import (
    dice_per_image,
    dice_per_volume,
    dice_pooled,
    hd95,
    hd95_per_volume,
    summarize,
    summarize_hd95,
)


def square(size: int = 40, top: int = 10, left: int = 10, side: int = 12) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


# --------------------------------------------------------------------------------------------
# Dice per image
# --------------------------------------------------------------------------------------------
def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(4, 16, 16))
    labels[:, 0, 0] = [1, 2, 1, 2]  # make sure both foreground classes appear everywhere
    labels[:, 0, 1] = [2, 1, 2, 1]
    np.testing.assert_array_equal(dice_per_image(labels, labels, num_classes=3), np.ones((4, 2)))


def test_disjoint_prediction_scores_zero():
    target = np.zeros((1, 8, 8), dtype=np.uint8)
    target[0, :4] = 1
    pred = np.zeros_like(target)
    pred[0, 4:] = 1
    np.testing.assert_array_equal(dice_per_image(pred, target, num_classes=2), [[0.0]])


def test_partial_overlap_matches_hand_computation():
    # target: 4 pixels of class 1 and 2 of class 2; pred: 3 of class 1 (2 correct), 3 of class 2
    # (2 correct). Dice_1 = 2*2 / (3 + 4) = 4/7; Dice_2 = 2*2 / (3 + 2) = 4/5.
    target = np.array([[1, 1, 1, 1], [2, 2, 0, 0]])
    pred = np.array([[1, 1, 0, 2], [2, 2, 1, 0]])
    dice = dice_per_image(pred, target, num_classes=3)
    assert dice.shape == (1, 2)  # [H, W] input is one image
    np.testing.assert_allclose(dice, [[4 / 7, 4 / 5]])
    # background: pred has 2 zeros, target 2 zeros, 1 shared -> 2*1 / 4 = 1/2
    with_background = dice_per_image(pred, target, num_classes=3, include_background=True)
    np.testing.assert_allclose(with_background, [[1 / 2, 4 / 7, 4 / 5]])


def test_class_absent_from_both_is_nan_and_absent_from_one_is_zero():
    target = np.zeros((2, 4, 4), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, 0, 0] = 1  # image 0: class 1 in target only; image 1: class 1 nowhere
    dice = dice_per_image(pred, target, num_classes=2)
    assert dice[0, 0] == 0.0
    assert math.isnan(dice[1, 0])
    assert np.nanmean(dice) == 0.0


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, size=(3, 10, 10))
    pred = rng.integers(0, 4, size=(3, 10, 10))
    from_numpy = dice_per_image(pred, target, num_classes=4)
    from_torch = dice_per_image(torch.from_numpy(pred), torch.from_numpy(target), num_classes=4)
    np.testing.assert_array_equal(from_numpy, from_torch)
    np.testing.assert_array_equal(
        dice_pooled(pred, target, 4), dice_pooled(torch.from_numpy(pred), torch.tensor(target), 4)
    )
    assert hd95(torch.from_numpy(square()), square(left=13)) == hd95(square(), square(left=13))


@pytest.mark.parametrize(
    ("pred", "target", "num_classes", "message"),
    [
        (np.zeros((2, 4, 4), int), np.zeros((2, 4, 5), int), 2, "shapes differ"),
        (np.full((4, 4), 3), np.zeros((4, 4), int), 3, "outside"),
        (np.zeros((4, 4)), np.zeros((4, 4), int), 2, "integer class indices"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), 1, "num_classes"),
    ],
)
def test_bad_input_gives_a_clear_error(pred, target, num_classes, message):
    with pytest.raises(ValueError, match=message):
        dice_per_image(pred, target, num_classes=num_classes)


# --------------------------------------------------------------------------------------------
# pooled Dice
# --------------------------------------------------------------------------------------------
def test_pooled_differs_from_mean_of_per_image():
    # image 0: a large structure, target 8 pixels, pred the same 8 -> Dice 1
    # image 1: a small structure, target 2 pixels, pred 2 other pixels -> Dice 0
    target = np.zeros((2, 4, 4), dtype=np.uint8)
    pred = np.zeros_like(target)
    target[0, :2] = 1
    pred[0, :2] = 1
    target[1, 3, :2] = 1
    pred[1, 3, 2:] = 1
    per_image = dice_per_image(pred, target, num_classes=2)
    np.testing.assert_allclose(per_image[:, 0], [1.0, 0.0])
    assert np.nanmean(per_image) == pytest.approx(0.5)
    # pooled: 2 * 8 / ((8 + 2) + (8 + 2)) = 16 / 20 = 0.8
    np.testing.assert_allclose(dice_pooled(pred, target, num_classes=2), [0.8])


def test_pooled_is_nan_only_for_a_class_absent_everywhere():
    target = np.zeros((3, 4, 4), dtype=np.uint8)
    target[1, 0, 0] = 1
    pooled = dice_pooled(target, target, num_classes=3)
    assert pooled[0] == 1.0
    assert math.isnan(pooled[1])


# --------------------------------------------------------------------------------------------
# per-volume Dice
# --------------------------------------------------------------------------------------------
def two_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Volume "a": 2 slices, Dice_1 = 2*3 / (4 + 4) = 0.75. Volume "b": 1 slice, Dice_1 = 0."""
    target = np.zeros((3, 4, 4), dtype=np.uint8)
    pred = np.zeros_like(target)
    target[0, 0, :2] = 1  # a: slice 0, 2 pixels, both found
    pred[0, 0, :2] = 1
    target[1, 1, :2] = 1  # a: slice 1, 2 pixels, one found + one false positive
    pred[1, 1, 1:3] = 1
    target[2, 2, 0] = 1  # b: a miss and a false positive
    pred[2, 3, 3] = 1
    return pred, target, np.array(["a", "a", "b"])


def test_per_volume_matches_hand_computation():
    pred, target, ids = two_volumes()
    table = dice_per_volume(pred, target, ids, num_classes=2)
    assert list(table.columns) == ["volume_id", "n_slices", "dice_1", "mean"]
    assert list(table["volume_id"]) == ["a", "b"]
    assert list(table["n_slices"]) == [2, 1]
    np.testing.assert_allclose(table["dice_1"], [0.75, 0.0])
    np.testing.assert_allclose(table["mean"], [0.75, 0.0])


def test_per_volume_ignores_slice_order():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 3, size=(12, 8, 8))
    target = rng.integers(0, 3, size=(12, 8, 8))
    ids = np.repeat(["v2", "v0", "v1"], 4)
    order = rng.permutation(12)
    table = dice_per_volume(pred, target, ids, num_classes=3)
    shuffled = dice_per_volume(pred[order], target[order], ids[order], num_classes=3)
    pd.testing.assert_frame_equal(table, shuffled)
    # each volume's Dice equals the Dice of the stacked 3-D volume, i.e. pooled over its slices
    for volume, row in table.set_index("volume_id").iterrows():
        pooled = dice_pooled(pred[ids == volume], target[ids == volume], num_classes=3)
        np.testing.assert_allclose(row[["dice_1", "dice_2"]].to_numpy(float), pooled)


def test_per_volume_class_names_and_nan_mean():
    pred, target, ids = two_volumes()
    pred[2] = 0
    target[2] = 0  # volume b has no class 1 at all -> NaN, and a NaN mean without warnings
    table = dice_per_volume(pred, target, ids, 3, class_names=["background", "LV", "RV"])
    assert list(table.columns) == ["volume_id", "n_slices", "LV", "RV", "mean"]
    assert table.loc[0, "LV"] == pytest.approx(0.75)
    assert math.isnan(table.loc[0, "RV"])
    assert table.loc[0, "mean"] == pytest.approx(0.75)  # NaN class ignored
    assert math.isnan(table.loc[1, "mean"])
    with pytest.raises(ValueError, match="class_names"):
        dice_per_volume(pred, target, ids, 3, class_names=["only one"])
    with pytest.raises(ValueError, match="volume_ids"):
        dice_per_volume(pred, target, ids[:2], 3)


# --------------------------------------------------------------------------------------------
# HD95
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [1, 3, 5])
def test_hd95_of_a_shifted_square_is_the_shift(shift):
    assert hd95(square(left=10 + shift), square()) == pytest.approx(shift)


def test_hd95_scales_with_spacing():
    shifted, reference = square(left=13), square()
    assert hd95(shifted, reference, spacing=2.0) == pytest.approx(6.0)
    # the shift is along the last axis (columns): only that axis' spacing matters
    assert hd95(shifted, reference, spacing=(0.7, 1.5)) == pytest.approx(4.5)
    assert hd95(shifted.T, reference.T, spacing=(1.5, 0.7)) == pytest.approx(4.5)


def test_hd95_identical_3d_and_empty_conventions():
    cube = np.zeros((12, 12, 12), dtype=bool)
    cube[3:9, 3:9, 3:9] = True
    moved = np.roll(cube, 2, axis=0)
    assert hd95(cube, cube) == 0.0
    assert hd95(moved, cube, spacing=(2.5, 1, 1)) == pytest.approx(5.0)
    empty = np.zeros_like(cube)
    assert math.isnan(hd95(empty, cube))
    assert math.isnan(hd95(cube, empty))
    assert math.isnan(hd95(empty, empty))


def test_hd95_bad_input():
    with pytest.raises(ValueError, match="spacing"):
        hd95(square(), square(), spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        hd95(square(40), square(30))
    with pytest.raises(ValueError, match="boolean"):
        hd95(square().astype(int) * 2, square())


# --------------------------------------------------------------------------------------------
# HD95 per volume
# --------------------------------------------------------------------------------------------
def box_volume(
    depth: int = 8, size: int = 32, z=(2, 6), y=(8, 20), x=(8, 20), label: int = 1
) -> np.ndarray:
    """Label map ``[depth, size, size]`` with one box of ``label``."""
    volume = np.zeros((depth, size, size), dtype=np.int64)
    volume[z[0] : z[1], y[0] : y[1], x[0] : x[1]] = label
    return volume


def one_volume(pred, target, **kwargs) -> pd.DataFrame:
    ids, index = np.zeros(len(pred), dtype=int), np.arange(len(pred))
    return hd95_per_volume(pred, target, ids, index, **kwargs)


@pytest.mark.parametrize("shift", [1, 3])
def test_hd95_per_volume_of_shifted_boxes_is_the_shift_times_spacing(shift):
    target = box_volume()
    along_x = box_volume(x=(8 + shift, 20 + shift))
    along_z = box_volume(z=(2 + shift, 6 + shift))
    assert one_volume(along_x, target, num_classes=2).loc[0, "hd95_1"] == pytest.approx(shift)
    # spacing is (z, y, x): an x shift scales with the last entry, a z shift with the first
    anisotropic = (2.5, 0.5, 0.7)
    table = one_volume(along_x, target, num_classes=2, spacing=anisotropic)
    assert table.loc[0, "hd95_1"] == pytest.approx(0.7 * shift)
    table = one_volume(along_z, target, num_classes=2, spacing=anisotropic)
    assert table.loc[0, "hd95_1"] == pytest.approx(2.5 * shift)


def test_hd95_per_volume_table_layout_and_empty_prediction():
    target = box_volume() + box_volume(x=(22, 28), label=2)  # LV box and RV box
    pred = box_volume(x=(10, 22))  # LV shifted by 2, RV missed
    table = one_volume(pred, target, num_classes=3)
    assert list(table.columns) == [
        "volume_id",
        "n_slices",
        "hd95_1",
        "hd95_2",
        "mean",
        "n_undefined",
    ]
    assert table.loc[0, "n_slices"] == 8
    assert table.loc[0, "hd95_1"] == pytest.approx(2.0)
    assert math.isnan(table.loc[0, "hd95_2"])
    assert table.loc[0, "mean"] == pytest.approx(2.0)  # NaN class ignored ...
    assert table.loc[0, "n_undefined"] == 1  # ... and counted
    named = one_volume(pred, target, num_classes=3, class_names=["bg", "LV", "RV"])
    assert list(named.columns[2:4]) == ["LV", "RV"]
    with_background = one_volume(pred, target, num_classes=3, include_background=True)
    assert list(with_background.columns[2:5]) == ["hd95_0", "hd95_1", "hd95_2"]
    empty = one_volume(np.zeros_like(target), target, num_classes=3)
    assert math.isnan(empty.loc[0, "mean"])
    assert empty.loc[0, "n_undefined"] == 2


def random_boxes(rng: np.random.Generator, depth: int, size: int = 12) -> np.ndarray:
    """``[depth, size, size]`` with a random box of class 1, then one of class 2 over it."""
    volume = np.zeros((depth, size, size), dtype=np.int64)
    for label in (1, 2):
        z0, y0, x0 = rng.integers(0, depth - 1), *rng.integers(0, size - 4, size=2)
        z1, y1, x1 = rng.integers(z0 + 1, depth + 1), *rng.integers((y0, x0), size + 1) + 2
        volume[z0:z1, y0:y1, x0:x1] = label
    return volume


def test_hd95_per_volume_matches_stacked_3d_reference_and_ignores_row_order():
    rng = np.random.default_rng(3)
    depths = {"v1": 5, "v0": 7, "v2": 4}
    pred, target, ids, index = [], [], [], []
    for volume_id, depth in depths.items():
        pred.append(random_boxes(rng, depth))
        target.append(random_boxes(rng, depth))
        ids += [volume_id] * depth
        index += list(range(10, 10 + depth))  # any start is fine, only gaps are not
    pred, target = np.concatenate(pred), np.concatenate(target)
    ids, index = np.array(ids), np.array(index)
    spacing = (3.0, 0.8, 1.1)
    table = hd95_per_volume(pred, target, ids, index, 3, spacing=spacing)
    assert list(table["volume_id"]) == ["v0", "v1", "v2"]
    assert list(table["n_slices"]) == [7, 5, 4]
    for row in table.itertuples():  # loop reference: hd95 of the stacked [D, H, W] volume
        rows = ids == row.volume_id
        for c in (1, 2):
            expected = hd95(pred[rows] == c, target[rows] == c, spacing=spacing)
            assert getattr(row, f"hd95_{c}") == pytest.approx(expected)
    order = rng.permutation(len(ids))  # volumes interleaved, slices shuffled
    shuffled = hd95_per_volume(
        pred[order], torch.from_numpy(target[order]), ids[order], index[order], 3, spacing=spacing
    )
    pd.testing.assert_frame_equal(table, shuffled)
    # the order really matters: stacking in row order instead of slice_index changes HD95
    # (a permutation of slice_index within each volume, same for pred and target)
    scrambled_index = index.copy()
    for volume_id in depths:
        rows = ids == volume_id
        scrambled_index[rows] = rng.permutation(index[rows])
    scrambled = hd95_per_volume(pred, target, ids, scrambled_index, 3, spacing=spacing)
    assert not np.allclose(table[["hd95_1", "hd95_2"]], scrambled[["hd95_1", "hd95_2"]])


def test_hd95_per_volume_per_slice_spacing():
    target = np.concatenate([box_volume(depth=6), box_volume(depth=6)])
    pred = np.concatenate([box_volume(depth=6, z=(3, 7)), box_volume(depth=6, z=(3, 7))])
    ids, index = np.repeat(["a", "b"], 6), np.tile(np.arange(6), 2)
    # meta-like table with the columns in x, y, z order: read by name, not by position
    meta = pd.DataFrame({"spacing_x": 0.5, "spacing_y": 0.5, "spacing_z": np.repeat([2.0, 4.0], 6)})
    by_name = hd95_per_volume(pred, target, ids, index, 2, spacing=meta)
    np.testing.assert_allclose(by_name["hd95_1"], [2.0, 4.0])  # z shift of 1 slice
    as_array = meta[["spacing_z", "spacing_y", "spacing_x"]].to_numpy()
    by_array = hd95_per_volume(pred, target, ids, index, 2, spacing=as_array)
    pd.testing.assert_frame_equal(by_name, by_array)
    with pytest.raises(ValueError, match="constant within a volume; volume 'b'"):
        bad = as_array.copy()
        bad[-1, 0] = 3.0
        hd95_per_volume(pred, target, ids, index, 2, spacing=bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slice_index": [0, 1, 3, 0, 1, 2]}, "volume 'a' has a gap"),
        ({"slice_index": [0, 1, 1, 0, 1, 2]}, "volume 'a' repeats"),
        ({"slice_index": [0.0, 1.5, 2, 0, 1, 2]}, "slice_index must hold integers"),
        ({"slice_index": [0, 1, 2]}, "slice_index must be one integer per slice"),
        ({"volume_ids": ["a"] * 5}, "volume_ids"),
        ({"pred": np.zeros((6, 8, 8), int)}, "shapes differ"),
        ({"pred": np.zeros((6, 4, 16), int)}, "shapes differ"),  # same size, other shape
        ({"pred": np.zeros((6, 64), int), "target": np.zeros((6, 64), int)}, r"\[N, H, W\]"),
        ({"pred": np.full((6, 4, 4), 2)}, "outside"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"spacing": np.ones((5, 3))}, r"spacing must be .* \[6, 3\]"),
        ({"spacing": np.full((6, 3), -1.0)}, "volume 'a': spacing"),
        ({"class_names": ["x", "n_undefined"]}, "class_names"),
    ],
)
def test_hd95_per_volume_bad_input(change, message):
    args = {
        "pred": np.zeros((6, 4, 4), int),
        "target": np.zeros((6, 4, 4), int),
        "volume_ids": ["a"] * 3 + ["b"] * 3,
        "slice_index": [0, 1, 2, 0, 1, 2],
        "num_classes": 2,
    }
    with pytest.raises(ValueError, match=message):
        hd95_per_volume(**{**args, **change})


def test_summarize_hd95_reports_mean_of_defined_and_undefined_count():
    table = pd.DataFrame(
        {
            "volume_id": ["a", "b", "c"],
            "n_slices": [8, 8, 8],
            "LV": [1.0, 3.0, np.nan],
            "RV": [np.nan, 5.0, np.nan],
        }
    )
    table["mean"] = [1.0, 4.0, np.nan]
    table["n_undefined"] = [1, 0, 2]
    summary = summarize_hd95(table)
    assert summary["mean"] == pytest.approx(3.0)  # (1 + 3 + 5) / 3 defined cases
    assert (summary["n_defined"], summary["n_undefined"], summary["n_cases"]) == (3, 3, 6)
    assert summary["per_class"] == pytest.approx({"LV": 2.0, "RV": 5.0})
    assert summary["per_class_undefined"] == {"LV": 1, "RV": 2}
    assert summary["text"] == "3.00 (defined for 3 of 6 volume-class cases; 3 undefined)"
    all_nan = summarize_hd95(table.iloc[[2]])
    assert math.isnan(all_nan["mean"]) and all_nan["n_undefined"] == 2
    assert math.isnan(all_nan["per_class"]["LV"])
    with pytest.raises(ValueError, match="n_undefined"):
        summarize_hd95(table.drop(columns="n_undefined"))


def test_summarize_hd95_on_a_real_table():
    target = box_volume() + box_volume(x=(22, 28), label=2)
    table = one_volume(box_volume(x=(10, 22)), target, num_classes=3)
    summary = summarize_hd95(table)
    assert summary["mean"] == pytest.approx(2.0)
    assert summary["per_class_undefined"] == {"hd95_1": 0, "hd95_2": 1}


# --------------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------------
def test_summarize_numbers_and_format():
    df = pd.DataFrame(
        {
            "init": ["random", "random", "random", "pcl", "pcl"],
            "n_labelled": [2, 2, 6, 2, 2],
            "dice": [0.5, 0.7, 0.8123, 0.6, np.nan],
        }
    )
    table = summarize(df, by=["init", "n_labelled"])
    assert list(table.columns) == ["init", "n_labelled", "mean", "std", "n", "mean ± std"]
    rows = table.set_index(["init", "n_labelled"])
    random2 = rows.loc[("random", 2)]
    assert random2["mean"] == pytest.approx(0.6)
    assert random2["std"] == pytest.approx(math.sqrt(0.02))  # ddof=1: (0.1² + 0.1²) / 1
    assert random2["n"] == 2
    assert random2["mean ± std"] == "0.600 ± 0.141"
    assert rows.loc[("random", 6), "mean ± std"] == "0.812 ± –"  # one value: no std
    assert rows.loc[("pcl", 2), "n"] == 1  # NaN left out
    overall = summarize(df, by=[])
    assert overall.loc[0, "n"] == 4
    assert overall.loc[0, "mean"] == pytest.approx((0.5 + 0.7 + 0.8123 + 0.6) / 4)
    with pytest.raises(ValueError, match="no column"):
        summarize(df, by="seed")
