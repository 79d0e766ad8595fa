"""Benchmark: one pretraining step of our loop against a bare smp forward/backward.

Our step = data loading + augmentation of both views (TwoViewDataset + DataLoader) + encoder and
projection head on 2B views + NT-Xent + backward + SGD step (``medcl_lite.train.pretrain``).
The bare step = the same encoder, the same 2B-image batch already in memory, ``encoder(x)[-1].mean()``,
backward, SGD step. Both run in one process, interleaved, median seconds per step compared.
Target (issue 2): overhead ratio <= 1.10 on a 2-core CPU.

    python benchmarks/bench_pretrain_step.py [--size 64] [--batch 32] [--steps 20] [--device auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, flat_machine, machine, write_result

from medcl_lite import get_device, seed_everything
from medcl_lite.data.phantoms import make_chest_xrays
from medcl_lite.models import build_segmenter
from medcl_lite.threads import set_threads
from medcl_lite.train import PretrainConfig, pretrain


def bare_steps(size: int, batch: int, steps: int, device: torch.device, amp: bool) -> list[float]:
    """Seconds per step of the bare smp encoder forward/backward/SGD on a fixed batch."""
    encoder = build_segmenter("unet", "resnet18", in_channels=1, classes=1).encoder.to(device)
    opt = torch.optim.SGD(encoder.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    x = torch.rand(2 * batch, 1, size, size, device=device)
    times = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            loss = encoder(x)[-1].float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def our_steps(
    data, size: int, batch: int, steps: int, device: torch.device, amp: bool, workers: int
) -> list[float]:
    """Seconds per step of medcl_lite.train.pretrain (SimCLR), data loading included."""
    n_images = batch * steps
    cfg = PretrainConfig(
        framework="simclr", max_epochs=1, batch_size=batch, device=str(device), amp=amp,
        progress=False, num_workers=workers, warmup_epochs=0,
    )  # fmt: skip
    result = pretrain(cfg, data, index=np.arange(n_images))
    return np.diff(np.concatenate([[0.0], result.history["seconds"].to_numpy()])).tolist()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: $MEDCL_THREADS, else one per core)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    set_threads(args.threads)
    device = get_device(args.device)
    info = machine(device)
    amp = device.type == "cuda"
    seed_everything(0)
    n_patients = max(10, (args.batch * (args.steps + 3)) // 4 + 1)
    data = make_chest_xrays(n_patients=n_patients, n_times=4, size=args.size, seed=0)
    warm = 3
    ours, bare = [], []
    for _ in range(args.rounds):  # interleave so that machine noise hits both alike
        bare += bare_steps(args.size, args.batch, args.steps + warm, device, amp)[warm:]
        ours += our_steps(
            data, args.size, args.batch, args.steps + warm, device, amp, args.workers
        )[warm:]
    result = {
        **flat_machine(info),
        "image_size": args.size,
        "batch_images": args.batch,
        "views_per_step": 2 * args.batch,
        "workers": args.workers,
        "steps_timed": len(ours),
        "bare_median_s": float(np.median(bare)),
        "ours_median_s": float(np.median(ours)),
        "overhead_ratio": float(np.median(ours) / np.median(bare)),
        "machine": info,
    }
    tag = f"pretrain_step_{device.type}_{args.size}px_b{args.batch}_w{args.workers}.json"
    write_result(result, args.out, tag)


if __name__ == "__main__":
    main()
