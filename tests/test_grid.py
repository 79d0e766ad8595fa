"""Reproduction grids: expansion, the run registry (skip / resume / re-run), tables, the CLI.

Most tests use ``fake_runner`` instead of papermill: it writes a results.csv of known values into
the cell's folder and logs its call, so skips and re-runs can be counted (also across processes).
"""

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl_lite import grid, repro, threads

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def fake_dice(init: str, n_labelled: str, ft_seed: int, grid_seed: int) -> float:
    """The fake notebook's test Dice: a closed form the tables are checked against."""
    return (
        0.5
        + 0.1 * (init == "SimCLR")
        + 0.2 * (n_labelled == "all")
        + 0.02 * ft_seed
        + 0.04 * grid_seed
    )


def fake_runner(notebook, params, name=None, runs_dir="runs", progress=True, kernel=None):
    """Stands in for ``repro.reproduce``: logs the call, obeys fail/interrupt markers, writes rows."""
    folder = Path(runs_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(Path(runs_dir) / "calls.log", "a") as log:
        log.write(f"{name} {os.getpid()}\n")
    if (Path(runs_dir) / f"interrupt_{name}").exists():
        raise KeyboardInterrupt  # a crash: run_cell does not catch it
    if (Path(runs_dir) / f"fail_{name}").exists():
        raise RuntimeError(f"boom in {name}")
    rows = [
        {"init": i, "n_labelled": n, "seed": s, "test_dice": fake_dice(i, n, s, params["seed"])}
        for i, n, s in itertools.product(["random init", "SimCLR"], ["1", "all"], [0, 1])
    ]
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def env_runner(notebook, params, name=None, runs_dir="runs", progress=True, kernel=None):
    """``fake_runner`` that also records the thread settings this cell's kernel would inherit."""
    import torch

    folder = fake_runner(notebook, params, name, runs_dir, progress, kernel)
    seen = {k: os.environ.get(k) for k in ("MEDCL_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    (folder / "threads.json").write_text(json.dumps({**seen, "torch": torch.get_num_threads()}))
    return folder


def _calls(out: Path) -> list[str]:
    log = out / "calls.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.is_file() else []


def _spec(**extra) -> dict:
    spec = {"notebook": "00_quickstart", "params": {"smoke": True}, "axes": {"seed": [0, 1]}}
    return spec | extra


def _run(spec, out, **kwargs):
    return grid.run_grid(spec, out, runner=fake_runner, log=lambda line: None, **kwargs)


def test_expand_grid_order_ids_and_params(tmp_path):
    (tmp_path / "base.yaml").write_text("smoke: true\nseed: 7\nprogress: false\n")
    (tmp_path / "grid.yaml").write_text(
        "notebook: 00_quickstart\nbase: [base.yaml]\nparams: {progress: true}\n"
        "axes:\n  seed: [0, 1, 2]\n  label_counts: [[1, all], [2]]\n"
    )
    spec = grid.load_grid(tmp_path / "grid.yaml")
    cells = grid.expand_grid(spec)
    assert len(cells) == 3 * 2
    assert [c.id for c in cells[:3]] == [
        "seed=0__label_counts=1-all",
        "seed=0__label_counts=2",
        "seed=1__label_counts=1-all",
    ]
    assert cells[3].params == {"smoke": True, "seed": 1, "progress": True, "label_counts": [2]}
    assert [c.id for c in grid.expand_grid(grid.load_grid(tmp_path / "grid.yaml"))] == [
        c.id for c in cells
    ]


def test_cell_id_is_safe_unique_and_short():
    assert grid.cell_id({}) == "default"
    a, b = grid.cell_id({"device": "cuda:0"}), grid.cell_id({"device": "cuda_0"})
    assert a != b and a.startswith("device=cuda_0-") and b == "device=cuda_0"
    long = grid.cell_id({"methods": ["SimCLR", "MoCo"] * 20})
    assert len(long) <= grid.MAX_ID_LENGTH and long == grid.cell_id(
        {"methods": ["SimCLR", "MoCo"] * 20}
    )


def test_unknown_parameter_or_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'seeed'.*did you mean 'seed'"):
        grid.expand_grid(_spec(axes={"seeed": [0, 1]}))
    with pytest.raises(ValueError, match="unknown key.*'axis'"):
        grid.expand_grid({"notebook": "00_quickstart", "axis": {"seed": [0]}})
    with pytest.raises(ValueError, match="axis 'seed' must be a non-empty list"):
        grid.expand_grid(_spec(axes={"seed": []}))
    with pytest.raises(ValueError, match="paper needs 'source'"):
        grid.expand_grid(_spec(paper={"table": {"SimCLR": {"1": 0.7}}}))
    with pytest.raises(ValueError, match="seeed"):
        _run(_spec(axes={"seeed": [0]}), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_done_cells_are_skipped(tmp_path):
    plan = _run(_spec(), tmp_path)
    assert [p["status"] for p in plan] == ["done", "done"] and _calls(tmp_path) == [
        "seed=0",
        "seed=1",
    ]
    again = _run(_spec(), tmp_path)
    assert [p["action"] for p in again] == ["skip", "skip"]
    assert _calls(tmp_path) == ["seed=0", "seed=1"]


def test_failed_and_interrupted_cells_rerun_into_the_same_folder(tmp_path):
    (tmp_path / "fail_seed=1").touch()
    (tmp_path / "interrupt_seed=0").touch()
    with pytest.raises(KeyboardInterrupt):
        _run(_spec(), tmp_path)
    assert grid.read_record(tmp_path / "seed=0")["status"] == "running"  # the crash left it so
    (tmp_path / "interrupt_seed=0").unlink()
    plan = _run(_spec(), tmp_path)
    assert [p["action"] for p in plan] == ["resume", "resume"]  # seed=1: queued as pending
    failed = grid.read_record(tmp_path / "seed=1")
    assert failed["status"] == "failed" and "boom in seed=1" in failed["error"]
    (tmp_path / "fail_seed=1").unlink()
    plan = _run(_spec(), tmp_path)
    assert [p["action"] for p in plan] == ["skip", "resume"]
    assert _calls(tmp_path) == ["seed=0", "seed=0", "seed=1", "seed=1"]
    record = grid.read_record(tmp_path / "seed=1")
    assert record["status"] == "done" and record["attempts"] == 2 and record["error"] is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["seed=0", "seed=1"]


def test_changed_parameters_rerun_and_say_so(tmp_path):
    _run(_spec(), tmp_path)
    lines = []
    changed = _spec(params={"smoke": True, "pretrain_epochs": 2})
    grid.run_grid(changed, tmp_path, runner=fake_runner, log=lines.append)
    assert "rerun (parameters changed: pretrain_epochs: None -> 2)" in lines[0]
    assert _calls(tmp_path) == ["seed=0", "seed=1"] * 2
    assert grid.read_record(tmp_path / "seed=0")["params"]["pretrain_epochs"] == 2


def test_registry_content_and_atomic_writes(tmp_path, monkeypatch):
    _run(_spec(), tmp_path)
    record = grid.read_record(tmp_path / "seed=1")
    assert record["params"] == {"smoke": True, "seed": 1} and record["axes"] == {"seed": 1}
    assert record["status"] == "done" and record["notebook"] == "00_quickstart"
    assert record["started"] <= record["ended"] and record["wall_s"] >= 0
    metrics = record["metrics"]
    assert (
        metrics["n_rows"] == 8 and metrics["value"] == "test_dice" and len(metrics["summary"]) == 4
    )
    group = next(g for g in metrics["summary"] if (g["init"], g["n_labelled"]) == ("SimCLR", "all"))
    values = [fake_dice("SimCLR", "all", s, 1) for s in (0, 1)]
    assert group["n"] == 2 and group["mean"] == pytest.approx(np.mean(values))
    assert group["std"] == pytest.approx(np.std(values, ddof=1))
    assert json.loads((tmp_path / "seed=1" / "run.json").read_text()) == record  # plain JSON
    before = (tmp_path / "seed=1" / "run.json").read_text()

    def crash(*args):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    cell = grid.expand_grid(_spec(params={"smoke": False}))[1]
    with pytest.raises(OSError, match="simulated crash"):
        grid.run_cell(cell, tmp_path, fake_runner)
    assert (tmp_path / "seed=1" / "run.json").read_text() == before  # old record intact
    assert sorted(p.name for p in (tmp_path / "seed=1").iterdir()) == ["results.csv", "run.json"]


def test_results_table_mean_std_and_paper_column(tmp_path):
    paper = {
        "source": "Test et al., a made-up table for this test only",
        "table": {"SimCLR": {1: 0.7}},
    }
    _run(_spec(paper=paper), tmp_path)
    rows = pd.read_csv(tmp_path / "results.csv", dtype={"n_labelled": str})
    assert (
        len(rows) == 16
        and set(rows["grid_seed"]) == {0, 1}
        and set(rows["cell"]) == {"seed=0", "seed=1"}
    )
    table = grid.grid_table(rows, paper=paper)
    assert list(table.columns) == [
        f"n_labelled={n} · {who}" for n in ("1", "all") for who in ("ours", "paper")
    ]
    assert list(table.index) == ["random init", "SimCLR"]
    for init, n in itertools.product(["random init", "SimCLR"], ["1", "all"]):
        values = [fake_dice(init, n, s, g) for s in (0, 1) for g in (0, 1)]
        assert (
            table.loc[init, f"n_labelled={n} · ours"]
            == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        )
    assert table.loc["SimCLR", "n_labelled=1 · paper"] == "0.700"  # as papers print Dice
    assert (
        table.loc["random init", "n_labelled=1 · paper"] == "–"
        and table.loc["SimCLR", "n_labelled=all · paper"] == "–"
    )
    text = (tmp_path / "results.md").read_text()
    assert "0.630 ± 0.026" in text and "made-up table" in text and "2 done" in text
    assert (tmp_path / "dice_vs_labels.png").stat().st_size > 0
    plain = grid.grid_table(
        rows, {"index": ["init", "n_labelled"], "columns": [], "value": "test_dice"}
    )
    assert list(plain.columns) == ["test_dice"] and plain.index[0] == "random init · 1"


def test_dry_run_lists_without_running(tmp_path, capsys):
    file = tmp_path / "grid.yaml"
    file.write_text("notebook: 00_quickstart\nparams: {smoke: true}\naxes: {seed: [0, 1, 2]}\n")
    out = tmp_path / "out"
    code = repro.main(["reproduce", "--grid", str(file), "--out", str(out), "--dry-run"])
    assert code == 0 and not out.exists()
    printed = capsys.readouterr().out
    assert (
        all(f"seed={s}: run (new)" in printed for s in range(3)) and "3 runs; 3 to run" in printed
    )


def test_cli_argument_errors(tmp_path, capsys):
    assert repro.main(["reproduce"]) == 2
    assert "--grid" in capsys.readouterr().err
    assert repro.main(["reproduce", "00_quickstart", "--jobs", "2"]) == 2
    file = tmp_path / "grid.yaml"
    file.write_text("notebook: 00_quickstart\naxes: {seed: [0]}\n")
    assert repro.main(["reproduce", "--grid", str(file), "--jobs", "0", "--dry-run"]) == 2
    assert "jobs must be a positive integer, got 0" in capsys.readouterr().err


def test_gpu_assignments():
    assert grid.gpu_assignments(2) == [None, None]
    assert grid.gpu_assignments(3, n_devices=2) == ["0", "1", "0"]
    assert grid.gpu_assignments(2, visible="4,6", n_devices=8) == ["4", "6"]


def test_jobs_run_cells_in_worker_processes(tmp_path):
    plan = _run(_spec(axes={"seed": [0, 1, 2]}), tmp_path, jobs=2)
    assert [p["status"] for p in plan] == ["done"] * 3
    lines = (tmp_path / "calls.log").read_text().split()
    assert sorted(lines[0::2]) == ["seed=0", "seed=1", "seed=2"]
    assert str(os.getpid()) not in lines[1::2]
    assert len(pd.read_csv(tmp_path / "results.csv")) == 24


@pytest.mark.notebook
def test_grid_smoke_through_papermill(tmp_path, capsys):
    """`medcl reproduce --grid` on the quickstart smoke grid (2 cells): tables, plot, then skips."""
    args = [
        "reproduce",
        "--grid",
        str(NOTEBOOKS / "params/quickstart/grid_smoke.yaml"),
        "--out",
        str(tmp_path),
    ]
    assert repro.main(args) == 0
    for name in ("results.md", "results.csv", "dice_vs_labels.png"):
        assert (tmp_path / name).is_file(), name
    assert all(
        json.loads((tmp_path / c / "run.json").read_text())["status"] == "done"
        for c in ("seed=0", "seed=1")
    )
    assert "random init" in (tmp_path / "results.md").read_text()
    assert repro.main(args) == 0
    assert capsys.readouterr().out.count(": skip (done") == 2


@pytest.fixture
def no_thread_env(monkeypatch):
    for name in ("MEDCL_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_worker_threads_split_the_cores(no_thread_env):
    assert grid.worker_threads(1) is None  # alone: the kernel's default, all cores
    assert grid.worker_threads(2) == threads.share(2)
    assert grid.worker_threads(2, threads=3) == 3
    no_thread_env.setenv("MEDCL_THREADS", "2")
    assert grid.worker_threads(4) == grid.worker_threads(1) == 2


def test_grid_workers_get_their_share_of_the_cores(tmp_path, no_thread_env):
    """jobs=2: each worker process (and so each kernel it starts) runs with cores // 2 threads,
    passive OpenMP waiting, torch set likewise in the worker."""
    lines = []
    grid.run_grid(_spec(axes={"seed": [0, 1, 2]}), tmp_path, jobs=2, runner=env_runner, log=lines.append)
    share = str(threads.share(2))
    for cell in ("seed=0", "seed=1", "seed=2"):
        seen = json.loads((tmp_path / cell / "threads.json").read_text())
        assert seen == {"MEDCL_THREADS": share, "OMP_NUM_THREADS": share, "OMP_WAIT_POLICY": "PASSIVE",
                        "torch": int(share)}  # fmt: skip
    assert f"2 worker(s), CPU threads each: {share}" in lines


def test_one_job_with_threads_sets_then_restores_the_environment(tmp_path, no_thread_env):
    grid.run_grid(_spec(), tmp_path, jobs=1, runner=env_runner, log=lambda line: None, threads=1)
    seen = json.loads((tmp_path / "seed=0" / "threads.json").read_text())
    assert (seen["MEDCL_THREADS"], seen["OMP_NUM_THREADS"], seen["OMP_WAIT_POLICY"]) == ("1", "1", "PASSIVE")
    assert not {"MEDCL_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY"} & set(os.environ)
