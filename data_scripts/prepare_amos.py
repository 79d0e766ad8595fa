"""Check and prepare AMOS 2022 multi-organ abdominal CT (public, Zenodo; CT cases only).

    python data_scripts/prepare_amos.py                      # where to get it, expected layout
    python data_scripts/prepare_amos.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_amos.py --source DIR [--out DIR] [--size 256] [--overwrite]
        [-o classes=phantom|all] [-o spacing_mm=null] [-o max_patients=null]

Same as ``medcl data check amos`` / ``medcl data prepare amos``; ``medcl data download amos``
fetches amos22.zip (about 24 GB, sha256 checked) and prepares it in one step. The logic lives
in :mod:`medcl_lite.data.catalog` (:mod:`medcl_lite.data.catalog.abdomen`).
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("amos", sys.argv[1:]))
