"""Recorded reference runs: each chapter's result tables, kept in the repository with how they were made.

A chapter's notebook shows the numbers of its own run, and next to them the tables of its
*reference run*: the ``cpu`` size run on a known machine, with the machine to itself, on a known
commit. ``medcl reproduce CHAPTER ... --record`` copies that run's tables and its executed notebook
(figures included) into ``notebooks/reference/<chapter>/`` with a ``run.json`` that says what ran:

    notebooks/reference/00_quickstart/
        run.json               commit, date, command, machine, threads, torch, wall time
        results.csv, .md       the run's tables (what the notebook wrote into its run folder)
        diagnosis.csv ...      any other table the run wrote (:data:`TABLES`)
        00_quickstart.ipynb    the executed notebook

Notebooks read these files (:func:`load_table`, :func:`caption`) instead of retyping numbers.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.utils import course_dir, cpu_model

__all__ = ["TABLES", "caption", "current_commit", "load_table", "record", "reference_dir", "reference_root"]

#: The run-folder files a reference keeps, when the run wrote them.
TABLES = ("results.csv", "results.md", "protocols.csv", "diagnosis.csv", "diagnosis_rows.csv", "comparison.csv",
          "pointing.csv")
#: An executed notebook larger than this is not kept (figures at teaching sizes are far smaller).
MAX_NOTEBOOK_BYTES = 5_000_000


def reference_root() -> Path:
    """``$MEDCL_REFERENCE``, else the course's ``reference/`` (:func:`medcl_lite.utils.course_dir`:
    the repository's ``notebooks/reference``, or the copy an installed wheel ships)."""
    if os.environ.get("MEDCL_REFERENCE"):
        return Path(os.environ["MEDCL_REFERENCE"]).expanduser()
    return course_dir() / "reference"


def reference_dir(chapter: str) -> Path:
    """The folder of ``chapter``'s reference run (e.g. ``"00_quickstart"``); it may not exist."""
    return reference_root() / chapter


def load_table(chapter: str, name: str = "results.csv") -> pd.DataFrame | None:
    """A recorded table of ``chapter`` (CSV), or None when this checkout has none (e.g. a pip
    install without the repository)."""
    path = reference_dir(chapter) / name
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"n_labelled": str})


def caption(chapter: str) -> str:
    """One line on how ``chapter``'s reference run was made (from its ``run.json``, with its ``note``
    when one was added by hand, e.g. what a run reused)."""
    path = reference_dir(chapter) / "run.json"
    if not path.is_file():
        return f"no recorded reference run of {chapter} in {reference_root()}"
    run = json.loads(path.read_text())
    note = f" Note: {run['note']}" if run.get("note") else ""
    return (f"reference run of {run['date']} on commit {run['commit'][:8]}: {run['machine']}, {run['threads']} "
            f"thread(s), torch {run['torch']}, {run['wall_time']}; `{run['command']}`{note}")  # fmt: skip


def _git_commit(folder: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + ("+uncommitted" if dirty else "")



def current_commit() -> str:
    """The checkout's commit, with ``+uncommitted`` when tracked files differ from it ("unknown"
    outside a git checkout). Read it *before* a run starts: that is the code the run executes."""
    return _git_commit(Path(__file__).resolve().parent)


def record(
    run_dir: str | Path,
    chapter: str,
    command: str,
    dest_root: str | Path | None = None,
    threads: int | None = None,
    commit: str | None = None,
) -> Path:
    """Copy a finished run's tables and executed notebook into ``dest_root/chapter`` (default:
    :func:`reference_root`) and write its ``run.json``; ``commit`` is :func:`current_commit` as
    read when the run started (default: now). The old reference of that chapter is replaced as a
    whole, so no stale table survives. Returns the reference folder."""
    import torch

    from medcl_lite.threads import requested_threads

    run_dir = Path(run_dir)
    notebook = run_dir / f"{chapter}.ipynb"
    wall = run_dir / "wall_time.txt"
    if not notebook.is_file() or not wall.is_file():
        raise FileNotFoundError(f"record: {run_dir} is not a finished run of {chapter} (no {notebook.name} or wall_time.txt)")
    if notebook.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"record: {notebook} is {notebook.stat().st_size / 1e6:.1f} MB, over {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB")
    root = Path(dest_root) if dest_root is not None else reference_root()
    dest = root / chapter
    staging = root / f".{chapter}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (*TABLES, notebook.name):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, staging / name)
    run = {
        "chapter": chapter,
        "date": datetime.date.today().isoformat(),
        "commit": commit or current_commit(),
        "command": command,
        "machine": f"{os.cpu_count()}-core {cpu_model() or platform.machine()}",
        "threads": requested_threads(threads) or os.cpu_count(),
        "torch": torch.__version__,
        "wall_time": wall.read_text().strip(),
    }
    atomic_write_text(staging / "run.json", json.dumps(run, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest
