"""Benchmark: pretraining throughput (images/s) of every method, and of its data pipeline alone.

For each method (SimCLR, MoCo, CL-TCI, PCL, GCL, MoCo + LRC, IDEAL dense; ``METHODS``) at its
paper's resolution (docs/methods.md; capped by ``--max-size``) on its built-in phantom:

- ``step img/s``: images per second of the full step of ``medcl_lite.train.pretrain`` (data
  loading and augmentation of both views, forward, loss, backward, optimiser), = batch / median
  seconds per step from the history's ``seconds``, the first ``--warmup`` steps dropped;
- ``loader img/s``: the same DataLoader alone (``medcl_lite.train.pretrain_loader`` over a
  ``TwoViewDataset`` built as ``pretrain`` builds it), = batch / median seconds per batch, the
  first ``--warmup`` batches dropped. ``loader img/s >> step img/s``: data loading is not the
  bottleneck.

LRC's superpixels are computed before timing and passed to ``pretrain``. One "image" is one
slice, i.e. two views. Writes ``benchmarks/results/throughput_<device>_<size>_w<workers>...json``
and prints a markdown table.

    python benchmarks/bench_throughput.py --device cpu --max-size 128 --threads 2
    python benchmarks/bench_throughput.py --device cuda --amp --channels-last --workers 4
    python benchmarks/bench_throughput.py --size 32 --batch 4 --steps 2 --warmup 1 --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, batch_seconds, header, machine, write_result

from medcl_lite import get_device, seed_everything
from medcl_lite.config import to_dict
from medcl_lite.data.phantoms import make_abdominal_volumes, make_cardiac_volumes, make_chest_xrays
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.superpixels import FelzenszwalbParams, superpixels
from medcl_lite.threads import set_threads
from medcl_lite.train import PretrainConfig, pretrain, pretrain_loader

#: Phantom kind -> (maker of ``n_patients`` at ``size``, fewest images one patient has).
PHANTOMS: dict[str, tuple[Callable[[int, int], SliceSet], int]] = {
    "xray": (lambda n, size: make_chest_xrays(n_patients=n, n_times=4, size=size, seed=0), 4),
    "cardiac": (lambda n, size: make_cardiac_volumes(n_patients=n, size=size, seed=0), 10),
    "abdomen": (lambda n, size: make_abdominal_volumes(n_patients=n, size=size, seed=0), 16),
}


@dataclass(frozen=True)
class Method:
    """One benchmarked method: its ``PretrainConfig`` overrides, phantom and paper settings."""

    name: str
    phantom: str  # key of PHANTOMS
    paper_size: int  # image side in pixels
    paper_batch: int  # images per step
    overrides: dict = field(default_factory=dict)
    source: str = ""  # where paper_size / paper_batch come from


#: CLI id -> method. Sizes and batches from docs/methods.md and notebooks/params (cited in
#: ``source``).
METHODS: dict[str, Method] = {
    "simclr": Method(
        "SimCLR", "xray", 256, 32, {"augment": "cl_tci", "proj_dim": 512},
        "CL-TCI's SimCLR baseline: 256², batch 32 (docs/methods.md, 'CL-TCI')",
    ),
    "moco": Method(
        "MoCo", "xray", 256, 16, {"framework": "moco", "augment": "cl_tci", "proj_dim": 512},
        "CL-TCI's MoCo baseline: 256², batch 16, K = 3072 (docs/methods.md, 'CL-TCI')",
    ),
    "cl_tci": Method(
        "CL-TCI", "xray", 256, 16,
        {"framework": "moco", "pairing": "temporal", "sampler": "patient", "images_per_patient": 2,
         "augment": "cl_tci", "proj_dim": 512},
        "CL-TCI (MoCo + temporal, patient sampler k = 2): 256², batch 16 (docs/methods.md, 'CL-TCI')",
    ),
    "pcl": Method(
        "PCL", "cardiac", 352, 32,
        {"pairing": "positional", "threshold": 0.35, "augment": "pcl_elastic", "proj_dim": 512},
        "PCL on ACDC: 352², batch 32, θ = 0.35 (docs/methods.md, 'PCL'; CHD is 512²)",
    ),
    "gcl": Method(
        "GCL", "cardiac", 352, 32,
        {"pairing": "partition", "parts": 4, "augment": "pcl_elastic", "proj_dim": 512},
        "GCL baseline of PCL on ACDC: 352², batch 32, 4 partitions (docs/methods.md, 'PCL: GCL baseline')",
    ),
    "moco_lrc": Method(
        "MoCo + LRC", "abdomen", 256, 32,
        {"framework": "moco", "region_weight": 1.0, "augment": "quickstart",
         "sp_scale": 120.0, "sp_sigma": 0.5, "sp_min_size": 40},
        "LRC: resolution unpublished; ours 256², batch 32 (notebooks/params/lrc/btcv.yaml)",
    ),
    "ideal_dense": Method(
        "IDEAL dense", "cardiac", 352, 32,
        {"framework": "moco", "dense_weight": 1.0, "dense_level": "encoder", "dense_per_image": 64,
         "dense_temperature": 0.2, "dense_queue_size": 16384},
        "IDEAL on ACDC: resolution unpublished; ours 352², batch 32 (notebooks/params/ideal/acdc_semi.yaml)",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What one method's measurement runs: the method, image size, config and steps in the epoch."""

    key: str
    method: Method
    size: int
    config: PretrainConfig
    steps_total: int  # warm-up + timed steps: one epoch over ``n_images`` slices

    @property
    def n_images(self) -> int:
        """Slices of the phantom the run uses: ``batch x steps_total``."""
        return self.config.batch_size * self.steps_total


def image_size(method: Method, size: int | None, max_size: int | None) -> int:
    """``size`` when given, else the method's paper size capped by ``max_size`` (pixels)."""
    if size is not None:
        return size
    return method.paper_size if max_size is None else min(method.paper_size, max_size)


def make_config(
    method: Method, batch: int, args: argparse.Namespace, device: torch.device
) -> PretrainConfig:
    """The method's ``PretrainConfig`` for one timed epoch (no LR warm-up, no progress bar)."""
    return PretrainConfig(
        **method.overrides, batch_size=batch, max_epochs=1, warmup_epochs=0, progress=False,
        device=str(device), amp=bool(args.amp), channels_last=args.channels_last,
        num_workers=args.workers, seed=0,
    )  # fmt: skip


def make_phantom(kind: str, size: int, n_images: int) -> SliceSet:
    """The first ``n_images`` slices ``[n_images, size, size]`` of phantom ``kind`` (seed 0)."""
    maker, per_patient = PHANTOMS[kind]
    data = maker(math.ceil(n_images / per_patient), size)
    return data.subset(np.arange(n_images))


def region_maps(cfg: PretrainConfig, data: SliceSet) -> np.ndarray | None:
    """LRC's Felzenszwalb superpixels ``[N, H, W]`` of ``data`` (None without a region term)."""
    if cfg.region_weight <= 0:
        return None
    params = FelzenszwalbParams(scale=cfg.sp_scale, sigma=cfg.sp_sigma, min_size=cfg.sp_min_size)
    return superpixels(data, params, cache_dir=None)


def step_seconds(cfg: PretrainConfig, data: SliceSet, regions: np.ndarray | None) -> list[float]:
    """Seconds of each step of ``pretrain`` (one epoch over ``data``, data loading included)."""
    ends = pretrain(cfg, data, regions=regions).history["seconds"].to_numpy()
    return np.diff(np.concatenate([[0.0], ends])).tolist()


def loader_seconds(cfg: PretrainConfig, data: SliceSet, regions: np.ndarray | None) -> list[float]:
    """Seconds of each batch of the pretraining DataLoader alone (nothing on the device)."""
    loader = pretrain_loader(cfg, data, regions=regions)
    return batch_seconds(loader)


def images_per_s(seconds: list[float], batch: int, warmup: int) -> float:
    """``batch`` / median of ``seconds`` after the first ``warmup`` entries (images per second)."""
    timed = seconds[warmup:]
    if not timed:
        raise ValueError(f"no timed entries: {len(seconds)} measured, warmup={warmup}")
    return batch / statistics.median(timed)


def measure(plan: Plan, data: SliceSet, warmup: int, device: torch.device) -> dict:
    """One method's row: step and loader images/s, their raw seconds, and the setup times."""
    cfg = plan.config
    start = time.perf_counter()
    regions = region_maps(cfg, data)
    superpixel_s = time.perf_counter() - start
    steps = step_seconds(cfg, data, regions)
    batches = loader_seconds(cfg, data, regions)
    step_ips = images_per_s(steps, cfg.batch_size, warmup)
    loader_ips = images_per_s(batches, cfg.batch_size, warmup)
    return {
        "method": plan.method.name,
        "key": plan.key,
        "phantom": plan.method.phantom,
        "size": plan.size,
        "paper_size": plan.method.paper_size,
        "batch": cfg.batch_size,
        "device": device.type,
        "amp": cfg.amp and device.type == "cuda",  # pretrain uses AMP on CUDA only
        "channels_last": cfg.channels_last,
        "workers": cfg.num_workers,
        "warmup": warmup,
        "steps_timed": len(steps) - warmup,
        "step_images_per_s": step_ips,
        "loader_images_per_s": loader_ips,
        "loader_over_step": loader_ips / step_ips,  # >> 1: data loading is not the bottleneck
        "step_seconds_all": steps,
        "loader_batch_seconds_all": batches,
        "superpixel_seconds": superpixel_s if regions is not None else None,
        "source": plan.method.source,
        "config": to_dict(cfg),
    }


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table (one row per method)."""
    head = "| method | size | batch | device | amp | channels_last | step img/s | loader img/s |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        step, loader = _rate(r["step_images_per_s"]), _rate(r["loader_images_per_s"])
        lines.append(
            f"| {r['method']} | {r['size']}² | {r['batch']} | {r['device']} | {r['amp']} "
            f"| {r['channels_last']} | {step} | {loader} |"
        )
    return "\n".join(lines)


def _rate(images_per_s: float) -> str:
    """Images/s for the table: one decimal below 100, whole numbers above."""
    return f"{images_per_s:.1f}" if images_per_s < 100 else f"{images_per_s:.0f}"


def result_name(args: argparse.Namespace, device: torch.device, amp: bool) -> str:
    """File name of the record: device, size setting, batch (if set), workers, amp, channels_last."""
    if args.size is not None:
        size = f"{args.size}px"
    else:
        size = "paper" if args.max_size is None else f"max{args.max_size}px"
    parts = ["throughput", device.type, size]
    parts += [f"b{args.batch}"] if args.batch is not None else []
    parts += (
        [f"w{args.workers}"] + (["amp"] if amp else []) + (["cl"] if args.channels_last else [])
    )
    return "_".join(parts) + ".json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring); bad values stop with the option named."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="image side for every method (default: each paper's, capped by --max-size)",
    )
    p.add_argument(
        "--max-size", type=int, default=None, help="cap on the paper sizes (CPU runs, e.g. 128)"
    )
    p.add_argument(
        "--batch", type=int, default=None, help="images per step (default: each paper's)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 5 on CPU, 20 on CUDA)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mixed precision (CUDA only)",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: $MEDCL_THREADS, else one per core)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    checks = {"size": (args.size, 32), "max_size": (args.max_size, 32), "batch": (args.batch, 2),
              "steps": (args.steps, 1), "warmup": (args.warmup, 0), "workers": (args.workers, 0),
              "threads": (args.threads, 0)}  # fmt: skip
    for name, (value, low) in checks.items():
        if value is not None and value < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA GPU here")
    return args


def make_plans(args: argparse.Namespace, device: torch.device, steps_total: int) -> list[Plan]:
    """One plan per selected method: its size, batch and config for ``steps_total`` steps."""
    plans = []
    for key in args.methods:
        method = METHODS[key]
        batch = args.batch if args.batch is not None else method.paper_batch
        cfg = make_config(method, batch, args, device)
        size = image_size(method, args.size, args.max_size)
        plans.append(Plan(key, method, size, cfg, steps_total))
    return plans


def make_phantoms(plans: list[Plan]) -> dict[tuple[str, int], SliceSet]:
    """Each (phantom, size) once, with as many slices as its largest plan needs."""
    need: dict[tuple[str, int], int] = {}
    for plan in plans:
        key = (plan.method.phantom, plan.size)
        need[key] = max(need.get(key, 0), plan.n_images)
    return {key: make_phantom(*key, n) for key, n in need.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    device = get_device(args.device)
    info = machine(device)
    steps = args.steps if args.steps is not None else (20 if device.type == "cuda" else 5)
    seed_everything(0)
    plans = make_plans(args, device, args.warmup + steps)
    start = time.perf_counter()
    phantoms = make_phantoms(plans)
    phantom_s = time.perf_counter() - start
    rows = []
    for plan in plans:
        data = phantoms[(plan.method.phantom, plan.size)].subset(np.arange(plan.n_images))
        rows.append(measure(plan, data, args.warmup, device))
    amp = bool(args.amp) and device.type == "cuda"
    record = {
        **header("bench_throughput", argv),
        "machine": info,
        "settings": {
            "warmup": args.warmup,
            "steps": steps,
            "workers": args.workers,
            "amp": amp,
            "channels_last": args.channels_last,
            "phantom_seconds": phantom_s,
        },
        "results": rows,
    }
    write_result(record, args.out, result_name(args, device, amp))
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
