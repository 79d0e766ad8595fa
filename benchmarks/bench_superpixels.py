"""Cost of LRC's Felzenszwalb superpixels: first epoch (cache miss) vs later epochs (cache hit).

On ``--slices`` slices of the abdominal CT phantom (``make_abdominal_volumes``; the cardiac CT
phantom where that does not exist) at each ``--size``, :func:`medcl_lite.data.superpixels.superpixels`
is called once per "epoch" with a fresh cache folder: epoch 1 computes and writes the cache
(miss: fingerprint + Felzenszwalb per slice + compressed write), epochs 2.. load it (hit:
fingerprint + load). Reported: seconds per epoch, slices/s, ms per slice, the fingerprint alone,
the cache file size and regions per slice. One process, one core (skimage's felzenszwalb is
single-threaded). Writes ``<out-dir>/superpixels_cpu_<size>.json``.

    python benchmarks/bench_superpixels.py --size 128 256 --slices 400 --epochs 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage
from _common import RESULTS, header, machine, write_result

from medcl_lite.data.sliceset import SliceSet
from medcl_lite.data.superpixels import (
    FelzenszwalbParams,
    images_fingerprint,
    region_counts,
    superpixels,
)


def phantom(size: int, n_slices: int, seed: int) -> tuple[SliceSet, str]:
    """At least ``n_slices`` CT phantom slices at ``size`` (first ``n_slices`` rows) and the maker."""
    try:
        from medcl_lite.data.phantoms.abdomen import make_abdominal_volumes
    except ImportError:
        make_abdominal_volumes = None
    patients = 1
    while True:
        if make_abdominal_volumes is not None:
            data, maker = make_abdominal_volumes(patients, size=size, seed=seed), "abdominal"
        else:
            from medcl_lite.data.phantoms import make_cardiac_volumes

            data = make_cardiac_volumes(patients, size=size, seed=seed, modality="ct")
            maker = "cardiac_ct"
        if len(data) >= n_slices:
            return data.subset(np.arange(n_slices)), maker
        patients = max(patients + 1, int(np.ceil(patients * n_slices / max(len(data), 1))))


def bench_size(size: int, args: argparse.Namespace, params: FelzenszwalbParams) -> dict:
    data, maker = phantom(size, args.slices, args.seed)
    n = len(data)
    start = time.perf_counter()
    images_fingerprint(data.images)
    fingerprint_s = time.perf_counter() - start
    epochs = []
    with tempfile.TemporaryDirectory(prefix="bench_superpixels_") as tmp:
        cache_dir = Path(tmp) / "superpixels"
        for _ in range(args.epochs):
            start = time.perf_counter()
            regions = superpixels(data, params, cache_dir=cache_dir)
            epochs.append(time.perf_counter() - start)
        (cache_file,) = cache_dir.iterdir()
        cache_bytes = cache_file.stat().st_size
    counts = region_counts(regions)
    miss, hits = epochs[0], epochs[1:]
    hit = statistics.median(hits) if hits else None
    return {
        "size": size,
        "slices": n,
        "phantom": maker,
        "epochs_s": epochs,
        "miss_s": miss,
        "hit_median_s": hit,
        "miss_slices_per_s": n / miss,
        "hit_slices_per_s": None if hit is None else n / hit,
        "miss_ms_per_slice": 1e3 * miss / n,
        "hit_ms_per_slice": None if hit is None else 1e3 * hit / n,
        "miss_over_hit": None if hit is None else miss / hit,
        "fingerprint_s": fingerprint_s,
        "cache_bytes": cache_bytes,
        "regions_per_slice": {
            "min": int(counts.min()),
            "median": float(np.median(counts)),
            "mean": float(counts.mean()),
            "max": int(counts.max()),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[128, 256], help="image sides")
    parser.add_argument("--slices", type=int, default=400, help="slices per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epoch 1 misses, the rest hit")
    parser.add_argument("--scale", type=float, default=FelzenszwalbParams.scale)
    parser.add_argument("--sigma", type=float, default=FelzenszwalbParams.sigma)
    parser.add_argument("--min-size", type=int, default=FelzenszwalbParams.min_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.slices < 1 or args.epochs < 1:
        parser.error("--slices and --epochs must be >= 1")
    params = FelzenszwalbParams(args.scale, args.sigma, args.min_size)
    versions = {"numpy": np.__version__, "scikit-image": skimage.__version__}
    for size in args.size:
        record = {
            **header("superpixels", argv),
            "params": {"scale": params.scale, "sigma": params.sigma, "min_size": params.min_size},
            "machine": machine(versions=versions),
            **bench_size(size, args, params),
        }
        write_result(record, args.out_dir, f"superpixels_cpu_{size}.json")


if __name__ == "__main__":
    main()
