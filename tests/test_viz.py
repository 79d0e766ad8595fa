"""Tests for medcl_lite.viz: every function returns a Figure with the expected content."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medcl_lite import viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def images(n: int = 5, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size), dtype=np.float32)


def test_show_images_one_axis_per_image_and_torch_channel_input():
    fig = viz.show_images(torch.from_numpy(images(5))[:, None], ncols=3, suptitle="views")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # the sixth grid cell is removed
    assert fig._suptitle.get_text() == "views"
    fig = viz.show_images(images(3), titles=["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)  # fixed grey scale for [0, 1] data
    with pytest.raises(ValueError, match="titles"):
        viz.show_images(images(3), titles=["a"])
    with pytest.raises(ValueError, match="images must be"):
        viz.show_images(np.zeros((2, 3, 4, 5, 6)))


def test_show_pairs_two_rows_with_labels():
    fig = viz.show_pairs(images(4), images(4) * 0.5, titles=list("abcd"), row_labels=("t0", "t1"))
    assert len(fig.axes) == 8
    assert fig.axes[0].get_ylabel() == "t0"
    assert fig.axes[4].get_ylabel() == "t1"
    assert fig.axes[3].get_title() == "d"
    with pytest.raises(ValueError, match="as many images"):
        viz.show_pairs(images(4), images(3))


def test_show_correspondences_joins_points_across_the_views():
    view = images(1)[0]
    points = np.array([[2.0, 3.0], [10.0, 5.0], [7.0, 1.0]])
    fig = viz.show_correspondences(view, torch.from_numpy(view[None]), points, points[::-1])
    ax = fig.axes[0]
    offset = view.shape[-1] + view.shape[-1] // 8
    lines = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert len(lines) == 3
    np.testing.assert_allclose(lines[0].get_xdata(), [3.0, points[::-1][0, 1] + offset])
    np.testing.assert_allclose(lines[0].get_ydata(), [2.0, points[::-1][0, 0]])
    with pytest.raises(ValueError, match="points1 and points2"):
        viz.show_correspondences(view, view, points, points[:2])


def test_show_mask_draws_the_mask_and_counts_positives():
    mask = np.eye(4, dtype=bool) | np.eye(4, k=1, dtype=bool)
    fig = viz.show_mask(torch.from_numpy(mask), title="temporal", tick_labels=list("ABCD"))
    (ax,) = fig.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), mask)
    assert "7 positive pairs of 16" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == list("ABCD")
    assert ax.get_xlabel() == "candidate"
    # rectangular (queries x queue) with separate row and column names
    fig = viz.show_mask(np.zeros((2, 3), bool), tick_labels=(["q0", "q1"], ["k0", "k1", "k2"]))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["k0", "k1", "k2"]
    with pytest.raises(ValueError, match="tick_labels"):
        viz.show_mask(np.zeros((2, 3), bool), tick_labels=["a", "b"])


def test_plot_curves_one_line_per_run_skipping_nan():
    steps = np.arange(10)
    histories = {
        "simclr": pd.DataFrame({"step": steps, "loss": np.exp(-steps / 5.0)}),
        "pcl": pd.DataFrame({"step": steps, "loss": np.where(steps % 2 == 0, 1.0, np.nan)}),
    }
    fig = viz.plot_curves(histories, title="pretraining", logy=True)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["simclr", "pcl"]
    assert len(ax.get_lines()[1].get_xdata()) == 5
    assert ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "loss")
    with pytest.raises(ValueError, match="no column"):
        viz.plot_curves(histories, y="val_dice")


def test_show_overlays_contours_fills_and_legend():
    targets = np.zeros((4, 16, 16), dtype=np.uint8)
    targets[:, 2:8, 2:8] = 1
    targets[:, 9:14, 9:14] = 2
    preds = np.roll(targets, 1, axis=2)
    fig = viz.show_overlays(images(4), targets, preds, class_names=("background", "LV", "RV"), n=3)
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    assert len(ax.images) == 3  # the image and one filled prediction per class
    assert len(ax.collections) == 2  # one contour per class
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels[:2] == ["LV", "RV"]
    assert "prediction (filled)" in legend_labels
    # logits [N, C, H, W] are reduced with argmax; without preds only contours are drawn
    logits = torch.nn.functional.one_hot(torch.from_numpy(preds).long(), 3).permute(0, 3, 1, 2)
    fig = viz.show_overlays(images(4), targets, logits.float(), n=2)
    assert len(fig.axes[0].images) == 3
    fig = viz.show_overlays(images(4), targets)
    assert len(fig.axes) == 4 and len(fig.axes[0].images) == 1
    with pytest.raises(ValueError, match="class_names"):
        viz.show_overlays(images(4), targets, class_names=("background", "LV"))


def results_table() -> pd.DataFrame:
    rows = []
    for init, shift in (("random", 0.0), ("pcl", 0.1)):
        for budget in (2, 8, "all"):
            for seed in range(3):
                rows.append(
                    {
                        "init": init,
                        "n_labelled": budget,
                        "seed": seed,
                        "dice": 0.5 + shift + 0.01 * seed,
                    }
                )
    return pd.DataFrame(rows)


def test_plot_dice_vs_labels_error_bars_and_all_label():
    fig = viz.plot_dice_vs_labels(results_table(), title="ACDC")
    (ax,) = fig.axes
    containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 2  # one per init
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "8", "all"]
    np.testing.assert_allclose(ax.get_xticks(), [1.0, 3.0, 4.0])  # log2(2), log2(8), one after
    line = containers[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [0.51, 0.51, 0.51])  # mean over seeds
    # the error bar half-length is the std over seeds (ddof=1) = 0.01
    segments = containers[0].lines[2][0].get_segments()
    assert segments[0][1][1] - segments[0][0][1] == pytest.approx(0.02)


def test_plot_dice_vs_labels_bad_budget():
    table = results_table()
    table.loc[0, "n_labelled"] = "many"
    with pytest.raises(ValueError, match="neither a number nor 'all'"):
        viz.plot_dice_vs_labels(table)


def test_plot_embeddings_categorical_and_continuous():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (10, 6)), rng.normal(5, 1, (10, 6))])
    patients = np.repeat(["p1", "p2"], 10)
    fig = viz.plot_embeddings(torch.from_numpy(features), patients)
    (ax,) = fig.axes
    assert len(ax.collections) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["p1", "p2"]
    assert ax.get_xlabel().startswith("PC 1")
    depth = np.linspace(0.05, 1.0, 20)
    fig = viz.plot_embeddings(features, depth, method="tsne", label_name="depth")
    assert len(fig.axes) == 2  # the scatter and its colour bar
    assert fig.axes[1].get_ylabel() == "depth"
    many = viz.plot_embeddings(features, np.arange(20), max_legend=12)
    assert many.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="method"):
        viz.plot_embeddings(features, patients, method="umap")


def test_save_figure_writes_png_atomically(tmp_path, monkeypatch):
    fig = viz.show_images(images(2))
    target = tmp_path / "figures" / "nested" / "views.png"
    written = viz.save_figure(fig, target, dpi=50)
    assert written == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.imread(target).ndim == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["views.png"]

    # a failing write leaves the old file intact and no temporary file behind
    old = target.read_bytes()

    def broken_savefig(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        viz.save_figure(fig, target)
    assert target.read_bytes() == old
    assert sorted(p.name for p in target.parent.iterdir()) == ["views.png"]
    with pytest.raises(ValueError, match="suffix"):
        viz.save_figure(fig, tmp_path / "no_suffix")


def test_plot_roc_one_curve_per_scorer_with_its_auc():
    labels = np.array([0, 0, 1, 1])
    fig = viz.plot_roc({"a": np.array([0.1, 0.4, 0.35, 0.8]), "b": torch.tensor([0.9, 0.8, 0.1, 0.2])}, labels)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["a (AUC 0.750)", "b (AUC 0.000)", "chance"]
    with pytest.raises(ValueError, match="both classes"):
        viz.plot_roc({"a": np.ones(3)}, np.ones(3))
    with pytest.raises(ValueError, match="3 values for 4 labels"):
        viz.plot_roc({"a": np.ones(3)}, labels)


def test_show_heatmaps_draws_boxes_where_given():
    fig = viz.show_heatmaps(images(3), images(3), boxes=[(1, 2, 5, 9), None, (0, 0, 4, 4)], titles=list("xyz"))
    patches = [len(ax.patches) for ax in fig.axes]
    assert patches == [1, 0, 1] and fig.axes[0].patches[0].get_width() == 7
    with pytest.raises(ValueError, match="one entry per image"):
        viz.show_heatmaps(images(3), images(3), boxes=[None])


def test_plot_paired_one_line_per_comparison_coloured_by_verdict():
    comparison = pd.DataFrame({
        "site": ["A", "B", "C"], "init": ["SimCLR"] * 3, "n_pairs": [3, 3, 1],
        "mean_diff": [0.06, -0.27, 0.1], "ci_low": [0.01, -0.33, np.nan], "ci_high": [0.11, -0.21, np.nan],
        "verdict": ["better", "worse", "too few pairs"],
    })  # fmt: skip
    fig = viz.plot_paired(comparison, ["site", "init"], title="per site")
    ax = fig.axes[0]
    ticks = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert ticks == {"A · SimCLR": 2, "B · SimCLR": 1, "C · SimCLR": 0}  # the first row on top
    bars = [line for line in ax.lines if len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1]]
    assert sorted(tuple(b.get_xdata()) for b in bars) == [(-0.33, -0.21), (0.01, 0.11)]  # no interval: no bar
    dots = {float(line.get_xdata()[0]): line.get_color() for line in ax.lines if line.get_marker() == "o"}
    assert dots == {0.06: "tab:green", -0.27: "tab:red", 0.1: "tab:grey"}
    assert ax.get_title() == "per site"
    plt.close(fig)
    with pytest.raises(ValueError, match="no column.*'protocol'"):
        viz.plot_paired(comparison, ["protocol"])
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_paired(comparison.iloc[:0], ["site"])


def test_plot_headroom_one_dumbbell_per_setting():
    room = pd.DataFrame({"where": ["00_quickstart", "02_pcl · semi"], "chapter": ["00_quickstart", "02_pcl"],
                         "smallest": ["1", "1"], "largest": ["all", "6"], "at smallest": [0.82, 0.60],
                         "at largest": [0.87, 0.80], "room": [0.05, 0.20]})  # fmt: skip
    fig = viz.plot_headroom(room, target=0.10)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["00_quickstart: 1 → all, room +0.050 ✗", "02_pcl · semi: 1 → 6, room +0.200 ✓"]
    spans = sorted(tuple(line.get_xdata()) for line in ax.lines if len(line.get_xdata()) == 2)
    assert spans == [(0.6, 0.8), (0.82, 0.87)]
    with pytest.raises(ValueError, match="room"):
        viz.plot_headroom(pd.DataFrame())
