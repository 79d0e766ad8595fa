"""Checkpoints: atomic, safe loading, RNG states round trip."""

import random

import numpy as np
import pytest
import torch

from medcl_lite.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


def test_roundtrip_with_weights_only(tmp_path):
    state = {"w": torch.arange(3.0), "epoch": 2, "config": {"lr": 0.1}}
    path = save_checkpoint(state, tmp_path / "run" / "ck.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["config"] == {"lr": 0.1}
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temp file left


def test_rng_state_restores_all_generators():
    gen = torch.Generator().manual_seed(3)
    state = get_rng_state(gen)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    set_rng_state(state, gen)
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    assert first == again


def test_corrupt_and_missing_checkpoints_are_named(tmp_path):
    path = save_checkpoint({"w": torch.zeros(100)}, tmp_path / "ck.pt")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="ck.pt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
