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
