"""Checkpoints written atomically and loaded safely, with the RNG states for exact resume.

A checkpoint is one ``torch.save`` dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs). It is written to a temporary file in the
same folder and then renamed over the old one: a crash mid-write never leaves a broken checkpoint,
and the temporary files of killed writers are removed by the next write.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "get_rng_state",
    "load_checkpoint",
    "remove_stale_temps",
    "save_checkpoint",
    "set_rng_state",
]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling file and ``os.replace``."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` ``state`` atomically; ``state["config"]`` may be a dict (stored as JSON)."""
    state = dict(state)
    if isinstance(state.get("config"), dict):
        state["config"] = json.dumps(state["config"], sort_keys=True)
    return atomic_write(path, lambda f: torch.save(state, f))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """``write`` into ``.<name>.<pid>.<random>.tmp`` beside ``path``, then rename it over ``path``.

    A process killed mid-write (SIGKILL, no ``except`` runs) leaves only its temporary file, which
    the next write to ``path`` removes (:func:`remove_stale_temps`). The file gets the usual
    permissions (umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files of writes to ``path`` whose process is gone; return them.

    Names are ``.<name>.<pid>.<hex>.tmp``; a file whose pid is still running on this machine is
    another write in progress and stays.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        if match and not _pid_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear error names a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format ...
        raise ValueError(f"checkpoint {path} is unreadable or corrupt: {err}") from err
    if isinstance(state.get("config"), str):
        state["config"] = json.loads(state["config"])
    return state


def get_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA, and a data-loader generator) RNG states as safe values."""
    np_state = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` captured."""
    random.setstate(_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
