"""Fine-tuning grids: one row per run, finished runs reused, the papers' table."""

import numpy as np
import pytest

import medcl_lite.experiment as experiment
from medcl_lite.data.datasets import cross_validation_folds, make_protocol
from medcl_lite.experiment import load_grid, load_predictions, results_table, run_finetune_grid
from medcl_lite.train import FinetuneConfig


@pytest.fixture
def grid(tiny_set, tmp_path):
    protocol = make_protocol(tiny_set.meta, labelled_sites=("A", "B"), val_fraction=0.2, test_fraction=0.3, seed=0)
    base = FinetuneConfig(max_steps=2, eval_every=1, batch_size=2, progress=False)
    encoders = {"random init": None, "other random": None}
    rows = run_finetune_grid(tiny_set, protocol, encoders, [1, "all"], [0, 1], base, tmp_path, progress=False)
    return tiny_set, protocol, encoders, base, rows, tmp_path


def test_grid_rows(grid):
    data, protocol, _, _, rows, _ = grid
    assert len(rows) == 2 * 2 * 2
    assert set(rows.n_labelled) == {"1", "all"}
    assert (rows[rows.n_labelled == "1"].n_images == 1).all()
    assert (rows[rows.n_labelled == "all"].n_images == len(protocol.label_pool)).all()
    assert rows.test_dice.between(0, 1).all()


def test_finished_runs_are_loaded_not_retrained(grid, monkeypatch):
    data, protocol, encoders, base, rows, out = grid

    def fail(*args, **kwargs):
        raise AssertionError("finetune called for a finished run")

    monkeypatch.setattr(experiment, "finetune", fail)
    again = run_finetune_grid(data, protocol, encoders, [1, "all"], [0, 1], base, out, progress=False)
    np.testing.assert_allclose(again.test_dice.to_numpy(), rows.test_dice.to_numpy())
    assert len(load_grid(out)) == len(rows)
    assert load_predictions(out, "random init", 1, 0).shape == (len(protocol.test), 32, 32)


def test_a_field_added_since_counts_as_its_default(grid, monkeypatch):
    """A run saved before a FinetuneConfig field existed is reused while the field keeps its default."""
    import json

    data, protocol, encoders, base, rows, out = grid
    for saved in out.glob("*/config.json"):
        config = json.loads(saved.read_text())
        config.pop("test_bn")
        saved.write_text(json.dumps(config))
    calls = []
    real = experiment.finetune
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_finetune_grid(data, protocol, encoders, [1, "all"], [0, 1], base, out, progress=False)
    assert calls == []
    per_site = FinetuneConfig(**{**base.__dict__, "test_bn": "per_site"})
    run_finetune_grid(data, protocol, {"random init": None}, [1], [0], per_site, out, progress=False)
    assert calls == [1]


def test_changed_config_is_retrained(grid, monkeypatch):
    data, protocol, encoders, base, rows, out = grid
    calls = []
    real = experiment.finetune
    monkeypatch.setattr(experiment, "finetune", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_finetune_grid(data, protocol, {"random init": None}, [1], [0], FinetuneConfig(**{**base.__dict__, "max_steps": 3}), out, progress=False)
    assert calls == [1]


def test_results_table_layout(grid):
    rows = grid[4]
    table = results_table(rows)
    assert list(table.index) == ["random init", "other random"]
    assert list(table.columns) == ["1 labelled", "all labels"]
    mean = rows[(rows.init == "random init") & (rows.n_labelled == "1")].test_dice.mean()
    assert table.loc["random init", "1 labelled"].startswith(f"{mean:.3f} ± ")
    with pytest.raises(ValueError):
        results_table(rows.iloc[:0])


def test_grid_over_folds(tiny_set, tmp_path):
    folds = cross_validation_folds(tiny_set.meta, k=3, seed=0, val_fraction=0.25)
    base = FinetuneConfig(max_steps=2, eval_every=1, batch_size=2, progress=False, paper_selection=True)
    rows = run_finetune_grid(tiny_set, folds, {"random init": None}, [2], [0], base, tmp_path, progress=False)
    assert sorted(rows.fold) == [0, 1, 2] and rows.paper_test_dice_pooled.between(0, 1).all()
    for fold in folds:  # each run is scored on its own held-out fold
        pred = load_predictions(tmp_path, "random init", 2, 0, fold=fold.number)
        assert len(pred) == len(fold.test)
    loaded = load_grid(tmp_path)
    assert sorted(loaded.fold) == [0, 1, 2]
    cell = results_table(rows).iloc[0, 0]  # mean ± std over the 3 folds
    assert cell == f"{rows.test_dice.mean():.3f} ± {rows.test_dice.std(ddof=1):.3f}"


def test_grid_counts_volumes_and_a_changed_unit_is_retrained(tmp_path):
    from medcl_lite.data.phantoms import make_cardiac_volumes

    vols = make_cardiac_volumes(n_patients=4, sites=("A",), size=32, slices=(5, 6), seed=0)
    folds = cross_validation_folds(vols.meta, k=2, seed=0, val_fraction=0.3)
    base = FinetuneConfig(max_steps=1, eval_every=1, batch_size=2, progress=False)
    rows = run_finetune_grid(vols, folds[:1], {"random init": None}, [1], [0], base, tmp_path,
                             progress=False, unit="volumes")
    pool = vols.meta.iloc[folds[0].label_pool]
    first_volume = pool.groupby("volume_id").size()
    assert rows.n_images.iloc[0] in set(first_volume)  # every slice of one volume
    again = run_finetune_grid(vols, folds[:1], {"random init": None}, [1], [0], base, tmp_path,
                              progress=False, unit="images")
    assert again.n_images.iloc[0] == 1  # not the cached volume run


def _fake_rows():
    import pandas as pd

    rows = []
    for fold, (r, a, b) in enumerate([(0.70, 0.80, 0.71), (0.72, 0.82, 0.70), (0.71, 0.84, 0.705)]):
        for init, value in (("random init", r), ("A", a), ("B", b)):
            for n in ("2", "all"):
                rows.append({"init": init, "n_labelled": n, "fold": fold, "setting": "semi",
                             "test_dice": value, "paper": value + 0.01})
    return pd.DataFrame(rows)


def test_protocol_table_layout_and_cells():
    from medcl_lite.experiment import protocol_table

    rows = _fake_rows()
    table = protocol_table(rows, ["init"], ["setting"], {"paper": "paper", "test_dice": "honest"})
    assert list(table.index) == ["random init", "A", "B"]
    assert list(table.columns) == ["semi · 2 labelled · paper", "semi · 2 labelled · honest",
                                   "semi · all labels · paper", "semi · all labels · honest"]
    assert table.loc["A", "semi · 2 labelled · honest"] == "0.820 ± 0.020"
    assert table.loc["A", "semi · 2 labelled · paper"] == "0.830 ± 0.020"
    two = protocol_table(rows.assign(arch="unet"), ["arch", "init"], ["setting"], {"test_dice": "honest"})
    assert list(two.index) == ["unet · random init", "unet · A", "unet · B"]


def test_grid_runs_two_stream_semi_supervised_fine_tuning(tiny_set, tmp_path, monkeypatch):
    from medcl_lite.semi import SemiConfig

    protocol = make_protocol(tiny_set.meta, labelled_sites=("A", "B"), val_fraction=0.2, test_fraction=0.3, seed=0)
    seen = {}
    real = experiment.finetune_two_stream

    def spy(cfg, data, labelled, unlabelled, *args):
        seen[len(labelled)] = set(unlabelled.tolist())
        assert not set(labelled.tolist()) & seen[len(labelled)]
        return real(cfg, data, labelled, unlabelled, *args)

    monkeypatch.setattr(experiment, "finetune_two_stream", spy)
    base = SemiConfig(max_steps=2, eval_every=1, batch_size=2, unlabelled_batch=2, rampup_steps=1, progress=False)
    rows = run_finetune_grid(tiny_set, protocol, {"random init": None}, [1, "all"], [0], base, tmp_path, progress=False)
    assert seen[1] == set(protocol.label_pool.tolist()) - set(np.setdiff1d(protocol.label_pool, list(seen[1])).tolist())
    assert len(seen[1]) == len(protocol.label_pool) - 1 and seen[len(protocol.label_pool)] == set()
    assert {"test_unet_dice", "test_linknet_dice", "unlabelled_disagreement"} <= set(rows.columns)
    unet, mean = (load_predictions(tmp_path, "random init", 1, 0, stream=s) for s in ("unet", ""))
    assert unet.shape == mean.shape == (len(protocol.test), 32, 32)
    with pytest.raises(KeyError, match="pred_other"):
        load_predictions(tmp_path, "random init", 1, 0, stream="other")
    monkeypatch.setattr(experiment, "finetune_two_stream", None)  # finished runs are reused
    again = run_finetune_grid(tiny_set, protocol, {"random init": None}, [1, "all"], [0], base, tmp_path, progress=False)
    np.testing.assert_allclose(again.test_dice.to_numpy(), rows.test_dice.to_numpy())


def test_by_site_turns_site_columns_into_rows_and_pairs_per_site():
    import pandas as pd

    from medcl_lite.paired import paired_comparison

    rows = pd.DataFrame({
        "init": ["random init", "SimCLR"] * 2, "seed": [0, 0, 1, 1], "n_labelled": "1",
        "test_dice": [0.8, 0.7, 0.8, 0.7], "test_dice_pooled": 0.5,
        "test_dice_site_A": [0.8, 0.9, 0.7, 0.8], "test_dice_site_B": [0.8, 0.5, np.nan, np.nan],
    })  # fmt: skip
    long = experiment.by_site(rows)
    assert sorted(long.columns) == ["init", "n_labelled", "seed", "site", "test_dice"]  # other test_dice_* gone
    assert len(long) == 6 and long[long.site == "B"].seed.tolist() == [0, 0]  # unscored sites left out
    got = paired_comparison(long, groups=["site"], pair_on=["seed"]).set_index("site")
    assert got.mean_diff.round(6).to_dict() == {"A": 0.1, "B": -0.3}
    assert got.n_pairs.to_dict() == {"A": 2, "B": 1}
    with pytest.raises(ValueError, match="no test_dice_site_<site> columns"):
        experiment.by_site(rows.drop(columns=["test_dice_site_A", "test_dice_site_B"]))
