"""Views per second of PCL's spatial augmentation (mirror + elastic + rotation + scale, p = 0.67).

Compares, at each image size, with the same elastic ranges (PCL's 352 x 352 values, rescaled to
the size with ``rescale_elastic``):

a. ours per sample on one CPU core (``SpatialAugment`` on ``[1, H, W]``, as in a Dataset);
   also with ``mode="bicubic"``;
b. ours batched on the CPU (all torch threads);
c. ``torchvision.transforms.v2.ElasticTransform`` per image, one core (elastic only);
d. the official PCL pipeline (dewenzeng/positional_cl dataset/acdc.py ``prepare_contrast``):
   batchgenerators ``MirrorTransform((0, 1))`` + ``RndTransform(SpatialTransform(...), p=0.67,
   RandomCropTransform)`` per view, one core;
e. ours batched on CUDA (when available).

    python benchmarks/bench_augment.py --sizes 128 352 --seconds 3
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, header, machine, write_result

from medcl_lite.data.spatial import SPATIAL_PRESETS, SpatialAugment, rescale_elastic
from medcl_lite.threads import set_threads

PCL_SIZE = 352


def rate(step: Callable[[], int], seconds: float, sync: Callable[[], None] = lambda: None) -> float:
    """Views per second of ``step`` (returns the views it made), after one warm-up call."""
    step()
    sync()
    views, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        views += step()
    sync()
    return views / (time.perf_counter() - start)


def official_pipeline(size: int, alpha: tuple, sigma: tuple) -> Callable[[np.ndarray], dict]:
    """PCL's `prepare_contrast` transform (batchgenerators 0.25.5 positional arguments as in
    dewenzeng/positional_cl dataset/acdc.py), for one view of a ``[1, 1, H, W]`` array."""
    # PCL imports these from `batchgenerators.transforms` (an older layout); 0.25.5 has modules
    from batchgenerators.transforms.abstract_transforms import Compose, RndTransform
    from batchgenerators.transforms.crop_and_pad_transforms import RandomCropTransform
    from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

    patch = (size, size)
    spatial = SpatialTransform(
        patch, [size // 2, size // 2],
        True, alpha, sigma,
        True, (0, 2.0 * np.pi), (-0.000001, 0.00001), (-0.000001, 0.00001),
        True, (0.7, 1.3), "constant", 0, 3, "constant", 0, 0,
        random_crop=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rnd = RndTransform(spatial, prob=0.67, alternative_transform=RandomCropTransform(patch))
    transform = Compose([MirrorTransform((0, 1)), rnd])
    return lambda image: transform(data=image.copy())


def bench_size(size: int, seconds: float, batch: int, threads: int) -> dict:
    alpha, sigma = rescale_elastic((100.0, 350.0), (14.0, 17.0), size / PCL_SIZE)
    settings = {**SPATIAL_PRESETS["pcl"], "elastic_alpha": alpha, "elastic_sigma": sigma}
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    image = torch.rand(1, size, size)
    images = torch.rand(batch, 1, size, size)
    out: dict = {"size": size, "elastic_alpha": alpha, "elastic_sigma": sigma}

    torch.set_num_threads(1)
    aug = SpatialAugment(generator=gen, **settings)
    out["ours_per_sample_1core"] = rate(lambda: (aug(image), 1)[1], seconds)
    cubic = SpatialAugment(generator=gen, mode="bicubic", **settings)
    out["ours_per_sample_bicubic_1core"] = rate(lambda: (cubic(image), 1)[1], seconds)

    from torchvision.transforms import v2

    # torchvision's displacement is alpha / W in [-1, 1] units = alpha / 2 pixels per unit noise
    tv = v2.ElasticTransform(alpha=float(np.mean(alpha)) * 2, sigma=float(np.mean(sigma)))
    out["torchvision_elastic_per_image_1core"] = rate(lambda: (tv(image), 1)[1], seconds)

    try:
        from importlib.metadata import version

        official = official_pipeline(size, alpha, sigma)
        array = image.numpy()[None]
        np.random.seed(0)
        out["official_batchgenerators_1core"] = rate(lambda: (official(array), 1)[1], seconds)
        out["batchgenerators_version"] = version("batchgenerators")
    except ImportError as error:
        out["official_batchgenerators_1core"] = None
        out["batchgenerators_error"] = f"batchgenerators not installed: {error}"

    torch.set_num_threads(threads)
    out["ours_batched_cpu"] = rate(lambda: (aug(images), batch)[1], seconds)
    out["cpu_threads_batched"] = threads

    if torch.cuda.is_available():
        cuda_images = images.cuda()
        cuda_batch = 8 * batch
        cuda_images = cuda_images.repeat(8, 1, 1, 1)
        out["ours_batched_cuda"] = rate(
            lambda: (aug(cuda_images), cuda_batch)[1], seconds, torch.cuda.synchronize
        )
        out["cuda_batch"] = cuda_batch
        out["cuda_device"] = torch.cuda.get_device_name()
    else:
        out["ours_batched_cuda"] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 352])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument("--batch", type=int, default=32, help="batch of the batched runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=0, help="threads of the batched runs (default 0: $MEDCL_THREADS, else one per core)")
    args = parser.parse_args()
    threads = set_threads(args.threads)  # the batched measurement's threads
    record = {
        **header("bench_augment"),
        "machine": machine(),
        "unit": "views per second",
        "results": [bench_size(size, args.seconds, args.batch, threads) for size in args.sizes],
    }
    name = "augment_cuda.json" if torch.cuda.is_available() else "augment_cpu.json"
    write_result(record, args.out, name)


if __name__ == "__main__":
    main()
