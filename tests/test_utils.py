"""Run-time helpers: seeding repeats, device choice, the environment print."""

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
