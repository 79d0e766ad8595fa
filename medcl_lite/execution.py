"""Executing a notebook with papermill, as ``medcl reproduce`` does: a run that speaks.

Two things papermill leaves out:

- **Where the run is.** A long run with papermill's progress bar off (``make demo``, logs, grids)
  prints nothing for minutes. The engine here prints one line whenever the run enters a new
  section of the notebook (its ``#`` / ``##`` headings), with the time elapsed and the cell
  count (the engine ``_stage_engine`` builds, registered as :data:`ENGINE`):
  ``[quickstart 03:12] cell 23/61 · 4 · Fine-tuning with few labels``, and again each minute a
  section runs on (``... (running)``, :data:`HEARTBEAT_S`).
- **Quiet, local kernels.** Over TCP, ipykernel warns at every start that its traffic is not
  encrypted. On Linux and macOS the kernel talks over IPC sockets in a private temporary folder
  instead (no network port at all), so there is nothing to warn about.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["ENGINE", "execute", "section_of_cells"]

#: The papermill engine name under which the section-printing engine is registered.
ENGINE = "medcl-stages"
#: Seconds without a line after which a long section prints ``(running)`` with the time elapsed.
HEARTBEAT_S = 60.0


def section_of_cells(cells) -> dict[int, str]:
    """Cell index -> the title of the last ``#`` / ``##`` heading above that cell (code cells
    only; "" before the first heading). ``cells``: notebook cells (``cell_type``, ``source``)."""
    sections, current = {}, ""
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith(("# ", "## ")):
                    current = line.lstrip("#").strip()
        elif cell.cell_type == "code":
            sections[index] = current
    return sections


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes:02d}:{seconds:02d}"


def _stage_engine():
    """A papermill engine class (nbclient's) that prints a line per section; built on first use,
    so that importing this module does not import papermill."""
    from papermill.engines import NBClientEngine

    class StageEngine(NBClientEngine):
        """papermill's nbclient engine that prints a line when a run enters a new section, and
        again every ``heartbeat`` seconds while it stays in one (``... (running)``)."""

        label = "run"
        stream = sys.stderr
        heartbeat = HEARTBEAT_S

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            sections = section_of_cells(nb_man.nb.cells)
            order = {index: k + 1 for k, index in enumerate(sections)}
            start = time.perf_counter()
            state = {"section": None, "cell": None, "said": start}
            lock, stop = threading.Lock(), threading.Event()
            original = nb_man.cell_start

            def say(index: int, ending: str = "") -> None:
                with lock:
                    print(f"[{cls.label} {_clock(time.perf_counter() - start)}] cell"
                          f" {order[index]}/{len(order)} · {sections[index] or 'setup'}{ending}",
                          file=cls.stream, flush=True)  # fmt: skip
                    state["said"] = time.perf_counter()

            def cell_start(cell, cell_index=None, **kw):
                section = sections.get(cell_index)
                if section is not None:
                    state["cell"] = cell_index
                    if section != state["section"]:
                        state["section"] = section
                        say(cell_index)
                return original(cell, cell_index, **kw)

            def beat() -> None:  # a long section still shows that the run is alive
                while not stop.wait(min(cls.heartbeat, 5.0)):
                    index = state["cell"]
                    if index is not None and time.perf_counter() - state["said"] >= cls.heartbeat:
                        say(index, " (running)")

            nb_man.cell_start = cell_start
            thread = threading.Thread(target=beat, name="medcl-heartbeat", daemon=True)
            thread.start()
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                stop.set()
                thread.join()

    return StageEngine


def _ipc_kernel_manager(folder: Path):
    """A kernel manager class whose kernels listen on IPC sockets in ``folder``."""
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(folder / "kernel")

    return IPCKernelManager


def execute(source: Path, out: Path, parameters: dict, *, label: str, kernel: str | None = None,
            progress: bool = True, cwd: str | None = None, heartbeat: float = HEARTBEAT_S) -> None:  # fmt: skip
    """Run notebook ``source`` into ``out`` with papermill, printing a line per section (to
    stderr, prefixed ``[label mm:ss]``; again after ``heartbeat`` seconds without one), on an IPC
    kernel where the platform has one.

    Raises:
        papermill.PapermillExecutionError: a cell raised (the executed notebook is written).
    """
    import papermill
    from papermill.engines import papermill_engines

    engine = _stage_engine()
    engine.label, engine.heartbeat = label, float(heartbeat)
    papermill_engines.register(ENGINE, engine)
    with tempfile.TemporaryDirectory(prefix="medcl-kernel-") as sockets:
        extra = {} if sys.platform == "win32" else {"kernel_manager_class": _ipc_kernel_manager(Path(sockets))}
        papermill.execute_notebook(str(source), str(out), parameters=parameters, kernel_name=kernel,
                                   progress_bar=progress, cwd=cwd, engine_name=ENGINE, **extra)  # fmt: skip
