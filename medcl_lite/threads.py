"""CPU threads: how many a run uses, and how they wait, so that runs sharing a CPU do not collapse.

torch does its CPU work on an OpenMP thread pool, by default one thread per core. Between two
parallel regions an idle OpenMP thread *spins* (busy-waits) for a while before it sleeps. Alone on a
machine that is fast; two runs that each spin on every core take the cores from each other, and each
slows down many times over (measured on a 2-core CPU: two short pretrain + fine-tune runs at once
each took 16x as long as one alone with torch's defaults, 1.56x with these settings;
``benchmarks/README.md``, "bench_concurrency"). Two settings fix it:

1. **Passive waiting** (``OMP_WAIT_POLICY=PASSIVE``): idle threads sleep at once. OpenMP reads the
   variable once, when torch loads it, so it must be in the environment *before* ``import torch``.
   ``import medcl_lite`` sets it (unless it is set already) when torch is not loaded yet, and every
   process the package starts (notebook kernels, grid workers) gets it in its environment. Alone it
   costs about 5 % (same benchmark); set ``OMP_WAIT_POLICY=ACTIVE`` to opt out.
2. **A share of the cores**: ``$MEDCL_THREADS`` (or ``medcl reproduce --threads N``, or
   :func:`set_threads`) tells a run how many threads to use; ``medcl reproduce --grid --jobs N``
   gives each worker ``cores // N``.

This module imports torch only inside :func:`set_threads`, so that ``medcl_lite/__init__`` can call
:func:`prefer_passive_wait` before anything loads torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping

__all__ = [
    "THREADS_ENV",
    "WAIT_POLICY_ENV",
    "available_cores",
    "child_env",
    "omp_wait_policy",
    "prefer_passive_wait",
    "requested_threads",
    "set_threads",
    "share",
    "updated_environ",
]

THREADS_ENV = "MEDCL_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
#: Thread-count variables of the libraries torch and numpy run on, set for a child process.
_LIBRARY_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: What OpenMP read when torch loaded it, as far as this process can tell (see omp_wait_policy).
_policy_seen_by_torch: str | None = None


def prefer_passive_wait() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set, when torch is not loaded yet (after, it
    would have no effect and the environment would misreport it). Called by ``import medcl_lite``."""
    global _policy_seen_by_torch
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")
        _policy_seen_by_torch = os.environ[WAIT_POLICY_ENV]
    else:  # torch loaded first: OpenMP read whatever the environment held then, if anything
        _policy_seen_by_torch = os.environ.get(WAIT_POLICY_ENV) or "default"


def omp_wait_policy() -> str:
    """The OpenMP wait policy of this process's torch: ``"PASSIVE"``, ``"ACTIVE"``, or
    ``"default"`` (spin for a while, then sleep: torch was loaded before ``medcl_lite`` with the
    variable unset, e.g. ``import torch`` came first in a kernel started without it)."""
    return (_policy_seen_by_torch or "default").upper()  # set by ``import medcl_lite``, always first


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a container's
    cpuset), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def share(jobs: int, cores: int | None = None) -> int:
    """Threads for each of ``jobs`` runs at once: the cores split evenly, at least 1 each."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    return max(1, (cores or available_cores()) // jobs)


def _positive_int(value, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer (CPU threads), got {value!r}")
    return number


def requested_threads(threads: int | None = None) -> int | None:
    """The thread count a run was told to use: ``threads`` when given (> 0), else
    ``$MEDCL_THREADS``, else ``$OMP_NUM_THREADS`` (which torch already obeys, and which ``torchrun``
    sets to 1 per process); None when nothing was asked (use one thread per core)."""
    if threads is not None and threads != 0:
        return _positive_int(threads, "threads")
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            return _positive_int(value.split(",")[0], f"${name}")
    return None


def set_threads(threads: int | None = None) -> int:
    """Choose torch's CPU thread count on purpose and return it: :func:`requested_threads` if
    anything was asked, else one per available core. Every entry point that trains calls it first
    (the notebooks' setup, ``medcl pretrain``, the benchmarks)."""
    import torch

    count = requested_threads(threads) or available_cores()
    torch.set_num_threads(count)
    return count


def child_env(threads: int | None = None) -> dict[str, str]:
    """Environment variables for a process this package starts (a notebook kernel, a grid worker's
    kernels): passive OpenMP waiting unless the variable is already set, and with ``threads`` that
    many threads for torch, OpenMP, MKL and OpenBLAS (``$MEDCL_THREADS`` included)."""
    env = {WAIT_POLICY_ENV: os.environ.get(WAIT_POLICY_ENV) or "PASSIVE"}
    if threads is not None:
        count = str(_positive_int(threads, "threads"))
        env |= {THREADS_ENV: count} | dict.fromkeys(_LIBRARY_THREAD_VARS, count)
    return env


@contextlib.contextmanager
def updated_environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while the block runs (children started inside inherit
    them), then restored exactly, variables that were absent removed again."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
