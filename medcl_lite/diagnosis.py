"""Why does pretraining help, or not? One factor changed at a time, each paired against random init.

A chapter's headline compares a pretrained encoder with random initialisation under one
fine-tuning recipe. When the pretrained encoder loses (or ties), several explanations compete, and
each can be measured by changing one thing and keeping the rest:

====================== ==============================================================================
factor                 what the ablation changes
====================== ==============================================================================
fine-tuning LR         the learning rate (the papers fine-tune at 1e-4 / 5e-5, the teaching sizes 1e-3)
fine-tuning length     the number of fine-tuning steps
frozen vs full         only the decoder learns (``encoder_lr_scale=0``), the encoder learns slower, or
                       it waits for the first half of the steps (``frozen_encoder_steps``, LP-FT)
BatchNorm statistics   the pretrained running statistics reset (mean 0, variance 1), kept frozen
                       while the weights learn (``encoder_bn="frozen"``), or re-estimated at test time
                       on each site's own images (``test_bn="per_site"``, AdaBN)
encoder-only transfer  only the first stages of the pretrained encoder are kept, the rest start random
pretraining length     an encoder from a shorter pretraining run
augmentation mismatch  an encoder pretrained without the views' crops (what fine-tuning never sees), or
                       with views that also vary what tells the scanners apart (noise, blur, sharpening)
label-budget ceiling   all labelled images instead of the smallest budget (how much room there is)
====================== ==============================================================================

:func:`run_diagnosis` runs every ablation on the same labelled images, seeds and validation/test
rows as the chapter's grid (:func:`medcl_lite.experiment.run_finetune_grid`), random init and the
pretrained encoder alike (an ablation that changes the encoder changes the pretrained side only),
and :func:`diagnosis_table` reads each as a paired comparison (:mod:`medcl_lite.paired`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from medcl_lite.data.datasets import Fold, Protocol
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.experiment import by_site, run_finetune_grid
from medcl_lite.paired import SMOKE_NOTE, paired_comparison, verdict_text
from medcl_lite.train import FinetuneConfig

__all__ = [
    "Ablation",
    "default_ablations",
    "diagnosis_table",
    "keep_encoder_stages",
    "reading",
    "reset_batchnorm_statistics",
    "run_diagnosis",
    "site_comparison",
    "site_means",
    "site_reading",
    "site_table",
]

#: ResNet encoder (smp) parameter prefixes of stages 1..5 (strides 2, 4, 8, 16, 32).
RESNET_STAGES = {1: ("conv1.", "bn1."), 2: ("layer1.",), 3: ("layer2.",), 4: ("layer3.",), 5: ("layer4.",)}


@dataclass(frozen=True)
class Ablation:
    """One change to the reference recipe.

    Attributes:
        factor: the explanation it tests (a row of the module table).
        finetune: :class:`~medcl_lite.train.FinetuneConfig` fields that differ from the reference.
        encoder: which pretrained encoder (a key of ``pretrained`` in :func:`run_diagnosis`);
            "" = the reference one.
        transform: ``state -> state`` applied to the pretrained encoder (BatchNorm reset, stages).
        label_count: a different label budget (the ceiling); None = the reference budget.
    """

    factor: str
    finetune: dict = field(default_factory=dict)
    encoder: str = ""
    transform: Callable[[dict], dict] | None = None
    label_count: int | str | None = None


def reset_batchnorm_statistics(state: dict) -> dict:
    """A copy of an encoder ``state_dict`` whose BatchNorm running statistics are those of a fresh
    layer (``running_mean`` 0, ``running_var`` 1, no batches tracked); the weights are kept."""
    out = {}
    for key, value in state.items():
        if key.endswith("running_mean"):
            value = torch.zeros_like(value)
        elif key.endswith("running_var"):
            value = torch.ones_like(value)
        elif key.endswith("num_batches_tracked"):
            value = torch.zeros_like(value)
        out[key] = value.clone()
    return out


def keep_encoder_stages(state: dict, stages: int, random_state: dict) -> dict:
    """The pretrained ``state`` for encoder stages ``1..stages``, ``random_state`` for the deeper
    ones (a ResNet encoder of smp: stage 1 = ``conv1``/``bn1``, 2..5 = ``layer1..layer4``).
    ``stages=5`` keeps everything, ``0`` nothing."""
    if not 0 <= stages <= 5:
        raise ValueError(f"keep_encoder_stages: stages={stages} must be in 0..5 (ResNet stages 1..5)")
    if set(state) != set(random_state):
        raise ValueError("keep_encoder_stages: state and random_state have different keys (not the same encoder)")
    prefixes = tuple(p for s in range(1, stages + 1) for p in RESNET_STAGES[s])
    known = tuple(p for group in RESNET_STAGES.values() for p in group)
    stray = [k for k in state if not k.startswith(known)]
    if stray:
        raise ValueError(f"keep_encoder_stages: supports ResNet encoders (conv1, bn1, layer1..4); unknown keys {stray[:3]}")
    return {k: (state[k] if k.startswith(prefixes) else random_state[k]).clone() for k in state}


def default_ablations(base: FinetuneConfig, random_encoder: dict, short_pretraining: str = "",
                      no_crop_pretraining: str = "", scanner_view_pretraining: str = "",
                      longer: int = 5) -> dict[str, Ablation]:  # fmt: skip
    """The module table's ablations around ``base`` (the chapter's fine-tuning recipe).

    ``random_encoder``: a random encoder ``state_dict`` whose deeper stages replace the pretrained
    ones in the encoder-only ablation. ``short_pretraining`` / ``no_crop_pretraining`` /
    ``scanner_view_pretraining``: keys of the pretrained encoders of a shorter run, of a run without
    crops and of a run whose views also vary what tells the scanners apart (noise, blur, edge
    enhancement: the ``quickstart_scanners`` preset); "" leaves that ablation out. ``longer``: how
    many times the reference's fine-tuning steps the "length" ablations train.
    """
    if longer < 2:
        raise ValueError(f"default_ablations: longer={longer} must be >= 2 (times the reference's steps)")
    longer = longer * base.max_steps
    every = max(1, longer // 6)
    ablations = {
        "reference": Ablation("the recipe itself"),
        "lr 1e-4 (the papers')": Ablation("fine-tuning LR", {"lr": 1e-4}),
        f"{longer} steps": Ablation("fine-tuning length", {"max_steps": longer, "eval_every": every}),
        f"{longer} steps, lr 1e-4": Ablation("fine-tuning LR and length", {"max_steps": longer, "eval_every": every,
                                                                          "lr": 1e-4}),  # fmt: skip
        "frozen encoder": Ablation("frozen vs full", {"encoder_lr_scale": 0.0}),
        "encoder lr x0.1": Ablation("frozen vs full", {"encoder_lr_scale": 0.1}),
        "decoder first, then all (LP-FT)": Ablation("frozen vs full", {"frozen_encoder_steps": base.max_steps // 2}),
        "frozen, BN statistics reset": Ablation("BatchNorm statistics", {"encoder_lr_scale": 0.0},
                                                transform=reset_batchnorm_statistics),  # fmt: skip
        "BN statistics reset": Ablation("BatchNorm statistics", transform=reset_batchnorm_statistics),
        "encoder BN frozen": Ablation("BatchNorm statistics", {"encoder_bn": "frozen"}),
        "BN statistics per test site": Ablation("BatchNorm statistics", {"test_bn": "per_site"}),
        "stages 1-2 only": Ablation("encoder-only transfer",
                                    transform=lambda s: keep_encoder_stages(s, 2, random_encoder)),  # fmt: skip
        "all labels": Ablation("label-budget ceiling", label_count="all"),
    }
    if short_pretraining:
        ablations["shorter pretraining"] = Ablation("pretraining length", encoder=short_pretraining)
    if no_crop_pretraining:
        ablations["pretrained without crops"] = Ablation("augmentation mismatch", encoder=no_crop_pretraining)
    if scanner_view_pretraining:
        ablations["pretrained with scanner views"] = Ablation("augmentation mismatch", encoder=scanner_view_pretraining)
    return ablations


def _on_encoder(transform: Callable[[dict], dict], state: dict) -> dict:
    """``transform`` applied to the encoder of a transfer state: an encoder ``state_dict``, or
    ``{"encoder": ..., "decoder": ...}`` when pretraining also trained the decoder (the decoder kept)."""
    if set(state) == {"encoder", "decoder"}:
        return {"encoder": transform(state["encoder"]), "decoder": state["decoder"]}
    return transform(state)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_diagnosis(
    data: SliceSet,
    protocol: Protocol | Sequence[Fold],
    pretrained: dict[str, dict],
    base: FinetuneConfig,
    ablations: dict[str, Ablation],
    label_count: int | str,
    seeds: Sequence[int],
    method: str = "pretrained",
    out_dir: str | Path | None = None,
    progress: bool = True,
    unit: str = "images",
) -> pd.DataFrame:
    """Every ablation as a small grid: random init and ``method`` at one label budget over ``seeds``.

    Args:
        pretrained: name -> encoder ``state_dict`` (or ``{"encoder": ..., "decoder": ...}`` when
            pretraining trained the decoder too; transforms then change the encoder only); the first
            is the reference encoder, the others are what ablations name in ``Ablation.encoder``.
        base: the reference fine-tuning recipe; label_count: the reference budget.
        method: the name the pretrained rows get (``init`` column).
        out_dir: one folder per ablation; finished runs are reused.
    Returns:
        The fine-tuning rows with ``ablation`` and ``factor`` columns.
    """
    if not pretrained:
        raise ValueError("run_diagnosis: pretrained is empty; give at least the reference encoder")
    reference = next(iter(pretrained))
    frames = []
    for name, ablation in ablations.items():
        if ablation.encoder and ablation.encoder not in pretrained:
            raise ValueError(f"run_diagnosis: ablation {name!r} names encoder {ablation.encoder!r}; have {list(pretrained)}")
        state = pretrained[ablation.encoder or reference]
        if ablation.transform is not None:
            state = _on_encoder(ablation.transform, state)
        cfg = replace(base, **ablation.finetune)
        budget = label_count if ablation.label_count is None else ablation.label_count
        folder = Path(out_dir) / _slug(name) if out_dir else None
        rows = run_finetune_grid(data, protocol, {"random init": None, method: state}, [budget], seeds, cfg, folder,
                                 progress, unit)  # fmt: skip
        frames.append(rows.assign(ablation=name, factor=ablation.factor))
    return pd.concat(frames, ignore_index=True)


def diagnosis_table(rows: pd.DataFrame, value: str = "test_dice", baseline: str = "random init") -> pd.DataFrame:
    """One line per ablation: its factor, the label budget, the mean ``value`` of random init and of
    the pretrained encoder, and their paired difference with its 95 % interval and verdict."""
    comparison = paired_comparison(rows, groups=["ablation", "factor", "n_labelled"], value=value, baseline=baseline)
    means = rows.pivot_table(index="ablation", columns="init", values=value, aggfunc="mean", sort=False)
    comparison.insert(3, baseline, comparison["ablation"].map(means[baseline]))
    comparison.insert(4, "pretrained", [means.loc[a, i] for a, i in zip(comparison.ablation, comparison.init, strict=True)])
    return comparison.drop(columns="init")


def site_comparison(rows: pd.DataFrame, value: str = "test_dice", baseline: str = "random init") -> pd.DataFrame:
    """:func:`medcl_lite.paired.paired_comparison` of :func:`run_diagnosis`'s rows per site: one
    row per (site, ablation), pretrained minus ``baseline`` over the seeds, on that site's images."""
    return paired_comparison(by_site(rows, value), groups=["site", "ablation", "n_labelled"], value=value,
                             baseline=baseline)  # fmt: skip


def site_table(rows: pd.DataFrame, value: str = "test_dice", baseline: str = "random init") -> pd.DataFrame:
    """The diagnosis per site: one line per ablation (in their order), one column per site, each cell
    the paired difference with its 95 % interval and verdict, e.g. ``"+0.061 [+0.007, +0.115] better"``.

    Reads the per-site scores of :func:`run_diagnosis`'s rows (``<value>_site_<site>``,
    :func:`medcl_lite.experiment.by_site`): where an ablation helps the labelled site and hurts another,
    the mean over sites of :func:`diagnosis_table` shows neither."""
    comparison = site_comparison(rows, value, baseline)
    comparison["cell"] = [f"{r.mean_diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] {r.verdict}" if r.n_pairs > 1
                          else f"{r.mean_diff:+.3f} ({r.verdict})" for r in comparison.itertuples()]  # fmt: skip
    table = comparison.pivot(index="ablation", columns="site", values="cell")
    table.columns = [f"site {c}" for c in table.columns]
    return table.loc[list(dict.fromkeys(rows["ablation"]))].rename_axis(None)


def site_means(rows: pd.DataFrame, ablations: Sequence[str], value: str = "test_dice") -> pd.DataFrame:
    """Mean ``value`` per site of :func:`run_diagnosis`'s rows: one line per (ablation, init) of
    ``ablations`` (in that order), one column per site: what an ablation does to each
    initialisation's score on each scanner, beside what it does to their difference
    (:func:`site_table`)."""
    missing = [a for a in ablations if a not in set(rows["ablation"])]
    if missing:
        raise ValueError(f"site_means: no rows for ablations {missing}; have {list(dict.fromkeys(rows['ablation']))}")
    long = by_site(rows[rows["ablation"].isin(ablations)], value)
    table = long.pivot_table(index=["ablation", "init"], columns="site", values=value, aggfunc="mean", sort=False)
    table.columns = [f"site {c}" for c in table.columns]
    order = {a: i for i, a in enumerate(ablations)}
    return table.sort_index(level="ablation", key=lambda level: level.map(order), sort_remaining=False)


def site_reading(rows: pd.DataFrame, ablation: str, reference: str = "reference", value: str = "test_dice",
                 baseline: str = "random init", smoke: bool = False) -> str:  # fmt: skip
    """What one ablation does per site (Markdown): each site's mean ``value`` per initialisation
    under ``reference`` and under ``ablation`` (:func:`site_means`), then the paired difference
    per site under each (the cells of :func:`site_table`). ``smoke``: differences without verdicts."""
    means = site_means(rows, [reference, ablation], value)
    lines = []
    for site in means.columns:
        moves = [f"{init} {means.loc[(reference, init), site]:.3f} → {means.loc[(ablation, init), site]:.3f}"
                 for init in dict.fromkeys(rows["init"])]  # fmt: skip
        lines.append(f"- {site}: " + ", ".join(moves))
    gaps = site_comparison(rows[rows["ablation"].isin([reference, ablation])], value, baseline)
    return "\n".join(lines) + "\n\n" + verdict_text(gaps, ["site", "ablation"], baseline=baseline, smoke=smoke,
                                                    label=lambda r: f"{r.ablation}, site {r.site}")  # fmt: skip


def reading(table: pd.DataFrame, baseline: str = "random init", reference: str = "reference",
            ceiling: str = "all labels", smoke: bool = False) -> str:  # fmt: skip
    """The computed reading of :func:`diagnosis_table` (Markdown): the room the smallest budget
    leaves (``ceiling`` minus ``reference``, both random init), each ablation's paired difference
    and how far it moves from the reference recipe's, then which ablations (if any) make the
    pretrained encoder win with an interval that excludes 0. ``smoke`` (a smoke-size run): the
    numbers under a line that says they are noise, and no conclusion."""
    rows = table.set_index("ablation")
    if reference not in rows.index:
        raise ValueError(f"reading: the table has no {reference!r} row; rows are {list(rows.index)}")
    ref = rows.loc[reference]
    lines = [SMOKE_NOTE] if smoke else []
    verdict = {name: "smoke run" if smoke else r.verdict for name, r in rows.iterrows()}
    if ceiling in rows.index:
        room = rows.loc[ceiling, baseline] - ref[baseline]
        lines.append(f"- **Room**: {baseline} reaches {ref[baseline]:.3f} Dice at {ref.n_labelled} labelled and "
                     f"{rows.loc[ceiling, baseline]:.3f} with {ceiling}: {room:+.3f} left to gain.")  # fmt: skip
    lines.append(f"- **{reference}**: pretrained {ref.mean_diff:+.3f} vs {baseline} "
                 f"[{ref.ci_low:+.3f}, {ref.ci_high:+.3f}], {verdict[reference]}.")  # fmt: skip
    for name, row in rows.drop(index=[reference]).iterrows():
        moved = row.mean_diff - ref.mean_diff
        lines.append(f"- {name} ({row.factor}): {row.mean_diff:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}], "
                     f"{verdict[name]}; {moved:+.3f} against the reference recipe's difference.")  # fmt: skip
    wins = [n for n, r in rows.iterrows() if r.verdict == "better"]
    if smoke:
        return "\n".join(lines)
    if wins:
        lines.append(f"\nThe pretrained encoder beats {baseline} (95 % interval above 0) under: {', '.join(wins)}.")
    else:
        best = rows.mean_diff.idxmax()
        lines.append(f"\nNo row shows the pretrained encoder above {baseline} with a 95 % interval above 0; the "
                     f"most favourable row is {best!r} ({rows.loc[best, 'mean_diff']:+.3f}).")  # fmt: skip
    return "\n".join(lines)
