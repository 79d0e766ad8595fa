"""What every benchmark script records: where it ran, when, how, and its JSON record on disk.

The scripts run as ``python benchmarks/<script>.py``, which puts this folder on ``sys.path``; they
import ``from _common import ...``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from medcl_lite.threads import omp_wait_policy
from medcl_lite.utils import cpu_model

#: Where the scripts write their records by default (commit the ones README.md quotes).
RESULTS = Path(__file__).parent / "results"


def machine(device: torch.device | None = None, versions: dict[str, str] | None = None) -> dict:
    """Where a benchmark ran: platform, Python, torch (then ``versions``, e.g. ``{"numpy": ...}``),
    with ``device`` that device and its name (the GPU on CUDA, else the CPU model), CPU model,
    cores, torch intra-/inter-op threads and the load average when called (call it at the start)."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **(versions or {}),
    }
    cpu = cpu_model()
    if device is not None:
        info["device"] = str(device)
        info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {
        **info,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": omp_wait_policy(),
        "load_average_at_start": os.getloadavg(),
    }


def flat_machine(info: dict) -> dict:
    """The machine keys that ``bench_pretrain_step`` and ``bench_region_loss`` write at the top
    level of their records (kept so that committed results read the same), from
    ``machine(device)``: device, gpu (None off CUDA), cpu_threads, platform, torch."""
    on_cuda = torch.device(info["device"]).type == "cuda"
    return {
        "device": info["device"],
        "gpu": info["device_name"] if on_cuda else None,
        "cpu_threads": info["torch_threads"],
        "platform": info["platform"],
        "torch": info["torch"],
    }


def header(benchmark: str, argv: list[str] | None = None) -> dict:
    """The first keys of a record: ``benchmark``, today's ``date`` and the ``command`` that ran it
    (``python benchmarks/<script>.py ...``; ``argv`` stands for ``sys.argv[1:]`` when given)."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, sys.argv[0], *args]),
    }


def write_result(record: dict, out_dir: str | Path, name: str) -> Path:
    """Print ``record`` as indented JSON and write it to ``out_dir / name`` atomically (temp file
    in ``out_dir``, then rename; ``out_dir`` is created). Returns the path written."""
    text = json.dumps(record, indent=2)
    print(text)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are for everyone to read
        os.replace(tmp, out_dir / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out_dir / name


def batch_seconds(batches) -> list[float]:
    """Seconds between consecutive batches of an iterable (e.g. a DataLoader alone)."""
    times, start = [], time.perf_counter()
    for _ in batches:
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times
