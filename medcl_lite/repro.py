"""Reproductions from the command line: ``medcl reproduce`` (papermill) and ``medcl data``.

``medcl reproduce 00_quickstart -f notebooks/params/quickstart/cpu_demo.yaml`` executes the notebook
with the parameter file through papermill into ``runs/<name>/`` (executed notebook, parameters,
metrics, figures, ``results.md`` / ``results.csv``) and prints the results table. The notebook
resumes finished pieces of a crashed run (``resume``), so running the same command again
continues rather than starts over.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from medcl_lite.checkpoint import atomic_write_text

__all__ = ["check_params", "find_notebook", "load_params", "main", "reproduce"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_notebook(name: str) -> Path:
    """``00_quickstart`` / ``00_quickstart.ipynb`` / a path -> the ``.ipynb`` to execute."""
    candidates = [Path(name)]
    stem = Path(name).name.removesuffix(".ipynb").removesuffix(".py")
    for root in (Path.cwd() / "notebooks", REPO_ROOT / "notebooks"):
        candidates.append(root / f"{stem}.ipynb")
    for path in candidates:
        if path.suffix == ".ipynb" and path.is_file():
            return path.resolve()
    raise FileNotFoundError(
        f"notebook {name!r} not found (looked for {', '.join(str(c) for c in candidates[1:])})"
    )


def load_params(files: list[str] | None = None, overrides: list[tuple[str, str]] | None = None) -> dict:
    """Merge YAML parameter files (later wins), then ``-p KEY VALUE`` overrides (YAML-parsed)."""
    params: dict = {}
    for file in files or []:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"parameter file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"parameter file {path} must hold a mapping of name: value")
        params.update(loaded)
    for key, value in overrides or []:
        params[key] = yaml.safe_load(value)
    return params


def reproduce(
    notebook: str,
    params: dict,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    kernel: str | None = None,
) -> Path:
    """Execute ``notebook`` with ``params`` into ``runs_dir/name`` and return that folder."""
    import papermill

    source = find_notebook(notebook)
    params = dict(params)
    name = name or params.pop("name", None) or source.stem
    params.pop("name", None)
    check_params(source, params)
    out_dir = (Path(runs_dir) / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params["out_dir"] = str(out_dir)
    atomic_write_text(out_dir / "params.yaml", yaml.safe_dump(params, sort_keys=True))
    start = time.perf_counter()
    papermill.execute_notebook(
        str(source),
        str(out_dir / source.name),
        parameters=params,
        kernel_name=kernel,
        progress_bar=progress,
        cwd=str(out_dir),
    )
    atomic_write_text(out_dir / "wall_time.txt", f"{time.perf_counter() - start:.1f} s\n")
    return out_dir


def check_params(notebook: Path, params: dict) -> None:
    """Fail before running when a parameter is not in the notebook's ``parameters`` cell."""
    import difflib

    from papermill.inspection import inspect_notebook

    known = set(inspect_notebook(str(notebook)))
    if not known:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters'")
    for key in params:
        if key not in known and key != "out_dir":
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{notebook.name}: unknown parameter {key!r}{hint}; it has {sorted(known)}")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    params = load_params(args.file, args.param)
    out_dir = reproduce(args.notebook, params, args.name, args.runs_dir, not args.no_progress, args.kernel)
    table = out_dir / "results.md"
    print(f"\nrun folder: {out_dir}  ({(out_dir / 'wall_time.txt').read_text().strip()})")
    if table.is_file():
        print(table.read_text())
    else:
        print("(this notebook wrote no results.md)")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from medcl_lite.data import phantoms

    if args.action == "list":
        print("built-in phantoms (no download):")
        for kind, doc in phantoms.PHANTOM_KINDS.items():
            print(f"  {kind:<10} {doc}")
        print("write them in the prepared format: medcl data phantoms --out DIR")
        return 0
    written = phantoms.write_phantoms(args.out, kind=args.kind, size=args.size, seed=args.seed, overwrite=args.overwrite)
    for path in written:
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run a notebook with parameter files through papermill")
    rep.add_argument("notebook", help="e.g. 00_quickstart (looked up in notebooks/) or a path to an .ipynb")
    rep.add_argument("-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)")
    rep.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="override one parameter")
    rep.add_argument("--name", help="run name: the folder under --runs-dir (default: the notebook name)")
    rep.add_argument("--runs-dir", default="runs", help="where run folders go (default: ./runs)")
    rep.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's)")
    rep.add_argument("--no-progress", action="store_true", help="no papermill progress bar")
    rep.set_defaults(func=_cmd_reproduce)

    data = sub.add_parser("data", help="datasets: list them, write the built-in phantoms")
    data.add_argument("action", choices=["list", "phantoms"])
    data.add_argument("--out", default="data", help="output folder for `phantoms`")
    data.add_argument("--kind", default="all", help="xray | cardiac | all")
    data.add_argument("--size", type=int, default=128)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--overwrite", action="store_true")
    data.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"medcl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
