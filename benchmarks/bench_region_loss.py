"""Benchmark: LRC's region loss against the global NT-Xent and a naive per-region Python loop.

One call = forward + backward of a loss on a batch of two-view decoder feature maps
``[B, C, S, S]`` (requires_grad, as in training):

- ``global``: global average pooling -> projection MLP -> ``nt_xent`` over the B images;
- ``region``: ``medcl_lite.regions.region_loss`` (vectorised ``region_pool`` of both views, sampling
  of R regions per image, :class:`~medcl_lite.models.RegionHead`, ``nt_xent`` over the M regions);
- ``naive``: the same loss with pooling done by a Python loop over images and regions (a boolean
  mask and a mean per region), i.e. what the vectorised ``region_pool`` replaces.

Region maps: Voronoi cells of ``--regions`` random seeds per image (about K regions); view 2 is the
map shifted by a few pixels with the uncovered border set to -1 (regions cropped away).
Median seconds per call over ``--repeats`` calls after one warm-up; peak memory above the inputs on
CUDA. Writes ``benchmarks/results/region_loss_{device}_b{B}.json``.

    python benchmarks/bench_region_loss.py [--batch 32] [--channels 16] [--sizes 128 256]
        [--regions 100] [--per-image 8] [--repeats 10] [--naive-repeats 2] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import RESULTS, flat_machine, machine, write_result
from torch import Tensor, nn

from medcl_lite import get_device
from medcl_lite.losses import nt_xent
from medcl_lite.models import RegionHead
from medcl_lite.regions import region_loss, sample_regions
from medcl_lite.threads import set_threads


def voronoi_regions(batch: int, size: int, k: int, gen: torch.Generator) -> Tensor:
    """``[B, S, S]`` long: each pixel labelled with its nearest of ``k`` random seed points."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pixels = torch.stack([ys, xs], -1).reshape(1, -1, 2).float()
    seeds = torch.rand(batch, k, 2, generator=gen) * size
    out = torch.empty(batch, size * size, dtype=torch.long)
    for b in range(batch):  # one image at a time keeps the distance matrix small
        out[b] = torch.cdist(pixels[0], seeds[b]).argmin(dim=1)
    return out.reshape(batch, size, size)


def shifted(regions: Tensor, shift: int) -> Tensor:
    """View 2's map: shifted by ``shift`` pixels on both axes, uncovered border = -1."""
    out = torch.full_like(regions, -1)
    out[:, shift:, shift:] = regions[:, :-shift, :-shift]
    return out


def naive_pool(features: Tensor, regions: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-region Python loop (the reference the vectorised pooling replaces)."""
    b = features.shape[0]
    counts = torch.zeros(b, k, dtype=torch.long, device=features.device)
    rows = []
    for i in range(b):
        row = []
        for r in range(k):
            mask = regions[i] == r
            n = mask.sum()
            counts[i, r] = n
            row.append(features[i][:, mask].float().sum(dim=1) / n.clamp(min=1))
        rows.append(torch.stack(row))
    return torch.stack(rows), counts


def naive_region_loss(f1, f2, r1, r2, head, per_image, min_pixels, gen) -> Tensor:
    k = int(max(r1.max(), r2.max())) + 1
    p1, c1 = naive_pool(f1, r1, k)
    p2, c2 = naive_pool(f2, r2, k)
    img, reg = sample_regions(c1, c2, per_image, min_pixels, gen)
    return nt_xent(head(p1[img, reg]), head(p2[img, reg]), 0.1)


def time_calls(fn: Callable[[], Tensor], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of forward + backward over ``repeats`` calls after one warm-up; peak memory."""
    fn().backward()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn().backward()
        _sync(device)
        times.append(time.perf_counter() - t)
    result = {"median_s": statistics.median(times), "calls": repeats}
    if device.type == "cuda":
        result["peak_mem_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_size(args, size: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(size)
    r1 = voronoi_regions(args.batch, size, args.regions, gen).to(device)
    r2 = shifted(r1, max(1, size // 16)).to(device)
    f1 = (
        torch.randn(args.batch, args.channels, size, size, generator=gen)
        .to(device)
        .requires_grad_()
    )
    f2 = (
        torch.randn(args.batch, args.channels, size, size, generator=gen)
        .to(device)
        .requires_grad_()
    )
    head = RegionHead(args.channels, 128).to(device)
    glob = nn.Sequential(
        nn.Linear(args.channels, args.channels), nn.ReLU(), nn.Linear(args.channels, 128)
    ).to(device)
    sample_gen = torch.Generator(device=device).manual_seed(0)

    def global_call() -> Tensor:
        return nt_xent(glob(f1.mean(dim=(2, 3))), glob(f2.mean(dim=(2, 3))), 0.1)

    def region_call() -> Tensor:
        return region_loss(f1, f2, r1, r2, head, args.per_image, args.min_pixels, 0.1, sample_gen)[
            0
        ]

    def naive_call() -> Tensor:
        return naive_region_loss(f1, f2, r1, r2, head, args.per_image, args.min_pixels, sample_gen)

    _, m = region_loss(f1, f2, r1, r2, head, args.per_image, args.min_pixels, 0.1, sample_gen)
    row = {
        "size": size,
        "regions_per_image_mean": float((r1.flatten(1).amax(1) + 1).float().mean()),
        "sampled_regions_M": m,
        "global": time_calls(global_call, args.repeats, device),
        "region": time_calls(region_call, args.repeats, device),
    }
    if args.naive_repeats > 0:
        row["naive"] = time_calls(naive_call, args.naive_repeats, device)
        row["naive_over_region"] = row["naive"]["median_s"] / row["region"]["median_s"]
    row["region_over_global"] = row["region"]["median_s"] / row["global"]["median_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--per-image", type=int, default=8)
    parser.add_argument("--min-pixels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--naive-repeats", type=int, default=2, help="0 skips the naive loop")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: $MEDCL_THREADS, else one per core)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    set_threads(args.threads)
    device = get_device(args.device)
    info = machine(device)
    record = {
        **flat_machine(info),
        "batch": args.batch,
        "channels": args.channels,
        "per_image": args.per_image,
        "min_pixels": args.min_pixels,
        "timing": "median seconds per forward + backward call",
        "results": [bench_size(args, s, device) for s in args.sizes],
        "machine": info,
    }
    write_result(record, args.out, f"region_loss_{device.type}_b{args.batch}.json")


if __name__ == "__main__":
    main()
