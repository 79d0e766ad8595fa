"""Tests for medcl_lite.metrics: closed forms, hand-computed values and invariants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medcl_lite.metrics import dice_per_image, dice_per_volume, dice_pooled, hd95, summarize


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
