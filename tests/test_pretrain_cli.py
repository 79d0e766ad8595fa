"""`medcl pretrain -f FILE`: one process, and two CPU processes launched by torchrun (gloo)."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from medcl_lite.checkpoint import load_checkpoint
from medcl_lite.config import ConfigError
from medcl_lite.pretrain_cli import load_images, read_pretrain_file
from medcl_lite.repro import main as medcl

TINY = {
    "data": "phantom:xray",
    "phantom_size": 32,
    "site": "A",
    "framework": "moco",
    "pairing": "temporal",
    "batch_size": 16,
    "max_epochs": 1,
    "queue_size": 32,
    "proj_dim": 16,
    "progress": False,
    "device": "cpu",
}


def _write(tmp_path, **values):
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "out"), **values}))
    return path


def test_one_process_run_writes_weights_and_resumes(tmp_path, capsys):
    path = _write(tmp_path)
    before = torch.get_num_threads()
    try:
        assert medcl(["pretrain", "-f", str(path), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # the run's thread count, chosen on purpose
    finally:
        torch.set_num_threads(before)
    assert "1 process(es) x 1 CPU thread(s)" in capsys.readouterr().out
    first = pd.read_csv(tmp_path / "out" / "history.csv")
    assert load_checkpoint(tmp_path / "out" / "checkpoint.pt")["epoch"] == 1
    path = _write(tmp_path, max_epochs=2)  # same run, one more epoch: resumes (resume defaults on)
    assert medcl(["pretrain", "-f", str(path)]) == 0
    both = pd.read_csv(tmp_path / "out" / "history.csv")
    assert len(both) == 2 * len(first) and both.loss[: len(first)].tolist() == first.loss.tolist()
    assert both.seconds.is_monotonic_increasing  # elapsed time continues across the resume
    assert set(load_checkpoint(tmp_path / "out" / "encoder.pt")) >= {"encoder"}


def test_torchrun_two_cpu_processes(tmp_path):
    path = _write(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "medcl_lite.pretrain_cli", "-f", str(path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("pretraining moco/temporal") == 1  # rank 0 alone prints
    assert "2 process(es) x 1 CPU thread(s), global batch 16" in run.stdout  # torchrun: 1 each
    state = load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert state["epoch"] == 1 and int(state["queue"]["filled"]) > 0
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    images, rows = load_images("phantom:xray", 32, "A")
    assert len(history) == len(rows) // 16  # every global batch of 16 is one step
    assert torch.isfinite(torch.tensor(history.loss.to_numpy())).all()


def test_bad_files_name_the_problem(tmp_path):
    path = tmp_path / "no_data.yaml"
    path.write_text(yaml.safe_dump({"out_dir": "x"}))
    with pytest.raises(ConfigError, match="no `data:`"):
        read_pretrain_file(path)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out_dir": "x", "batchsize": 8}))
    with pytest.raises(ConfigError, match="typo.yaml.*batchsize.*batch_size"):
        read_pretrain_file(path)
    path.write_text(yaml.safe_dump({**TINY}))
    with pytest.raises(ConfigError, match="no `out_dir:`"):
        read_pretrain_file(path)
    with pytest.raises(ConfigError, match="built-in phantoms are"):
        load_images("phantom:knee")
    with pytest.raises(ConfigError, match="site='Z'.*sites are"):
        load_images("phantom:xray", 32, "Z")
