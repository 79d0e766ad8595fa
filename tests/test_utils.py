"""Run-time helpers: seeding repeats, device choice, size preset and run folder, the environment print."""

import numpy as np
import torch

import medcl_lite


def test_seed_everything_repeats():
    medcl_lite.seed_everything(5)
    a = (np.random.rand(), torch.rand(1).item())
    medcl_lite.seed_everything(5)
    assert (np.random.rand(), torch.rand(1).item()) == a


def test_get_device_auto_and_forced():
    assert medcl_lite.get_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert medcl_lite.get_device().type == expected
    else:
        assert medcl_lite.get_device().type in {"cpu", "mps"}


def test_print_env_reports_versions(capsys):
    info = medcl_lite.print_env()
    out = capsys.readouterr().out
    assert info["torch"] == torch.__version__ and "torch" in out and "device" in out


def test_run_size_smoke_on_cpu_full_size_on_accelerators():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert medcl_lite.run_size(None, "auto", cpu) == "smoke"
    assert medcl_lite.run_size(None, "auto", cuda) == "gpu"
    assert medcl_lite.run_size(None, "auto", mps) == "cpu"  # Apple silicon: the CPU-sized run
    assert medcl_lite.run_size(False, "auto", cpu) == "cpu"
    assert medcl_lite.run_size(False, "gpu", cpu) == "gpu"  # a forced preset wins
    assert medcl_lite.run_size(True, "gpu", cuda) == "smoke"  # and smoke wins over it


def test_run_folder_out_dir_or_medcl_runs(tmp_path, monkeypatch):
    given = medcl_lite.run_folder(tmp_path / "mine", "pcl-cpu")
    assert given == tmp_path / "mine" and (given / "figures").is_dir()
    monkeypatch.setenv("MEDCL_RUNS", str(tmp_path / "runs"))
    assert medcl_lite.run_folder("", "pcl-cpu") == tmp_path / "runs" / "pcl-cpu"
    assert (tmp_path / "runs" / "pcl-cpu" / "figures").is_dir()
    monkeypatch.delenv("MEDCL_RUNS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = medcl_lite.run_folder("", "pcl-cpu")
    assert default == tmp_path / "home" / ".cache" / "medcl_lite" / "runs" / "pcl-cpu"
