"""Benchmark: one pretraining epoch of the PCL preset, per image, on this CPU or a GPU.

The real loop, ``medcl_lite.train.pretrain``: TwoViewDataset + DataLoader with PCL's views
(``augment="pcl_elastic"``: mirror, then with p = 0.67 elastic + rotation + scale), U-Net
ResNet-18 encoder + 512-d projection head on 2B views, NT-Xent with positional positives
(θ = 0.35, ACDC), backward, SGD (lr 0.1, momentum 0.9, wd 1e-5), batch 32 (docs/methods.md, "PCL").
Data: the built-in cardiac MRI phantom (ACDC-like, depth per slice) at ``--size``. One "epoch" is
the first ``batch * steps`` slices, i.e. ``steps`` steps; the first step is dropped as warm-up.
Also times the augmentation alone (TwoViewDataset batches through the same DataLoader settings)
to show how much of a step the data takes. Reports images/s, seconds per image and the projected
epoch time of the ACDC and CHD pretraining pools (sizes assumed in ``POOLS``).

    python benchmarks/bench_pcl_epoch.py --size 352 --device cpu            # 4 steps
    python benchmarks/bench_pcl_epoch.py --size 128 --device cpu --steps 8
    python benchmarks/bench_pcl_epoch.py --size 352 --device cuda --workers 8   # 20 steps
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, batch_seconds, header, machine, write_result
from torch.utils.data import DataLoader

from medcl_lite import get_device
from medcl_lite.config import to_dict
from medcl_lite.data.datasets import TwoViewDataset
from medcl_lite.data.phantoms import make_cardiac_volumes
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.transforms import view_transform
from medcl_lite.threads import set_threads
from medcl_lite.train import PretrainConfig, pretrain

#: The phantom draws 10-18 slices per volume; the fewest decides how many patients we need.
PHANTOM_MIN_SLICES = 10
#: PCL's pretraining length (docs/methods.md, "PCL: hyper-parameters": 300 epochs), for the
#: whole-run projection.
PCL_EPOCHS = 300
#: Pretraining pools of the projection. Every count is an ASSUMPTION stated in ``assumption``.
POOLS: dict[str, dict] = {
    "acdc_all_cine_frames": {
        "slices": 100 * 25 * 10,
        "image_size": 352,
        "assumption": "ACDC training set: 100 patients x ~25 cine frames (12-35 per patient)"
        " x ~10 short-axis slices per frame = 25,000 slices at 352^2 (PCL pretrains on all"
        " cine frames)",
    },
    "acdc_ed_es": {
        "slices": 100 * 2 * 10,
        "image_size": 352,
        "assumption": "ACDC training set, ED and ES frames only: 100 patients x 2 frames x ~10"
        " slices = 2,000 slices at 352^2",
    },
    "chd": {
        "slices": 68 * 200,
        "image_size": 512,
        "assumption": "CHD: 68 CT volumes x ~200 axial slices = 13,600 slices at 512^2",
    },
}


def pcl_config(framework: str, batch: int, device: torch.device, workers: int) -> PretrainConfig:
    """PCL's ACDC pretraining preset for one epoch (no warm-up, no progress bar)."""
    return PretrainConfig(
        framework=framework, pairing="positional", threshold=0.35, augment="pcl_elastic",
        batch_size=batch, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-5,
        proj_dim=512, arch="unet", encoder="resnet18", max_epochs=1, warmup_epochs=0,
        device=str(device), num_workers=workers, progress=False,
    )  # fmt: skip


def phantom(size: int, n_images: int) -> SliceSet:
    """ACDC-like cardiac MRI phantom (one site) with at least ``n_images`` slices ``[N, size, size]``."""
    n_patients = math.ceil(n_images / PHANTOM_MIN_SLICES)
    return make_cardiac_volumes(
        n_patients=n_patients, sites=("A",), size=size, seed=0, modality="mri"
    )


def step_seconds(cfg: PretrainConfig, data: SliceSet, n_images: int) -> list[float]:
    """Seconds of each step of ``pretrain`` (data loading included) on the first ``n_images`` rows."""
    result = pretrain(cfg, data, index=np.arange(n_images))
    ends = result.history["seconds"].to_numpy()
    return np.diff(np.concatenate([[0.0], ends])).tolist()


def augment_seconds(data: SliceSet, n_images: int, batch: int, workers: int) -> list[float]:
    """Seconds per batch of the views alone: TwoViewDataset (``pcl_elastic``) through a
    DataLoader with the same batch and workers as ``pretrain``, nothing on the device."""
    dataset = TwoViewDataset(
        data, view_transform(data.image_size[0], "pcl_elastic"), index=np.arange(n_images)
    )
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0), num_workers=workers)  # fmt: skip
    return batch_seconds(loader)


def project(seconds_per_image: float, size: int) -> dict[str, dict]:
    """Epoch time of each pool in ``POOLS``: at the measured size, and scaled to the pool's image
    size by pixel count (assumes time proportional to H x W; measure at that size to confirm)."""
    out = {}
    for name, pool in POOLS.items():
        scale = (pool["image_size"] / size) ** 2
        epoch = pool["slices"] * seconds_per_image
        out[name] = {
            **pool,
            "epoch_s_at_measured_size": epoch,
            "pixel_scale_to_pool_size": scale,
            "epoch_s_pixel_scaled": epoch * scale,
            f"pcl_{PCL_EPOCHS}_epochs_h_pixel_scaled": epoch * scale * PCL_EPOCHS / 3600,
        }
    return out


def summarize(steps: list[float], augment: list[float], batch: int) -> dict:
    """Rates from per-step and per-batch seconds, the first of each dropped as warm-up."""
    timed, aug = steps[1:], augment[1:]
    seconds_per_image = float(np.sum(timed)) / (batch * len(timed))
    aug_batch_s = float(np.median(aug))
    step_s = float(np.median(timed))
    return {
        "step_seconds_all": steps,
        "steps_timed": len(timed),
        "step_median_s": step_s,
        "step_mean_s": float(np.mean(timed)),
        "images_per_s": 1.0 / seconds_per_image,
        "seconds_per_image": seconds_per_image,
        "augment_batch_seconds_all": augment,
        "augment_batch_median_s": aug_batch_s,
        "augment_views_per_s": 2 * batch / aug_batch_s,
        # > 1: the loader alone is slower than a step, so augmentation starves the device
        "augment_share_of_step": aug_batch_s / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=352, help="image size (ACDC 352, or 128)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: $MEDCL_THREADS, else one per core)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps in the epoch, first dropped (default 4 on CPU, 20 on a GPU)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=32, help="images per step (PCL: 32)")
    parser.add_argument("--framework", default="simclr", choices=["simclr", "moco"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    set_threads(args.threads)
    device = get_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    steps = args.steps if args.steps is not None else (4 if device.type == "cpu" else 20)
    if steps < 2:
        parser.error(f"--steps must be >= 2 (the first step is dropped), got {steps}")
    if args.batch < 2 or args.workers < 0:
        parser.error(f"--batch must be >= 2 and --workers >= 0, got {args.batch}, {args.workers}")

    info = machine(device)
    n_images = args.batch * steps
    start = time.perf_counter()
    data = phantom(args.size, n_images)
    setup_s = time.perf_counter() - start
    cfg = pcl_config(args.framework, args.batch, device, args.workers)
    measured = summarize(
        step_seconds(cfg, data, n_images),
        augment_seconds(data, n_images, args.batch, args.workers),
        args.batch,
    )
    record = {
        **header("bench_pcl_epoch"),
        "machine": info,
        "config": to_dict(cfg),
        "data": {
            "phantom": "make_cardiac_volumes(sites=('A',), modality='mri', seed=0)",
            "patients_in_epoch": int(data.meta["patient_id"].iloc[:n_images].nunique()),
            "image_size": args.size,
            "images_in_epoch": n_images,
            "phantom_seconds": setup_s,
        },
        "amp": cfg.amp and device.type == "cuda",
        **measured,
        "projected_epochs": project(measured["seconds_per_image"], args.size),
    }
    name = f"pcl_epoch_{device.type}_{args.size}px_{args.framework}_w{args.workers}.json"
    write_result(record, args.out, name)


if __name__ == "__main__":
    main()
