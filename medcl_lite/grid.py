"""Reproduction grids: ``medcl reproduce --grid notebooks/params/<paper>/grid.yaml --out DIR``.

A grid file names a notebook, its parameters (``base`` files and/or ``params``) and ``axes``
(parameter -> values; every combination is one *cell*). Each cell runs through papermill
(:func:`medcl_lite.repro.reproduce`) into ``DIR/<cell id>/``, where a run registry file
``run.json`` records its parameters, status (pending / running / done / failed), times, error and
metrics. Running the grid again skips done cells with the same parameters and re-runs the others
into the same folder, where the notebooks resume from their checkpoints and finished fine-tuning
runs. Finally every done cell's ``results.csv`` is gathered into ``DIR/results.csv`` and tabulated
as mean ± std over seeds and folds (docs/methods.md, "Protocol common to all chapters") in
``DIR/results.md``, with the paper's published numbers beside ours where the grid file gives them
(never invented), and ``DIR/dice_vs_labels.png``.

Grid file keys: ``notebook``, ``base`` (parameter files, relative to the grid file), ``params``,
``axes``, ``table`` (``index``, ``columns``, ``value``) and ``paper`` (``source``: the citation,
``table``: row label -> column label -> published value).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import socket
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.metrics import summarize
from medcl_lite.repro import check_params, find_notebook, load_params, read_yaml_mapping, reproduce
from medcl_lite.threads import (
    THREADS_ENV,
    child_env,
    requested_threads,
    set_threads,
    share,
    updated_environ,
)

__all__ = [
    "Cell",
    "cell_id",
    "check_spec",
    "collect_results",
    "expand_grid",
    "gpu_assignments",
    "grid_table",
    "load_grid",
    "plan_cell",
    "read_record",
    "run_cell",
    "run_grid",
    "worker_threads",
    "write_summary",
]

GRID_KEYS = ("notebook", "base", "params", "axes", "table", "paper")
DEFAULT_TABLE = {"index": ["init"], "columns": ["n_labelled"], "value": "test_dice"}
RECORD = "run.json"
MAX_ID_LENGTH = 80


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its folder name, the notebook and its full parameters."""

    id: str
    notebook: str
    params: dict = field(hash=False)
    axes: dict = field(hash=False)


# ---------------------------------------------------------------------------------------------
# grid file and expansion
# ---------------------------------------------------------------------------------------------
def load_grid(path: str | Path) -> dict:
    """Read and check a grid file; ``base`` paths become absolute (relative to the file)."""
    path = Path(path)
    spec = read_yaml_mapping(path, "grid file", "(notebook, base, params, axes)")
    base = spec.get("base") or []
    base = [base] if isinstance(base, str) else list(base)
    spec["base"] = [str(_resolve(path.parent, file)) for file in base]
    spec["source"] = str(path)
    check_spec(spec)
    return spec


def _resolve(folder: Path, file: str) -> Path:
    candidate = Path(file)
    if candidate.is_absolute() or not (folder / candidate).is_file():
        return candidate
    return (folder / candidate).resolve()


def check_spec(spec: dict) -> None:
    """Fail on unknown keys, a missing notebook, empty or ill-typed axes, a bad table or paper."""
    unknown = sorted(set(spec) - {*GRID_KEYS, "source"})
    if unknown:
        raise ValueError(f"grid: unknown key(s) {unknown}; a grid file has {list(GRID_KEYS)}")
    if not spec.get("notebook"):
        raise ValueError("grid: 'notebook' is required, e.g. notebook: 00_quickstart")
    for name in ("params", "axes", "table", "paper"):
        if not isinstance(spec.get(name) or {}, dict):
            raise ValueError(f"grid: {name!r} must be a mapping, got {spec[name]!r}")
    for name, values in (spec.get("axes") or {}).items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid: axis {name!r} must be a non-empty list, got {values!r}")
    table = {**DEFAULT_TABLE, **(spec.get("table") or {})}
    if set(table) - set(DEFAULT_TABLE):
        raise ValueError(f"grid: table has keys {sorted(table)}; allowed {list(DEFAULT_TABLE)}")
    paper = spec.get("paper") or {}
    if paper and (not paper.get("source") or not isinstance(paper.get("table"), dict)):
        raise ValueError(
            "grid: paper needs 'source' (the citation) and 'table' (row -> column -> value)"
        )


def cell_id(axis_values: dict) -> str:
    """Stable folder name from a cell's axis values, e.g. ``"seed=0__n_folds=2"``.

    Characters outside ``[A-Za-z0-9._=-]`` become ``_``; when that loses information (or the name
    is longer than 80 characters) an 8-hex hash of the exact values is appended, so two cells never
    share a folder and re-expanding the grid maps each cell to the same one.
    """
    if not axis_values:
        return "default"
    readable = "__".join(f"{k}={_value_text(v)}" for k, v in axis_values.items())
    safe = re.sub(r"[^A-Za-z0-9._=-]", "_", readable)
    if safe == readable and len(safe) <= MAX_ID_LENGTH:
        return safe
    digest = hashlib.sha1(_canonical(axis_values).encode()).hexdigest()[:8]
    return f"{safe[: MAX_ID_LENGTH - 9]}-{digest}"


def _value_text(value) -> str:
    if isinstance(value, list | tuple):
        return "-".join(_value_text(v) for v in value)
    return str(value)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _normalise(params: dict) -> dict:
    """Parameters as JSON gives them back (tuples -> lists, keys -> str), for comparisons."""
    return json.loads(_canonical(params))


def expand_grid(spec: dict) -> list[Cell]:
    """The cells of a grid: the cartesian product of ``axes`` over ``base`` + ``params``.

    Order is deterministic: axes in file order, the last axis varying fastest. Every parameter
    (base, params, axes) is checked against the notebook's ``parameters`` cell before anything runs.
    """
    check_spec(spec)
    notebook = spec["notebook"]
    common = {**load_params(spec.get("base")), **(spec.get("params") or {})}
    common.pop("out_dir", None)
    axes = spec.get("axes") or {}
    source = find_notebook(notebook)
    cells = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        params = _normalise(check_params(source, {**common, **values}))
        cells.append(Cell(cell_id(values), notebook, params, _normalise(values)))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError(f"grid: axis values give duplicate cells {sorted(ids)}")
    return cells


# ---------------------------------------------------------------------------------------------
# run registry
# ---------------------------------------------------------------------------------------------
def read_record(folder: str | Path) -> dict | None:
    """A cell's ``run.json``, or None when there is none (or it cannot be parsed)."""
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_record(folder: Path, record: dict) -> None:
    atomic_write_text(folder / RECORD, json.dumps(record, indent=2, sort_keys=True, default=str))


def plan_cell(cell: Cell, out: str | Path) -> tuple[str, str]:
    """What to do with a cell: ``("skip" | "run" | "resume" | "rerun", reason)``."""
    record = read_record(Path(out) / cell.id)
    if record is None:
        return "run", "new"
    if _normalise(record.get("params", {})) != cell.params:
        return "rerun", f"parameters changed: {_diff(record.get('params', {}), cell.params)}"
    status = record.get("status")
    if status == "done":
        return "skip", f"done in {record.get('wall_s', 0):.0f} s"
    return "resume", f"last status {status!r}: resumes from its checkpoints"


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    changes = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(changes)


def _mark_pending(cell: Cell, folder: Path) -> None:
    """Queue a cell in the registry (keeps its attempt count)."""
    attempts = (read_record(folder) or {}).get("attempts", 0)
    record = {
        "id": cell.id,
        "notebook": cell.notebook,
        "params": cell.params,
        "axes": cell.axes,
        "status": "pending",
        "attempts": attempts,
        "queued": _now(),
    }
    _write_record(folder, record)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_cell(
    cell: Cell, out: str | Path, runner: Callable = reproduce, table: dict | None = None
) -> dict:
    """Run one cell into ``out/<cell.id>`` with ``runner`` (papermill by default).

    The registry says ``running`` while it runs (a crash leaves it so: the next grid run resumes
    the cell), then ``done`` with its ``results.csv`` summarised for ``table`` (the grid's
    ``table`` mapping), or ``failed`` with the error.
    """
    folder = Path(out) / cell.id
    previous = read_record(folder) or {}
    record = {
        "id": cell.id,
        "notebook": cell.notebook,
        "params": cell.params,
        "axes": cell.axes,
        "status": "running",
        "attempts": previous.get("attempts", 0) + 1,
        "started": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    _write_record(folder, record)
    start = time.perf_counter()
    try:
        runner(cell.notebook, dict(cell.params), name=cell.id, runs_dir=str(out), progress=False)
        metrics = _cell_metrics(folder / "results.csv", table)
        record.update(status="done", metrics=metrics, error=None)
    except Exception as error:  # one failed cell must not stop the grid
        text = "".join(traceback.format_exception_only(error)).strip()
        record.update(status="failed", error=text[-4000:], metrics=None)
    record.update(ended=_now(), wall_s=round(time.perf_counter() - start, 2))
    _write_record(folder, record)
    return record


def _cell_metrics(results_csv: Path, table: dict | None = None) -> dict:
    """A cell's ``results.csv`` summarised: its row count and, per (index, columns) group of the
    grid's table, mean, std (ddof=1, None for one value) and count of the table's value."""
    if not results_csv.is_file():
        raise FileNotFoundError(f"the notebook wrote no {results_csv}")
    table = {**DEFAULT_TABLE, **(table or {})}
    rows = pd.read_csv(results_csv, dtype={"n_labelled": str})
    metrics = {"n_rows": len(rows), "value": table["value"], "summary": []}
    if table["value"] in rows.columns:
        keys = [k for k in [*table["index"], *table["columns"]] if k in rows.columns]
        summary = summarize(rows, keys, table["value"]).drop(columns="mean ± std")
        metrics["summary"] = _normalise(
            summary.astype(object).where(summary.notna(), None).to_dict("records")
        )
    return metrics


# ---------------------------------------------------------------------------------------------
# running a grid
# ---------------------------------------------------------------------------------------------
def gpu_assignments(jobs: int, visible: str | None = None, n_devices: int = 0) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each of ``jobs`` workers: worker i gets GPU i (round robin over
    the GPUs, or over the ``visible`` list already set); None everywhere without CUDA."""
    devices = [d for d in (visible or "").split(",") if d.strip()] if visible else []
    devices = devices or [str(i) for i in range(n_devices)]
    if not devices:
        return [None] * jobs
    return [devices[i % len(devices)] for i in range(jobs)]


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _worker_init(queue, threads: int) -> None:
    """A grid worker's environment, inherited by the notebook kernels it starts: its GPU (if any),
    its share of the CPU threads and passive OpenMP waiting (:mod:`medcl_lite.threads`)."""
    device = queue.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    os.environ.update(child_env(threads))
    set_threads(threads)


def run_grid(
    spec: dict | str | Path,
    out: str | Path,
    jobs: int = 1,
    dry_run: bool = False,
    runner: Callable = reproduce,
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> list[dict]:
    """Run every cell that is not done yet, then write the results table and plot.

    Args:
        spec: a grid mapping (see :func:`load_grid`) or the path of a grid file.
        out: the grid's folder; cell ``c`` runs in ``out/c``.
        jobs: cells run at once (a process pool; on CUDA, worker i sees GPU i only).
        dry_run: list the cells and what would happen, run nothing, write nothing.
        runner: ``runner(notebook, params, name=, runs_dir=, progress=)``, picklable when jobs > 1.
        log: where progress lines go.
        threads: CPU threads of each cell's run. Default: ``$MEDCL_THREADS`` if set, else with
            ``jobs`` > 1 the available cores split between the workers (at least 1 each), else
            the kernel's default (all cores).
    Returns:
        One dict per cell: ``id``, ``action``, ``reason``, ``status`` and ``params``.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    spec = load_grid(spec) if isinstance(spec, str | Path) else spec
    cells, out = expand_grid(spec), Path(out)
    plan = []
    for cell in cells:
        action, reason = plan_cell(cell, out)
        status = (read_record(out / cell.id) or {}).get("status", "pending")
        plan.append(
            {
                "id": cell.id,
                "action": action,
                "reason": reason,
                "status": status,
                "params": cell.params,
            }
        )
        log(f"{cell.id}: {action} ({reason})")
    if dry_run:
        return plan
    todo = [cell for cell, step in zip(cells, plan, strict=True) if step["action"] != "skip"]
    for cell in todo:
        _mark_pending(cell, out / cell.id)
    for record in _execute(todo, out, jobs, runner, spec.get("table"), threads, log):
        step = next(p for p in plan if p["id"] == record["id"])
        step["status"] = record["status"]
        log(
            f"{record['id']}: {record['status']} in {record['wall_s']:.0f} s"
            + (f": {record['error']}" if record["error"] else "")
        )
    write_summary(spec, cells, out)
    return plan


def worker_threads(workers: int, threads: int | None = None) -> int | None:
    """CPU threads of each of ``workers`` grid workers: ``threads`` if given, else
    ``$MEDCL_THREADS``, else the available cores split between them; None (the kernel's default)
    for a single worker with nothing asked."""
    if threads or os.environ.get(THREADS_ENV):  # not $OMP_NUM_THREADS: that one is this process's
        return requested_threads(threads)
    return None if workers == 1 else share(workers)


def _execute(
    cells: list[Cell],
    out: Path,
    jobs: int,
    runner: Callable,
    table: dict | None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
):
    """Yield each cell's final record: in this process, or in a pool of ``jobs`` workers."""
    workers = 1 if jobs == 1 or len(cells) <= 1 else min(jobs, len(cells))
    per_worker = worker_threads(workers, threads)
    if cells:
        log(f"{workers} worker(s), CPU threads each: {per_worker or 'all cores'}")
    if workers == 1:
        with updated_environ(child_env(per_worker)):
            for cell in cells:
                yield run_cell(cell, out, runner, table)
        return
    context = multiprocessing.get_context("spawn")  # no CUDA state or threads copied by fork
    queue = context.Queue()
    for device in gpu_assignments(workers, os.environ.get("CUDA_VISIBLE_DEVICES"), _cuda_devices()):
        queue.put(device)
    initargs = (queue, per_worker)
    with ProcessPoolExecutor(workers, context, initializer=_worker_init, initargs=initargs) as pool:
        futures = [pool.submit(run_cell, cell, out, runner, table) for cell in cells]
        for future in futures:
            yield future.result()


# ---------------------------------------------------------------------------------------------
# results: one table per grid, the paper's numbers beside ours
# ---------------------------------------------------------------------------------------------
def collect_results(cells: list[Cell], out: str | Path) -> pd.DataFrame:
    """Rows of every done cell's ``results.csv`` plus ``cell`` and the axis values as columns.

    An axis whose name is already a results column (e.g. ``seed``) is added as ``grid_<name>``.
    """
    frames = []
    for cell in cells:
        folder = Path(out) / cell.id
        if (read_record(folder) or {}).get("status") != "done":
            continue
        rows = pd.read_csv(folder / "results.csv", dtype={"n_labelled": str})
        extra = {"cell": cell.id}
        for name, value in cell.axes.items():
            extra[f"grid_{name}" if name in rows.columns else name] = _value_text(value)
        frames.append(rows.assign(**extra))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def grid_table(
    rows: pd.DataFrame, table: dict | None = None, paper: dict | None = None
) -> pd.DataFrame:
    """``mean ± std`` of ``table["value"]`` per (index, columns) over every other row (seeds,
    folds, grid cells); with ``paper``, each column ``c`` becomes ``"c · ours"`` and
    ``"c · paper"`` holding the published value where ``paper["table"]`` gives one, else "–"."""
    table = {**DEFAULT_TABLE, **(table or {})}
    index, columns, value = list(table["index"]), list(table["columns"]), table["value"]
    summary = summarize(rows, [*index, *columns], value)
    row_keys = [_label(summary, index, i) or value for i in range(len(summary))]
    col_keys = [_label(summary, columns, i) or value for i in range(len(summary))]
    row_order = _appearance_order(rows, index) or [value]
    col_order = sorted(dict.fromkeys(col_keys), key=_natural)
    published = {
        str(r): {str(c): v for c, v in cols.items()}
        for r, cols in ((paper or {}).get("table") or {}).items()
    }
    cells = dict(zip(zip(row_keys, col_keys, strict=True), summary["mean ± std"], strict=True))
    result = {}
    for col in col_order:
        name = f"{' · '.join(columns)}={col}" if columns else value
        if paper:
            result[f"{name} · ours"] = [cells.get((r, col), "–") for r in row_order]
            result[f"{name} · paper"] = [_text(published.get(r, {}).get(col)) for r in row_order]
        else:
            result[name] = [cells.get((r, col), "–") for r in row_order]
    return pd.DataFrame(result, index=pd.Index(row_order, name=" · ".join(index) or None))


def _label(frame: pd.DataFrame, keys: list[str], i: int) -> str:
    return " · ".join(str(frame[k].iloc[i]) for k in keys)


def _appearance_order(rows: pd.DataFrame, keys: list[str]) -> list[str]:
    return list(dict.fromkeys(_label(rows, keys, i) for i in range(len(rows)))) if keys else []


def _natural(key: str) -> tuple:
    """Numbers ascending, then text (``"all"`` after the label counts)."""
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)


def _text(value) -> str:
    """A published value as papers print them: floats with 3 decimals (0.850, not 0.85)."""
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_summary(spec: dict, cells: list[Cell], out: str | Path) -> Path:
    """Write ``out/results.csv``, ``out/results.md`` and (with ``n_labelled``) the plot."""
    out = Path(out)
    rows = collect_results(cells, out)
    statuses = [(read_record(out / c.id) or {}).get("status", "pending") for c in cells]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    lines = [
        f"# Grid results: {spec['notebook']}",
        "",
        f"Grid file: `{spec.get('source', '-')}`; {len(cells)} cells ({counts}).",
        "",
    ]
    if rows.empty:
        lines.append("No finished cells yet.")
    else:
        atomic_write_text(out / "results.csv", rows.to_csv(index=False))
        table_spec = {**DEFAULT_TABLE, **(spec.get("table") or {})}
        table = grid_table(rows, table_spec, spec.get("paper"))
        lines += [
            f"**{table_spec['value']}**: mean ± std over seeds, folds and grid cells "
            f"({len(rows)} rows).",
            "",
            table.to_markdown(),
            "",
        ]
        if spec.get("paper"):
            lines += [f"Published values: {spec['paper']['source']} (– where it gives none).", ""]
        if _plot(rows, table_spec, out / "dice_vs_labels.png"):
            lines.append("![Dice vs labels](dice_vs_labels.png)")
    return atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


def _plot(rows: pd.DataFrame, table: dict, path: Path) -> bool:
    """Dice against the label budget, one series per row label; False when rows cannot say."""
    if "n_labelled" not in rows.columns:
        return False
    from medcl_lite import viz

    hue = table["index"][0] if table["index"] else None
    try:
        fig = viz.plot_dice_vs_labels(rows, y=table["value"], hue=hue, title=table["value"])
    except ValueError:  # e.g. only "all" budgets: nothing to put on a log axis
        return False
    fig.savefig(path, dpi=120)
    viz.plt.close(fig)
    return True
