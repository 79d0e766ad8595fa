"""Experiment grids: fine-tune every initialisation at every label count and seed, then tabulate.

The quickstart and every chapter compare initialisations (random, SimCLR, MoCo, the paper's
method) at several label budgets over several seeds. :func:`run_finetune_grid` runs that grid,
one folder per run under ``out_dir`` with its ``metrics.json``; a run whose folder already holds
metrics for the same configuration is loaded instead of trained, so a crashed batch job resumes
where it stopped. :func:`results_table` turns the rows into the "mean ± std" table of the papers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medcl_lite.config import changed_fields, to_dict
from medcl_lite.data.datasets import Fold, Protocol, choose_labelled_by
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.metrics import summarize
from medcl_lite.paired import paired_comparison, verdict_text
from medcl_lite.semi import SemiConfig, finetune_two_stream
from medcl_lite.train import FinetuneConfig, finetune

__all__ = [
    "EVALUATION_PROTOCOLS",
    "by_site",
    "GridRun",
    "grid_runs",
    "load_grid",
    "load_predictions",
    "ProtocolReport",
    "protocol_report",
    "protocol_table",
    "results_table",
    "run_finetune_grid",
    "run_evaluation_protocols",
    "run_probe_grid",
    "run_protocol_grid",
]

#: The evaluation protocols beside full fine-tuning (SimCLR Sec. 2.3, linear evaluation; MoCo Sec. 4.1), by name: the
#: :class:`~medcl_lite.train.FinetuneConfig` fields each changes, or ``None`` for the linear probe
#: (:func:`run_probe_grid`), which trains no network at all.
EVALUATION_PROTOCOLS: dict[str, dict | None] = {
    "full": {},  # the whole segmenter learns (what the papers report)
    "frozen encoder": {"encoder_lr_scale": 0.0},  # only the decoder learns: what the encoder holds
    "discriminative": {"encoder_lr_scale": 0.1},  # the encoder learns 10x slower than the decoder
    "linear probe": None,  # a 1x1 convolution on one frozen encoder stage
}


def _run_name(init: str, n_labelled: int | str, seed: int, fold: int | None = None) -> str:
    return f"{init}__n{n_labelled}__s{seed}" + ("" if fold is None else f"__f{fold}")


@dataclass(frozen=True)
class GridRun:
    """One run of a grid: an initialisation at a label budget, seed and fold, and its images."""

    init: str
    n_labelled: int | str
    seed: int
    fold: int | None  # None: one train/val/test protocol, no folds
    split: Protocol | Fold
    labelled: np.ndarray  # the labelled rows of this budget and seed

    @property
    def columns(self) -> dict:
        """The run's identity in a results row: ``init``, ``n_labelled`` (str), ``n_images``,
        ``seed`` (and ``fold``)."""
        row = {"init": self.init, "n_labelled": str(self.n_labelled), "n_images": len(self.labelled), "seed": self.seed}
        return row | ({} if self.fold is None else {"fold": self.fold})


def grid_runs(
    data: SliceSet,
    protocol: Protocol | Sequence[Fold],
    encoders: dict[str, dict | None],
    label_counts: Sequence[int | str],
    seeds: Sequence[int],
    unit: str = "images",
) -> list[GridRun]:
    """Every run of a grid, budgets outermost, then folds, seeds and initialisations: what
    fine-tuning (:func:`run_finetune_grid`) and the probe (:func:`run_probe_grid`) both iterate, so
    that their rows pair. A seed fixes the labelled subset, the same for every initialisation."""
    folds = list(protocol) if isinstance(protocol, Sequence) else [protocol]
    numbered = isinstance(protocol, Sequence)
    return [
        GridRun(init, n, seed, f if numbered else None, folds[f],
                choose_labelled_by(unit, data.meta, folds[f].label_pool, n, seed))  # fmt: skip
        for n in label_counts
        for f in range(len(folds))
        for seed in seeds
        for init in encoders
    ]


def run_finetune_grid(
    data: SliceSet,
    protocol: Protocol | Sequence[Fold],
    encoders: dict[str, dict | None],
    label_counts: Sequence[int | str],
    seeds: Sequence[int],
    base: FinetuneConfig | SemiConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    unit: str = "images",
) -> pd.DataFrame:
    """Fine-tune each initialisation at each label count and seed; one row of metrics per run.

    Args:
        data: the labelled SliceSet (all splits).
        protocol: index arrays (``label_pool``, ``val``, ``test``) from ``make_protocol``, or
            a list of :class:`~medcl_lite.data.datasets.Fold` (k-fold cross-validation: every
            run is repeated on each fold, and rows get a ``fold`` column).
        encoders: initialisation name -> encoder ``state_dict`` (None = random initialisation).
        label_counts: label budgets counted in ``unit`` (``"all"`` = the whole label pool).
        seeds: fine-tuning seeds; a seed fixes the labelled subset (nested across counts) and the
            decoder's initialisation, so every initialisation sees the same images.
        base: the fine-tuning settings shared by all runs (``init``/``seed``/``out_dir`` are set here).
            A :class:`~medcl_lite.semi.SemiConfig` runs IDEAL's two-stream semi-supervised
            fine-tuning instead: the rest of the fold's label pool is its unlabelled data.
        out_dir: folder for one sub-folder per run; finished runs found there are reused.
        unit: what a budget counts: ``"images"`` (CL-TCI), ``"volumes"`` or ``"patients"`` (PCL);
            see :data:`~medcl_lite.data.datasets.LABEL_UNITS`.
    Returns:
        DataFrame: ``init``, ``n_labelled`` (str), ``n_images`` (labelled slices), ``seed`` (and ``fold``) and the
        run's metrics.
    """
    rows = []
    runs = grid_runs(data, protocol, encoders, label_counts, seeds, unit)
    for run in tqdm(runs, desc="fine-tuning grid", disable=not progress, mininterval=2.0):
        init, seed, split, labelled = run.init, run.seed, run.split, run.labelled
        run_dir = Path(out_dir) / _run_name(init, run.n_labelled, seed, run.fold) if out_dir else None
        semi = isinstance(base, SemiConfig)
        starts = {} if semi else {"init": "random" if encoders[init] is None else "pretrained"}
        cfg = replace(base, seed=seed, out_dir=str(run_dir) if run_dir else "", progress=False, **starts)
        metrics = _load_finished(run_dir, cfg, len(labelled))
        if metrics is None and semi:
            unlabelled = np.setdiff1d(split.label_pool, labelled)
            result = finetune_two_stream(cfg, data, labelled, unlabelled, split.val, split.test, encoders[init])
            metrics = result.metrics
        elif metrics is None:
            result = finetune(cfg, data, labelled, split.val, split.test, encoder_state=encoders[init])
            metrics = result.metrics
        rows.append({**metrics, **run.columns})
    return pd.DataFrame(rows)


def run_protocol_grid(
    data: SliceSet,
    protocol: Protocol | Sequence[Fold],
    encoders: dict[str, dict | None],
    label_counts: Sequence[int | str],
    seeds: Sequence[int],
    base: FinetuneConfig,
    protocols: dict[str, dict],
    out_dir: str | Path | None = None,
    progress: bool = True,
    unit: str = "images",
) -> pd.DataFrame:
    """:func:`run_finetune_grid` once per evaluation protocol, each in ``out_dir/<protocol>``.

    ``protocols``: name -> :class:`~medcl_lite.train.FinetuneConfig` fields that differ from
    ``base``, e.g. ``{"full": {}, "frozen encoder": {"encoder_lr_scale": 0.0}, "discriminative":
    {"encoder_lr_scale": 0.1}}``. Every protocol sees the same labelled images, folds and seeds, so
    its rows pair with the others'. Returns the rows of all, with a ``protocol`` column.
    """
    if not protocols:
        raise ValueError("run_protocol_grid: protocols is empty; e.g. {'full': {}, 'frozen encoder': {'encoder_lr_scale': 0.0}}")
    frames = []
    for name, overrides in protocols.items():
        folder = Path(out_dir) / name if out_dir else None
        rows = run_finetune_grid(data, protocol, encoders, label_counts, seeds, replace(base, **overrides),
                                 folder, progress, unit)  # fmt: skip
        frames.append(rows.assign(protocol=name))
    return pd.concat(frames, ignore_index=True)


def run_probe_grid(
    data: SliceSet,
    protocol: Protocol | Sequence[Fold],
    encoders: dict[str, dict | None],
    label_counts: Sequence[int | str],
    seeds: Sequence[int],
    arch: str = "unet",
    encoder: str = "resnet18",
    stage: int = 3,
    steps: int = 300,
    lr: float = 1e-2,
    unit: str = "images",
) -> pd.DataFrame:
    """The linear probe (:func:`medcl_lite.probe.linear_probe`) of every encoder on the labelled
    images :func:`run_finetune_grid` would use (same budgets, seeds and folds), scored on each
    fold's test rows. A random encoder (None) is drawn with the run's seed. Rows: ``init``,
    ``n_labelled``, ``n_images``, ``seed`` (and ``fold``), ``test_dice``, ``protocol="linear probe"``."""
    from medcl_lite.probe import linear_probe

    rows = []
    for run in grid_runs(data, protocol, encoders, label_counts, seeds, unit):
        result = linear_probe(data, run.labelled, run.split.test, encoders[run.init], arch, encoder, stage, steps,
                              lr, run.seed)  # fmt: skip
        rows.append({**run.columns, "test_dice": result.dice, "protocol": "linear probe"})
    return pd.DataFrame(rows)


def run_evaluation_protocols(
    data: SliceSet,
    protocol: Protocol | Sequence[Fold],
    encoders: dict[str, dict | None],
    label_counts: Sequence[int | str],
    seeds: Sequence[int],
    base: FinetuneConfig,
    names: Sequence[str],
    out_dir: str | Path | None = None,
    progress: bool = True,
    unit: str = "images",
    probe_stage: int = 3,
) -> pd.DataFrame:
    """Every protocol of ``names`` (keys of :data:`EVALUATION_PROTOCOLS`) on the same grid: the
    fine-tuning protocols through :func:`run_protocol_grid` (``out_dir/<name>``), ``"linear probe"``
    through :func:`run_probe_grid` on ``base``'s architecture (stage ``probe_stage``). Rows carry a
    ``protocol`` column and pair across protocols (same budgets, folds, seeds and images)."""
    unknown = [n for n in names if n not in EVALUATION_PROTOCOLS]
    if unknown:
        raise ValueError(f"run_evaluation_protocols: unknown protocol(s) {unknown}; choose from {list(EVALUATION_PROTOCOLS)}")
    if not names:
        return pd.DataFrame()
    frames = []
    tuned = {n: EVALUATION_PROTOCOLS[n] for n in names if EVALUATION_PROTOCOLS[n] is not None}
    if tuned:
        frames.append(run_protocol_grid(data, protocol, encoders, label_counts, seeds, base, tuned, out_dir, progress,
                                        unit))  # fmt: skip
    if "linear probe" in names:
        frames.append(run_probe_grid(data, protocol, encoders, label_counts, seeds, base.arch, base.encoder,
                                     probe_stage, unit=unit))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _load_finished(run_dir: Path | None, cfg: FinetuneConfig, n_train: int) -> dict | None:
    """Metrics of a finished run with the same configuration and label count, else None (a field
    the saved configuration lacks, added to the package since, counts as its default)."""
    if run_dir is None or not (run_dir / "metrics.json").is_file() or not (run_dir / "config.json").is_file():
        return None
    saved = json.loads((run_dir / "config.json").read_text())
    if changed_fields(saved, cfg, {"progress"}) or set(saved) - set(to_dict(cfg)):  # or a field since removed
        return None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics if metrics.get("n_train") == n_train else None  # e.g. another label unit


def load_predictions(
    out_dir: str | Path, init: str, n_labelled: int | str, seed: int, fold: int | None = None, stream: str = ""
) -> np.ndarray:
    """Test-set label maps ``[N, H, W]`` saved by one run of :func:`run_finetune_grid`;
    ``stream`` (``"unet"`` or the second stream's name, e.g. ``"linknet"``): one stream of a
    two-stream run instead of their average."""
    path = Path(out_dir) / _run_name(init, n_labelled, seed, fold) / "test_pred.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no saved predictions for {init!r}, n={n_labelled}, seed={seed}: {path}")
    key = f"pred_{stream}" if stream else "pred"
    with np.load(path) as saved:
        if key not in saved:
            raise KeyError(f"{path} holds {sorted(saved.files)}, not {key!r} (stream={stream!r})")
        return saved[key]


def load_grid(out_dir: str | Path) -> pd.DataFrame:
    """Rows of every finished run under ``out_dir`` (what :func:`run_finetune_grid` wrote)."""
    rows = []
    for metrics_file in sorted(Path(out_dir).glob("*__n*__s*/metrics.json")):
        init, n, s, *fold = metrics_file.parent.name.split("__")
        metrics = json.loads(metrics_file.read_text())
        row = {**metrics, "init": init, "n_labelled": n[1:], "seed": int(s[1:])}
        rows.append(row | ({"fold": int(fold[0][1:])} if fold else {}))
    return pd.DataFrame(rows)


def results_table(rows: pd.DataFrame, value: str = "test_dice", label_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Pivot to the papers' table: one row per initialisation, one column per label count.

    Cells are ``"mean ± std"`` over seeds (and folds) of ``value`` (std with ddof=1). Columns keep the label
    counts' natural order (numbers ascending, then ``"all"``).
    """
    if rows.empty:
        raise ValueError("results_table: no finished runs to tabulate")
    summary = summarize(rows, ["init", "n_labelled"], value)
    order = list(label_order) if label_order else sorted(
        summary["n_labelled"].unique(), key=lambda n: (n == "all", float(n) if n != "all" else np.inf)
    )
    table = summary.pivot(index="init", columns="n_labelled", values="mean ± std")
    table = table[[c for c in order if c in table.columns]]
    table.columns = [f"{c} labelled" if c != "all" else "all labels" for c in table.columns]
    return _in_order_of(rows, ["init"], table)


def _in_order_of(rows: pd.DataFrame, index: Sequence[str], table: pd.DataFrame) -> pd.DataFrame:
    """``table``'s rows (keyed by the ``index`` columns, one or several) in the order ``rows``
    first shows their keys; keys the table lacks are skipped."""
    index = list(index)
    order = dict.fromkeys(map(tuple, rows[index].to_numpy().tolist()))
    keys = [key if len(index) > 1 else key[0] for key in order]
    return table.loc[[k for k in keys if k in table.index]]


def protocol_table(
    rows: pd.DataFrame,
    index: Sequence[str],
    columns: Sequence[str],
    protocols: dict[str, str],
    budget_name=lambda n: "all labels" if n == "all" else f"{n} labelled",
) -> pd.DataFrame:
    """The chapters' table: "mean ± std" of each protocol's metric, side by side.

    Args:
        rows: one row per run (``n_labelled`` plus the ``index`` and ``columns`` columns).
        index: row keys, e.g. ``["arch", "init"]``; kept in their order of appearance in ``rows``.
        columns: column keys before the label budget, e.g. ``["setting"]``.
        protocols: metric column -> its label, e.g. ``{"paper_test_dice_pooled": "paper: ...",
            "test_dice": "honest: ..."}``; every cell is summarised for each protocol.
        budget_name: ``n_labelled`` -> its column label.
    Returns:
        One row per ``index`` key (joined with " · "), one column per (columns, budget,
        protocol) joined with " · ", budgets in ascending order and "all" last.
    """
    index, columns = list(index), list(columns)
    parts = []
    for metric, label in protocols.items():
        summary = summarize(rows, [*index, *columns, "n_labelled"], metric)
        parts.append(summary.assign(protocol=label))
    summary = pd.concat(parts)
    budgets = sorted(summary["n_labelled"].unique(), key=lambda n: (n == "all", float(n) if n != "all" else 0.0))
    summary["labels"] = pd.Categorical(summary["n_labelled"].map(budget_name), [budget_name(b) for b in budgets])
    summary["protocol"] = pd.Categorical(summary["protocol"], list(protocols.values()))
    table = summary.pivot_table(index=index, columns=[*columns, "labels", "protocol"], values="mean ± std",
                                aggfunc="first", observed=True)
    table = _in_order_of(rows, index, table)
    table.columns = [" · ".join(str(c) for c in column) for column in table.columns]
    if len(index) > 1:
        table.index = [" · ".join(str(k) for k in key) for key in table.index]
    return table


@dataclass(frozen=True)
class ProtocolReport:
    """Every evaluation protocol at one budget, read as the chapters read it (:func:`protocol_report`).

    ``rows``: one row per run with a ``protocol`` column ("full" = the grid's own runs);
    ``means``: "mean ± std" of ``value`` per initialisation (rows, in their order) and protocol
    (columns, "full" first); ``comparison``: :func:`medcl_lite.paired.paired_comparison` of every
    initialisation against random init within each protocol.
    """

    rows: pd.DataFrame
    means: pd.DataFrame
    comparison: pd.DataFrame
    groups: tuple[str, ...]

    def text(self, label=None, smoke: bool = False) -> str:
        """The computed bullets (:func:`medcl_lite.paired.verdict_text`); ``label(row)`` names a group;
        ``smoke``: a smoke-size run, differences without verdicts."""
        return verdict_text(self.comparison, self.groups, label=label, smoke=smoke)


def protocol_report(
    full_rows: pd.DataFrame,
    protocol_rows: pd.DataFrame,
    groups: Sequence[str] = (),
    value: str = "test_dice",
    pair_on: Sequence[str] = ("fold", "seed"),
) -> ProtocolReport:
    """Join a grid's full fine-tuning runs of one budget with :func:`run_evaluation_protocols`'
    runs of that budget, and pair each protocol's pretrained runs with its own random-init runs.

    Args:
        full_rows: the grid's rows at the budget (one ``n_labelled``), any ``groups`` columns set.
        protocol_rows: what :func:`run_evaluation_protocols` returned for the same budget.
        groups: extra grouping columns before ``protocol`` and ``n_labelled`` (e.g. ``["setting"]``).
        value: the metric every protocol shares (the probe gives ``test_dice`` only).
        pair_on: the keys that pair runs (same fold and seed; ``["seed"]`` without folds).
    """
    budgets = set(map(str, full_rows["n_labelled"])) | set(map(str, protocol_rows.get("n_labelled", [])))
    if len(budgets) > 1:
        raise ValueError(f"protocol_report: one label budget at a time, got {sorted(budgets)}")
    rows = pd.concat([full_rows.assign(protocol="full"), protocol_rows], ignore_index=True)
    rows["n_labelled"] = rows["n_labelled"].astype(str)
    groups = (*groups, "protocol", "n_labelled")
    index = [g for g in groups if g not in ("protocol", "n_labelled")] + ["init"]
    summary = summarize(rows, [*index, "protocol"], value)
    means = summary.pivot(index=index, columns="protocol", values="mean ± std")
    means = _in_order_of(rows, index, means)[list(dict.fromkeys(rows["protocol"]))]
    means.columns.name = None
    comparison = paired_comparison(rows, groups=list(groups), value=value, pair_on=list(pair_on))
    return ProtocolReport(rows, means, comparison, groups)


def by_site(rows: pd.DataFrame, value: str = "test_dice") -> pd.DataFrame:
    """One row per run and site: the per-site scores (``<value>_site_<site>``, what the fine-tuning
    runs report when the data has a ``site`` column) under ``value``, with a ``site`` column; the
    other columns repeat. Pair them with ``paired_comparison(..., groups=[..., "site"])`` to ask
    where (on which scanner) a pretrained encoder helps. Sites a run did not score are left out."""
    prefix = f"{value}_site_"
    columns = [c for c in rows.columns if c.startswith(prefix)]
    if not columns:
        raise ValueError(f"by_site: no {prefix}<site> columns; the rows have {list(rows.columns)}")
    keep = [c for c in rows.columns if not c.startswith(f"{value}_") and c != value]
    long = rows[keep + columns].melt(id_vars=keep, value_vars=columns, var_name="site", value_name=value)
    long["site"] = long["site"].str.removeprefix(prefix)
    return long.dropna(subset=[value]).reset_index(drop=True)
