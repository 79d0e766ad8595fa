"""Benchmark: peak memory of IDEAL's dense loss against a naive all-pairs dense loss.

One call = forward + backward of a loss on two dense projections ``[B, D, S, S]`` (the query map
requires grad, the key map does not, as with a momentum encoder):

- ``dense``: ``medcl_lite.dense.dense_loss`` (matching through a lookup table, ``per_image``
  sampled query cells per image, InfoNCE over the N sampled pairs + queue); memory linear in S²;
- ``naive``: every matched query cell against every key cell of its image, a ``[B, S², S²]``
  similarity and cross-entropy to the matched key (what sampling avoids); skipped when its
  estimate (3 float32 ``[B, S², S²]`` tensors: logits, log-softmax, gradient) exceeds
  ``--naive-cap-mib``.

Geometry: the slice is ``S x S`` (``image_width = S``); view 1 shows it unchanged, view 2 mirrored
and shifted by S/8 columns (uncovered columns -1), pixel maps at the feature size.

Peak memory above what existed before the call (inputs excluded, the gradient of the query map
included): on CUDA ``torch.cuda.max_memory_allocated``; on CPU the allocation timeline of
torch's memory profiler (``torch.profiler.profile(profile_memory=True)``, the timeline behind
``export_memory_timeline``; tracemalloc does not see torch's allocator). Also the median seconds of
``--repeats`` unprofiled calls after one warm-up. Writes
``benchmarks/results/dense_memory_{device}_b{B}.json``.

    python benchmarks/bench_dense_memory.py [--batch 8] [--dim 128] [--sizes 32 64 128]
        [--per-image 64 256] [--queue 0] [--naive-cap-mib 2048] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, header, machine, write_result
from torch import Tensor

from medcl_lite import get_device
from medcl_lite.dense import dense_loss, match_locations
from medcl_lite.threads import set_threads

TEMPERATURE = 0.2


def pixel_maps(batch: int, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``[B, S, S]`` pixel maps: view 1 = the slice, view 2 = mirrored, shifted by S/8 columns."""
    index = torch.arange(size * size, device=device).reshape(size, size)
    shift = max(1, size // 8)
    view2 = torch.full_like(index, -1)
    view2[:, shift:] = index.flip(-1)[:, :-shift]
    return index.expand(batch, size, size), view2.expand(batch, size, size)


def naive_dense_loss(q_map: Tensor, k_map: Tensor, pix1: Tensor, pix2: Tensor) -> Tensor:
    """All-pairs dense loss: each matched query cell against every key cell of its image."""
    b, d, h, w = q_map.shape
    match = match_locations(pix1, pix2, image_width=w)  # [B, h * w]
    q = F.normalize(q_map.flatten(2), dim=1)
    k = F.normalize(k_map.flatten(2), dim=1)
    logits = torch.einsum("bdn,bdm->bnm", q, k) / TEMPERATURE  # [B, hw, hw]
    valid = match >= 0
    return F.cross_entropy(logits[valid], match[valid])


def naive_estimate_mib(batch: int, size: int) -> float:
    """Three float32 ``[B, S², S²]`` tensors (logits, log-softmax, gradient)."""
    return 3 * batch * (size * size) ** 2 * 4 / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_cuda_mib(step: Callable[[], None]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def peak_cpu_mib(step: Callable[[], None]) -> float:
    """Peak of the CPU allocation timeline of torch's memory profiler during ``step()``."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        step()
    current = peak = 0
    for _, action, (key, _), size in prof._memory_profile().timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak / 2**20


def measure(fn: Callable[[], Tensor], q_map: Tensor, repeats: int, device: torch.device) -> dict:
    """Peak MiB of one forward + backward, then median seconds of ``repeats`` calls."""

    def step() -> None:
        q_map.grad = None
        fn().backward()

    step()  # warm-up
    q_map.grad = None
    peak = peak_cuda_mib(step) if device.type == "cuda" else peak_cpu_mib(step)
    times = []
    for _ in range(repeats):
        q_map.grad = None
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return {"peak_mib": peak, "median_s": statistics.median(times), "calls": repeats}


def bench_size(args, size: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(size)
    shape = (args.batch, args.dim, size, size)
    q_map = torch.randn(*shape, generator=gen).to(device).requires_grad_()
    k_map = torch.randn(*shape, generator=gen).to(device)
    queue = torch.randn(args.queue, args.dim, generator=gen).to(device) if args.queue else None
    pix1, pix2 = pixel_maps(args.batch, size, device)
    sample_gen = torch.Generator(device=device).manual_seed(0)
    row = {
        "size": size,
        "cells": size * size,
        "map_mib": q_map.numel() * 4 / 2**20,
        "dense": {},
    }
    for per_image in args.per_image:

        def dense_call(per_image: int = per_image) -> Tensor:
            return dense_loss(
                q_map,
                k_map,
                pix1,
                pix2,
                per_image,
                TEMPERATURE,
                queue,
                generator=sample_gen,
                image_width=size,
            ).loss

        row["dense"][f"per_image_{per_image}"] = measure(dense_call, q_map, args.repeats, device)
    estimate = naive_estimate_mib(args.batch, size)
    row["naive_estimate_mib"] = estimate
    if estimate <= args.naive_cap_mib:

        def naive_call() -> Tensor:
            return naive_dense_loss(q_map, k_map, pix1, pix2)

        row["naive"] = measure(naive_call, q_map, args.repeats, device)
    else:
        row["naive"] = f"skipped: estimate {estimate:.1f} MiB > cap {args.naive_cap_mib} MiB"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--per-image", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--queue", type=int, default=0, help="negative keys in the queue")
    parser.add_argument("--naive-cap-mib", type=float, default=2048.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: $MEDCL_THREADS, else one per core)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    set_threads(args.threads)
    device = get_device(args.device)
    info = machine(device)
    memory = (
        "torch.cuda.max_memory_allocated above the allocation before the call"
        if device.type == "cuda"
        else "peak of torch.profiler's CPU allocation timeline (profile_memory=True)"
    )
    record = {
        **header("dense_memory"),
        "batch": args.batch,
        "dim": args.dim,
        "queue": args.queue,
        "temperature": TEMPERATURE,
        "memory": memory,
        "timing": "median seconds per forward + backward call",
        "results": [bench_size(args, s, device) for s in args.sizes],
        "machine": info,
    }
    write_result(record, args.out, f"dense_memory_{device.type}_b{args.batch}.json")


if __name__ == "__main__":
    main()
