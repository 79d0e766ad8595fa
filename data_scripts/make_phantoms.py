"""Write the built-in phantoms in the prepared format.

    python data_scripts/make_phantoms.py --out DIR [--kind xray|cardiac|abdomen|all] [--size 128]
        [--seed 0] [--overwrite]

writes ``DIR/phantom_xray/`` and/or ``DIR/phantom_cardiac_mri/``; all logic lives in
:func:`medcl_lite.data.phantoms.write_phantoms`.
"""

from __future__ import annotations

import argparse
import sys

from medcl_lite.data.phantoms import PHANTOM_KINDS, write_phantoms
from medcl_lite.data.prepared import read_prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the datasets into")
    parser.add_argument("--kind", choices=sorted(PHANTOM_KINDS), default="all")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing datasets")
    args = parser.parse_args(argv)
    try:
        folders = write_phantoms(args.out, args.kind, args.size, args.seed, args.overwrite)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for folder in folders:
        data = read_prepared(folder)
        print(f"wrote {folder}: {len(data)} images {data.image_size}, classes {data.classes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
