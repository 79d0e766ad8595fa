"""Kill and resume (issue 8): a run SIGKILLed at any moment, a checkpoint write included, resumes
exactly, redoing at most the last interval, and never reads a partial file as a checkpoint.

The killed run is a child process (``CHILD``) that pretrains a tiny chest X-ray phantom and pauses
at a chosen point (after a step, or halfway through writing a checkpoint) by touching a marker
file and sleeping; the parent SIGKILLs it there, so the kill point is exact and the test fast.
The resume runs in this process and is compared with an uninterrupted reference run, exactly
(``np.testing.assert_array_equal``, as ``tests/test_train.py::_assert_resume_is_exact``).
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import medcl_lite.train as train
from medcl_lite import grid
from medcl_lite.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from medcl_lite.data.phantoms import make_chest_xrays
from medcl_lite.train import PretrainConfig, pretrain

PHANTOM = {"n_patients": 6, "n_times": 3, "size": 32}  # 18 images [18, 32, 32]
CONFIG = {  # a small timm encoder (3 MB checkpoints): what is tested does not depend on it
    "encoder": "tu-mobilenetv3_small_050",
    "max_epochs": 3,
    "batch_size": 4,
    "proj_dim": 16,
    "progress": False,
    "checkpoint_every": 1,
}
STEPS_PER_EPOCH = 18 // 4  # drop_last
TOTAL_STEPS = CONFIG["max_epochs"] * STEPS_PER_EPOCH
REPO = Path(__file__).resolve().parents[1]

# The killed run. argv[1]: JSON with out_dir, log (one loss per step), marker, and the pause point:
# "pause_step" (after that many optimiser steps) or "pause_write" (the n-th checkpoint.pt write,
# after half of its bytes reached the temporary file).
CHILD = r"""
import io, json, os, sys, time
import torch
import medcl_lite.train as train
from medcl_lite.data.phantoms import make_chest_xrays

args = json.loads(sys.argv[1])

def pause():
    open(args["marker"], "w").close()
    time.sleep(600)

real_update, steps = train._update, []
def logged_update(loss, *a, **kw):
    real_update(loss, *a, **kw)
    steps.append(float(loss.detach()))
    with open(args["log"], "a") as f:
        f.write(repr(steps[-1]) + "\n")
    if len(steps) == args.get("pause_step"):
        pause()
train._update = logged_update

real_save, writes = torch.save, []
def partial_save(obj, f, *a, **kw):
    if not os.path.basename(getattr(f, "name", str(f))).startswith(".checkpoint.pt."):
        return real_save(obj, f, *a, **kw)  # encoder.pt, or torch.save(buffer) below
    writes.append(1)
    if len(writes) != args.get("pause_write"):
        return real_save(obj, f, *a, **kw)
    buf = io.BytesIO()
    real_save(obj, buf, *a, **kw)
    half = buf.getvalue()[: len(buf.getvalue()) // 2]
    if hasattr(f, "write"):
        f.write(half)
        f.flush()
    else:
        with open(f, "wb") as out:
            out.write(half)
    pause()
torch.save = partial_save

data = make_chest_xrays(**args["phantom"])
train.pretrain(train.PretrainConfig(**args["config"], out_dir=args["out_dir"], resume=True), data)
"""

# A grid whose cell is killed while it runs (the notebook stands in: marker, then sleep).
GRID_CHILD = r"""
import json, sys, time
from pathlib import Path
from medcl_lite import grid

args = json.loads(sys.argv[1])

def blocking_runner(notebook, params, name=None, runs_dir="runs", progress=True, kernel=None):
    with open(Path(runs_dir) / "calls.log", "a") as log:
        log.write(name + "\n")
    open(args["marker"], "w").close()
    time.sleep(600)

grid.run_grid(args["spec"], args["out"], runner=blocking_runner, log=lambda line: None)
"""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, as the child (OMP_NUM_THREADS=1): bitwise-equal losses across processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_xrays(**PHANTOM)


@pytest.fixture(scope="module")
def reference(phantom, one_thread, tmp_path_factory):
    """The uninterrupted run: its history and its ``encoder.pt``."""
    out = tmp_path_factory.mktemp("reference")
    history = pretrain(PretrainConfig(**CONFIG, out_dir=str(out)), phantom).history
    return history, load_checkpoint(out / "encoder.pt")


def _start_child(script: str, args: dict, tmp_path: Path) -> subprocess.Popen:
    """``python -c script json(args)`` on one CPU thread; stdout/stderr into ``tmp_path``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(tmp_path / "child.out", "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(args)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _kill_when(marker: Path, proc: subprocess.Popen, tmp_path: Path, timeout: float = 120) -> None:
    """Wait for ``marker`` (the child's pause), then SIGKILL the child and reap it."""
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                log = (tmp_path / "child.out").read_text()[-3000:]
                pytest.fail(f"child exited ({proc.returncode}) before pausing:\n{log}")
            if time.monotonic() > deadline:
                pytest.fail(f"child did not reach {marker.name} in {timeout} s")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _kill_run(tmp_path: Path, **pause) -> tuple[Path, list[float]]:
    """Run ``CHILD`` until its pause, SIGKILL it; return its out_dir and the losses it logged."""
    out, log, marker = tmp_path / "run", tmp_path / "steps.log", tmp_path / "paused"
    args = {"out_dir": str(out), "log": str(log), "marker": str(marker), "phantom": PHANTOM,
            "config": CONFIG, **pause}  # fmt: skip
    _kill_when(marker, _start_child(CHILD, args, tmp_path), tmp_path)
    losses = [float(x) for x in log.read_text().split()] if log.is_file() else []
    return out, losses


def _temps(out: Path) -> list[Path]:
    return sorted(out.glob(".*.tmp"))


def _resume(out: Path, data, monkeypatch) -> tuple[pd.DataFrame, int]:
    """Resume in this process; return the history and how many optimiser steps were computed."""
    computed = []
    real_update = train._update

    def counted(*args, **kwargs):
        computed.append(1)
        real_update(*args, **kwargs)

    monkeypatch.setattr(train, "_update", counted)
    history = pretrain(PretrainConfig(**CONFIG, out_dir=str(out), resume=True), data).history
    return history, len(computed)


def _assert_resumed_like_reference(out: Path, history: pd.DataFrame, reference) -> None:
    """Contiguous epochs and steps, the reference's losses and weights, files that load."""
    ref_history, ref_encoder = reference
    epochs = np.repeat(np.arange(CONFIG["max_epochs"]), STEPS_PER_EPOCH)
    np.testing.assert_array_equal(history.epoch.to_numpy(), epochs)
    np.testing.assert_array_equal(history.step.to_numpy(), np.arange(TOTAL_STEPS))
    np.testing.assert_array_equal(history.loss.to_numpy(), ref_history.loss.to_numpy())
    final = load_checkpoint(out / "checkpoint.pt")
    assert final["epoch"] == CONFIG["max_epochs"] and len(final["history"]["loss"]) == TOTAL_STEPS
    encoder = load_checkpoint(out / "encoder.pt")
    assert encoder["encoder"].keys() == ref_encoder["encoder"].keys()
    for key, value in ref_encoder["encoder"].items():
        assert torch.equal(encoder["encoder"][key], value), key
    on_disk = pd.read_csv(out / "history.csv")  # the metrics file continues the killed run's
    np.testing.assert_array_equal(on_disk.step.to_numpy(), np.arange(TOTAL_STEPS))
    np.testing.assert_array_equal(on_disk.loss.to_numpy(), ref_history.loss.to_numpy())
    assert _temps(out) == []


# --------------------------------------------------------------------------------------------
# killed between steps
# --------------------------------------------------------------------------------------------
def test_killed_mid_epoch_resumes_exactly_redoing_at_most_one_epoch(
    phantom, reference, tmp_path, monkeypatch
):
    """SIGKILL two steps into epoch 1 (after epoch 0's checkpoint): the resume starts at epoch 1."""
    killed_steps = STEPS_PER_EPOCH + 2
    out, killed = _kill_run(tmp_path, pause_step=killed_steps)
    assert len(killed) == killed_steps
    np.testing.assert_array_equal(killed, reference[0].loss.to_numpy()[:killed_steps])
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["epoch"] == 1 and saved["history"]["step"] == list(range(STEPS_PER_EPOCH))
    assert not (out / "encoder.pt").exists() and not (out / "history.csv").exists()

    history, computed = _resume(out, phantom, monkeypatch)
    assert computed == TOTAL_STEPS - saved["epoch"] * STEPS_PER_EPOCH  # starts at the checkpoint
    assert killed_steps - saved["epoch"] * STEPS_PER_EPOCH <= STEPS_PER_EPOCH  # redone: < 1 epoch
    _assert_resumed_like_reference(out, history, reference)


# --------------------------------------------------------------------------------------------
# killed inside a checkpoint write
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("write", [1, 2], ids=["first-write", "second-write"])
def test_killed_during_checkpoint_write_keeps_the_previous_checkpoint(
    phantom, reference, tmp_path, monkeypatch, write
):
    """SIGKILL halfway through the n-th ``checkpoint.pt`` write: the file is absent (n = 1) or the
    previous complete one (epoch n - 1); the partial temporary file is never read, the next write
    removes it, and the resume ends with the reference's losses."""
    out, killed = _kill_run(tmp_path, pause_write=write)
    assert len(killed) == write * STEPS_PER_EPOCH  # the kill came at the end of epoch n - 1
    (partial,) = _temps(out)
    assert partial.name.startswith(".checkpoint.pt.") and partial.stat().st_size > 0
    with pytest.raises(ValueError, match="corrupt"):  # truly partial: loading it fails loudly
        load_checkpoint(partial)
    if write == 1:
        assert not (out / "checkpoint.pt").exists()
    else:
        assert load_checkpoint(out / "checkpoint.pt")["epoch"] == write - 1

    history, computed = _resume(out, phantom, monkeypatch)
    assert computed == TOTAL_STEPS - (write - 1) * STEPS_PER_EPOCH
    assert not partial.exists()
    _assert_resumed_like_reference(out, history, reference)


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    """Only temporaries whose writer process is gone go; a live writer's stays; others untouched."""
    path = tmp_path / "checkpoint.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pt.{dead.pid}.0badc0de.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.00c0ffee.tmp"
    other = tmp_path / f".encoder.pt.{dead.pid}.0badc0de.tmp"
    for file in (stale, live, other):
        file.write_bytes(b"partial")
    assert remove_stale_temps(path) == [stale]
    save_checkpoint({"w": torch.zeros(2)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, live.name, other.name])


def test_atomic_files_follow_the_umask(tmp_path):
    """Not ``mkstemp``'s private 0600: a run's files are readable as any file the user writes."""
    umask = os.umask(0o022)
    try:
        path = save_checkpoint({"w": torch.zeros(2)}, tmp_path / "ck.pt")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------
# grid level: a cell killed while running is run again
# --------------------------------------------------------------------------------------------
def _finishing_runner(notebook, params, name=None, runs_dir="runs", progress=True, kernel=None):
    """``tests/test_grid.py::fake_runner``'s shape: log the call, write a results.csv."""
    folder = Path(runs_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(Path(runs_dir) / "calls.log", "a") as log:
        log.write(name + "\n")
    rows = [
        {"init": i, "n_labelled": n, "seed": s, "test_dice": 0.5 + 0.1 * s}
        for i, n, s in itertools.product(["random init", "SimCLR"], ["1"], [0, 1])
    ]
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def test_grid_cell_killed_while_running_is_rerun(tmp_path):
    spec = {"notebook": "00_quickstart", "params": {"smoke": True}, "axes": {"seed": [0, 1]}}
    out, marker = tmp_path / "grid", tmp_path / "paused"
    args = {"spec": spec, "out": str(out), "marker": str(marker)}
    proc = _start_child(GRID_CHILD, args, tmp_path)
    _kill_when(marker, proc, tmp_path)
    killed = grid.read_record(out / "seed=0")
    assert killed["status"] == "running" and killed["pid"] == proc.pid and killed["attempts"] == 1
    assert grid.read_record(out / "seed=1")["status"] == "pending"  # queued, never started
    assert _temps(out / "seed=0") == []

    plan = grid.run_grid(spec, out, runner=_finishing_runner, log=lambda line: None)
    assert [p["action"] for p in plan] == ["resume", "resume"]
    assert "'running'" in plan[0]["reason"] and "'pending'" in plan[1]["reason"]
    assert (out / "calls.log").read_text().split() == ["seed=0", "seed=0", "seed=1"]
    record = grid.read_record(out / "seed=0")
    assert record["status"] == "done" and record["attempts"] == 2 and record["pid"] == os.getpid()
    again = grid.run_grid(spec, out, runner=_finishing_runner, log=lambda line: None)
    assert [p["action"] for p in again] == ["skip", "skip"]
