"""Reproductions from the command line: ``medcl reproduce`` (papermill) and ``medcl data``.

``medcl reproduce 00_quickstart -f notebooks/params/quickstart/cpu_demo.yaml`` executes the notebook
with the parameter file through papermill into ``runs/<name>/`` (executed notebook, parameters,
metrics, figures, ``results.md`` / ``results.csv``) and prints the results table. The notebook
resumes finished pieces of a crashed run (``resume``), so running the same command again
continues rather than starts over. ``medcl reproduce --grid FILE --out DIR [--dry-run] [--jobs N]``
runs every cell of a grid of parameters and writes one results table (:mod:`medcl_lite.grid`).
Every kernel starts with passive OpenMP waiting; ``--threads N`` gives a run (or each grid worker)
N CPU threads, and ``--jobs N`` splits the cores between the workers (:mod:`medcl_lite.threads`).
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import shlex
import sys
import time
from pathlib import Path

import yaml

from medcl_lite.checkpoint import atomic_write_text
from medcl_lite.threads import child_env, updated_environ
from medcl_lite.utils import course_dir

__all__ = ["check_params", "find_notebook", "fold_reproduction", "load_params", "main", "reproduce", "reproduction_keys"]

#: Tag of a chapter's cell holding ``REPRODUCTION = dict(...)``: the settings of a paper
#: reproduction that its parameters cell leaves out (``config.reproduction_settings``).
REPRODUCTION_TAG = "reproduction"


def find_notebook(name: str) -> Path:
    """``00_quickstart`` / ``00_quickstart.ipynb`` / a path -> the ``.ipynb`` to execute."""
    candidates = [Path(name)]
    stem = Path(name).name.removesuffix(".ipynb").removesuffix(".py")
    for root in (Path.cwd() / "notebooks", course_dir()):
        candidates.append(root / f"{stem}.ipynb")
    for path in candidates:
        if path.suffix == ".ipynb" and path.is_file():
            return path.resolve()
    raise FileNotFoundError(
        f"notebook {name!r} not found (looked for {', '.join(str(c) for c in candidates[1:])})"
    )


def read_yaml_mapping(path: str | Path, kind: str, shape: str) -> dict:
    """A YAML file holding a mapping; clear errors naming ``kind`` (e.g. "grid file") otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} not found: {path}")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{kind} {path} must hold a mapping {shape}")
    return loaded


def load_params(
    files: list[str] | None = None, overrides: list[tuple[str, str]] | None = None
) -> dict:
    """Merge YAML parameter files (later wins), then ``-p KEY VALUE`` overrides (YAML-parsed)."""
    params: dict = {}
    for file in files or []:
        params.update(read_yaml_mapping(file, "parameter file", "of name: value"))
    for key, value in overrides or []:
        params[key] = yaml.safe_load(value)
    return {key: _numbers(value) for key, value in params.items()}


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value):
    """``value`` with YAML 1.1's missed floats (``1e-4``: a string to PyYAML) read as floats."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def reproduce(
    notebook: str,
    params: dict,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    kernel: str | None = None,
    threads: int | None = None,
) -> Path:
    """Execute ``notebook`` with ``params`` into ``runs_dir/name`` and return that folder.

    The kernel starts with passive OpenMP waiting and, with ``threads``, that many CPU threads
    (``$MEDCL_THREADS``, which the notebook's ``medcl_lite.set_threads()`` obeys); see
    :mod:`medcl_lite.threads`. A line per section of the notebook tells where the run is
    (:mod:`medcl_lite.execution`), also with ``progress`` (papermill's bar) off.
    """
    from medcl_lite.execution import execute

    source = find_notebook(notebook)
    params = dict(params)
    name = name or params.pop("name", None) or source.stem
    params.pop("name", None)
    params = fold_reproduction(source, check_params(source, params))
    out_dir = (Path(runs_dir) / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params["out_dir"] = str(out_dir)
    atomic_write_text(out_dir / "params.yaml", yaml.safe_dump(params, sort_keys=True))
    start = time.perf_counter()
    with updated_environ(child_env(threads)):  # the kernel inherits this process's environment
        execute(source, out_dir / source.name, params, label=name, kernel=kernel,
                progress=progress, cwd=str(out_dir))  # fmt: skip
    atomic_write_text(out_dir / "wall_time.txt", f"{time.perf_counter() - start:.1f} s\n")
    return out_dir


def reproduction_keys(notebook: Path) -> set[str]:
    """Names of the settings in ``notebook``'s cell tagged ``reproduction`` (the keys of its
    ``REPRODUCTION = dict(...)``), read without running it; empty when it has none."""
    return set(reproduction_defaults(notebook))


def reproduction_defaults(notebook: Path) -> dict:
    """The settings of ``notebook``'s ``reproduction`` cell with their defaults, read without
    running it (a default that is not a literal reads as None: any type)."""
    import nbformat

    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if REPRODUCTION_TAG not in cell.metadata.get("tags", []):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "REPRODUCTION" for t in node.targets
            ):
                value = node.value
                if isinstance(value, ast.Call):
                    return {k.arg: _literal(k.value) for k in value.keywords if k.arg}
                if isinstance(value, ast.Dict):
                    return {k.value: _literal(v) for k, v in zip(value.keys, value.values, strict=True)
                            if isinstance(k, ast.Constant)}  # fmt: skip
        raise ValueError(f"{notebook.name}: its {REPRODUCTION_TAG!r} cell assigns no REPRODUCTION = dict(...)")
    return {}


def parameter_defaults(notebook: Path) -> dict:
    """The defaults of ``notebook``'s ``parameters`` cell as Python values (papermill's
    inspection; a default that is not a literal reads as None: any type)."""
    from papermill.inspection import inspect_notebook

    found = inspect_notebook(str(notebook))
    if not found:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters'")
    return {name: _literal(spec["default"]) for name, spec in found.items()}


@functools.lru_cache(maxsize=16)
def _defaults(notebook: str, mtime_ns: int) -> tuple[dict, dict]:
    """(parameter defaults, reproduction defaults) of a notebook file, read once per version
    (a grid checks every cell against them)."""
    return parameter_defaults(Path(notebook)), reproduction_defaults(Path(notebook))


def _literal(node_or_text):
    try:
        return ast.literal_eval(node_or_text)
    except (ValueError, SyntaxError, TypeError):
        return None


def fold_reproduction(notebook: Path, params: dict) -> dict:
    """``params`` with every reproduction setting given by name (``ft_lr: 5e-5``, as parameter
    files and ``-p`` write them) moved into the notebook's ``reproduction`` mapping, which the
    notebook's parameters cell declares; a setting given both ways must agree."""
    keys = reproduction_keys(notebook)
    flat = {k: v for k, v in params.items() if k in keys}
    if not flat:
        return dict(params)
    folded = {k: v for k, v in params.items() if k not in keys}
    nested = dict(folded.get("reproduction") or {})
    for key, value in flat.items():
        if key in nested and nested[key] != value:
            raise ValueError(
                f"{notebook.name}: {key!r} is given twice, {value!r} by name and {nested[key]!r} in 'reproduction'"
            )
        nested[key] = value
    folded["reproduction"] = nested
    return folded


def check_params(notebook: Path, params: dict) -> dict:
    """``params`` checked before the kernel starts, and returned coerced where lossless.

    Each must be in the notebook's ``parameters`` cell or one of its reproduction settings (by
    name, or in the ``reproduction`` mapping), with the type of its default there
    (:func:`medcl_lite.config.typed_like_defaults`: ``seed`` an int, ``ft_lr`` a float, an int
    standing for a float, a None default any type). The error names the parameter, the expected
    type and the value.
    """
    import difflib

    from medcl_lite.config import typed_like_defaults

    in_cell, settings = _defaults(str(notebook), Path(notebook).stat().st_mtime_ns)
    known = set(in_cell) | set(settings)
    for key in params:
        if key not in known and key != "out_dir":
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{notebook.name}: unknown parameter {key!r}{hint}; it has {sorted(known)}"
            )
    checked = dict(params)
    given = {k: v for k, v in params.items() if k in in_cell and k != "out_dir"}
    checked.update(typed_like_defaults(in_cell, given, notebook.name, kind="parameter"))
    by_name = {k: v for k, v in params.items() if k in settings and k not in in_cell}
    checked.update(typed_like_defaults(settings, by_name, notebook.name, kind="reproduction setting"))
    if settings and isinstance(checked.get("reproduction"), dict):
        checked["reproduction"] = typed_like_defaults(
            settings, checked["reproduction"], f"{notebook.name} reproduction", kind="setting"
        )
    return checked


def _cmd_reproduce(args: argparse.Namespace) -> int:
    if args.grid:
        return _cmd_grid(args)
    if args.notebook is None:
        raise ValueError("reproduce needs a notebook (e.g. 00_quickstart) or --grid FILE")
    if args.out or args.dry_run or args.jobs != 1:
        raise ValueError("--out, --dry-run and --jobs go with --grid FILE")
    params = load_params(args.file, args.param)
    if args.record:
        from medcl_lite.reference import current_commit

        commit = current_commit()  # the code this run executes, before anyone edits the checkout
    out_dir = reproduce(
        args.notebook,
        params,
        args.name,
        args.runs_dir,
        not args.no_progress,
        args.kernel,
        threads=args.threads or None,
    )
    if args.record:
        from medcl_lite import reference

        command = "medcl " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--record")
        dest = reference.record(out_dir, find_notebook(args.notebook).stem, command, threads=args.threads or None,
                                commit=commit)
        print(f"recorded as the reference run: {dest}")
    table = out_dir / "results.md"
    print(f"\nrun folder: {out_dir}  ({(out_dir / 'wall_time.txt').read_text().strip()})")
    if table.is_file():
        print(table.read_text())
    else:
        print("(this notebook wrote no results.md)")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    """``medcl reproduce --grid FILE --out DIR``: every cell of the grid, then its results table."""
    from medcl_lite import grid

    if args.notebook or args.name or args.file or args.param:
        raise ValueError("--grid takes its notebook and parameters from the grid file only")
    if args.record:
        raise ValueError("--record keeps one run as a chapter's reference; a grid has many")
    spec = grid.load_grid(args.grid)
    out = Path(
        args.out or Path(args.runs_dir) / f"{Path(args.grid).parent.name}-{Path(args.grid).stem}"
    )
    plan = grid.run_grid(
        spec, out, jobs=args.jobs, dry_run=args.dry_run, threads=args.threads or None
    )
    if args.dry_run:
        print(f"{len(plan)} runs; {sum(p['action'] != 'skip' for p in plan)} to run into {out}")
        return 0
    print(f"\ngrid folder: {out}")
    print((out / "results.md").read_text())
    failed = [p["id"] for p in plan if p["status"] == "failed"]
    if failed:
        print(f"failed cells (see their run.json): {failed}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from medcl_lite.pretrain_cli import main as pretrain_main

    return pretrain_main(["-f", args.file, *(["--threads", str(args.threads)] if args.threads else [])])


def _cmd_export(args: argparse.Namespace) -> int:
    """``medcl export RUN_DIR --out FILE``: a run's encoder as one file a plain smp model loads."""
    from medcl_lite.export import export_encoder, load_exported

    out = export_encoder(args.run_dir, args.out)  # errors go to main (exit code 2)
    meta = load_exported(out)["meta"]
    method = meta["method"] or "method unknown"
    print(f"wrote {out}: {meta['encoder_name']} encoder, in_channels={meta['in_channels']}, {method}")
    print(f'load it: model.encoder.load_state_dict(torch.load("{out}", weights_only=True)["encoder"])')
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from medcl_lite.data import phantoms

    if args.data_action == "phantoms":  # errors go to main (exit code 2), as before
        written = phantoms.write_phantoms(
            args.out, kind=args.kind, size=args.size, seed=args.seed, overwrite=args.overwrite
        )
        for path in written:
            print(f"wrote {path}")
        return 0
    try:
        return _data_catalog_action(args)
    except (OSError, ValueError, NotImplementedError) as error:  # user errors: no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


def _data_catalog_action(args: argparse.Namespace) -> int:
    from medcl_lite.data import catalog, phantoms

    if args.data_action == "list":
        print("built-in phantoms (no download):")
        for kind, doc in phantoms.PHANTOM_KINDS.items():
            print(f"  {kind:<10} {doc}")
        print("write them in the prepared format: medcl data phantoms --out DIR\n")
        print("real datasets (medcl data check NAME tells where to get one):")
        for row in catalog.list_datasets():
            if row["access"] != "built-in":
                print(f"  {row['name']:<11} {row['access']:<13} {row['title']}")
                print(f"  {'':<11} {'':<13} -> {row['get']}")
        return 0
    if args.data_action == "check":
        print(catalog.check(args.name, args.source))
        return 0
    if args.data_action == "download":
        path = catalog.download(
            args.name,
            home=args.home,
            size=args.size,
            overwrite=args.overwrite,
            allow_unpinned=args.allow_unpinned,
            progress=not args.no_progress,
        )
        print(f"prepared: {path}")
        return 0
    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"option {item!r} must be KEY=VALUE, e.g. max_patients=200")
        options[key.strip()] = yaml.safe_load(value)
    if args.classes:
        options["classes"] = args.classes  # the folder layout splits it at commas
    path = catalog.prepare(
        args.name,
        args.source,
        out=args.out,
        size=args.size,
        overwrite=args.overwrite,
        home=args.home,
        progress=not args.no_progress,
        **options,
    )
    for suffix, part in catalog.prepared_parts(path).items():
        print(f"prepared: {part}" if not suffix else f"prepared ({suffix[1:]}): {part}")
    return 0


def data_script(name: str, argv: list[str]) -> int:
    """What the thin ``data_scripts/prepare_<name>.py`` CLIs run: without arguments or with
    ``--check``, ``medcl data check name``; otherwise ``medcl data prepare name ARGS``."""
    if not argv or "--check" in argv:
        return main(["data", "check", name, *[a for a in argv if a != "--check"]])
    return main(["data", "prepare", name, *argv])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medcl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run a notebook with parameter files through papermill")
    rep.add_argument(
        "notebook",
        nargs="?",
        help="e.g. 00_quickstart (looked up in notebooks/) or a path to an .ipynb",
    )
    rep.add_argument(
        "-f", "--file", action="append", help="YAML parameter file (repeatable; later wins)"
    )
    rep.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        help="override one parameter",
    )
    rep.add_argument(
        "--name", help="run name: the folder under --runs-dir (default: the notebook name)"
    )
    rep.add_argument("--runs-dir", default="runs", help="where run folders go (default: ./runs)")
    rep.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's)")
    rep.add_argument("--no-progress", action="store_true", help="no papermill progress bar")
    rep.add_argument(
        "--record",
        action="store_true",
        help="keep this run as the chapter's reference run (notebooks/reference/<chapter>/)",
    )
    rep.add_argument(
        "--grid", help="grid file (notebooks/params/<paper>/grid.yaml): run every cell"
    )
    rep.add_argument("--out", help="grid folder (default: RUNS_DIR/<paper>-<grid name>)")
    rep.add_argument("--dry-run", action="store_true", help="list the grid's runs, run nothing")
    rep.add_argument(
        "--jobs", type=int, default=1, help="grid cells at once (one GPU each on CUDA)"
    )
    rep.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads of each run (default: $MEDCL_THREADS, else all cores; with --jobs N, "
        "cores // N each)",
    )
    rep.set_defaults(func=_cmd_reproduce)

    pre = sub.add_parser(
        "pretrain",
        help="pretrain from a YAML file (PretrainConfig fields + data); under torchrun on several processes",
    )
    pre.add_argument("-f", "--file", required=True, help="pretraining YAML file (see medcl_lite.pretrain_cli)")
    pre.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: $MEDCL_THREADS, else all cores)"
    )
    pre.set_defaults(func=_cmd_pretrain)

    exp = sub.add_parser(
        "export", help="write a pretraining run's encoder as one file a plain smp model loads"
    )
    exp.add_argument("run_dir", help="pretraining run folder (or its encoder.pt / checkpoint.pt)")
    exp.add_argument("--out", required=True, help="file to write, e.g. encoder.pt")
    exp.set_defaults(func=_cmd_export)

    data = sub.add_parser(
        "data", help="datasets: list, download, check, prepare; write the phantoms"
    )
    actions = data.add_subparsers(dest="data_action", required=True)
    actions.add_parser("list", help="built-in phantoms and the real datasets of the catalog")
    download = actions.add_parser("download", help="download and prepare a public dataset")
    download.add_argument("name", help="dataset name (see `medcl data list`)")
    download.add_argument(
        "--home", default=None, help="data folder (default: $MEDCL_DATA or the user cache)"
    )
    download.add_argument(
        "--size", type=int, default=256, help="image size in pixels (default 256)"
    )
    download.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="accept a file without a pinned sha256 (prints its hash to pin)",
    )
    download.add_argument(
        "--overwrite", action="store_true", help="prepare again over an existing folder"
    )
    download.add_argument("--no-progress", action="store_true")
    check = actions.add_parser(
        "check", help="where to get a dataset; with --source, check a folder"
    )
    check.add_argument("name", help="dataset name (see `medcl data list`)")
    check.add_argument("--source", default=None, help="folder holding the downloaded dataset")
    prep = actions.add_parser(
        "prepare", help="convert a downloaded dataset into the prepared format"
    )
    prep.add_argument("name", help="dataset name (see `medcl data list`)")
    prep.add_argument("--source", required=True, help="folder holding the downloaded dataset")
    prep.add_argument(
        "--out", default=None, help="output folder (default: HOME/prepared/NAME-SIZE)"
    )
    prep.add_argument("--home", default=None, help="data folder for the default --out")
    prep.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    prep.add_argument(
        "-o",
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="preparer option, e.g. max_patients=200 (repeatable)",
    )
    prep.add_argument(
        "--classes",
        default=None,
        help="class names, background first, comma-separated (e.g. background,liver; folder)",
    )
    prep.add_argument(
        "--overwrite", action="store_true", help="replace an existing prepared folder"
    )
    prep.add_argument("--no-progress", action="store_true")
    phantom = actions.add_parser(
        "phantoms", help="write the built-in phantoms in the prepared format"
    )
    phantom.add_argument("--out", default="data", help="output folder (default: ./data)")
    phantom.add_argument("--kind", default="all", help="xray | cardiac | abdomen | all")
    phantom.add_argument("--size", type=int, default=128)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--overwrite", action="store_true")
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
