"""``medcl pretrain -f pretrain.yaml``: pretraining outside a notebook, on one or several processes.

One process::

    medcl pretrain -f pretrain.yaml

Several GPUs (or CPU processes with gloo), one machine::

    torchrun --nproc_per_node 4 -m medcl_lite.pretrain_cli -f pretrain.yaml

The YAML file holds :class:`~medcl_lite.train.PretrainConfig` fields (``batch_size`` is the global
batch, split over the processes) plus where the images come from:

- ``data``: ``phantom:xray`` | ``phantom:cardiac`` | ``phantom:abdomen`` (built in) or a prepared
  folder (a path, or a name under ``$MEDCL_DATA/prepared``, see ``medcl data prepare``);
- ``phantom_size`` (default 128) and ``site`` (optional: only the rows of that site).

``out_dir`` is required: ``encoder.pt`` there is what fine-tuning loads
(``FinetuneConfig(init="pretrained", pretrained=".../encoder.pt")``); running the same command again
resumes from ``checkpoint.pt`` (``resume`` defaults to true here).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from medcl_lite import distributed
from medcl_lite.config import ConfigError, from_params
from medcl_lite.data.sliceset import SliceSet
from medcl_lite.repro import read_yaml_mapping
from medcl_lite.threads import set_threads
from medcl_lite.train import PretrainConfig, pretrain

__all__ = ["load_images", "main", "read_pretrain_file"]

DATA_KEYS = ("data", "phantom_size", "site")


def load_images(data: str, phantom_size: int = 128, site: str = "") -> tuple[SliceSet, np.ndarray]:
    """``(images, rows)`` named by a pretraining file's ``data`` (see the module docstring)."""
    from medcl_lite.data.phantoms import make_phantom
    from medcl_lite.data.prepared import open_prepared

    kinds = ("xray", "cardiac", "abdomen")
    kind = data.removeprefix("phantom:")
    if data.startswith("phantom:") and kind not in kinds:
        raise ConfigError(f"data={data!r}: built-in phantoms are {sorted(f'phantom:{k}' for k in kinds)}")
    images = make_phantom(kind, phantom_size) if data.startswith("phantom:") else open_prepared(data)
    if not site:
        return images, np.arange(len(images))
    rows = np.flatnonzero(images.meta["site"].astype(str).to_numpy() == site)
    if not len(rows):
        sites = sorted(images.meta["site"].astype(str).unique())
        raise ConfigError(f"site={site!r}: {images.name!r} has no rows there; its sites are {sites}")
    return images, rows


def read_pretrain_file(path: str) -> tuple[PretrainConfig, dict]:
    """The :class:`PretrainConfig` and the data keys of a pretraining YAML file; unknown keys,
    a missing ``data`` or ``out_dir`` are errors naming the file."""
    values = read_yaml_mapping(path, "pretraining file", "of PretrainConfig fields and data")
    source = {k: values.pop(k) for k in DATA_KEYS if k in values}
    if "data" not in source:
        raise ConfigError(f"{path}: no `data:` (phantom:xray | phantom:cardiac | phantom:abdomen | a prepared folder)")
    if not values.get("out_dir"):
        raise ConfigError(f"{path}: no `out_dir:` (where checkpoint.pt and encoder.pt go)")
    values.setdefault("resume", True)
    try:
        return from_params(PretrainConfig, values), source
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medcl pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--file", required=True, help="pretraining YAML file")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads of each process (default: $MEDCL_THREADS, else $OMP_NUM_THREADS, which "
        "torchrun sets to 1, else all cores)",
    )
    args = parser.parse_args(argv)
    cfg, source = read_pretrain_file(args.file)
    threads = set_threads(args.threads)
    images, rows = load_images(**source)
    distributed.setup()
    try:
        rank, size = distributed.world()
        if rank == 0:
            print(f"pretraining {cfg.framework}/{cfg.pairing} on {images.name} ({len(rows)} images), "
                  f"{size} process(es) x {threads} CPU thread(s), global batch {cfg.batch_size} "
                  f"-> {cfg.out_dir}", flush=True)  # fmt: skip
        result = pretrain(cfg, images, rows)
        if rank == 0:
            print(f"done: {len(result.history)} steps, last loss {result.history.loss.iloc[-1]:.4f}, "
                  f"{result.seconds:.0f} s; weights: {cfg.out_dir}/encoder.pt", flush=True)  # fmt: skip
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
