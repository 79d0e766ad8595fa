"""Check and prepare BTCV multi-organ abdominal CT (Synapse registration).

    python data_scripts/prepare_btcv.py                      # where to get it, expected layout
    python data_scripts/prepare_btcv.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_btcv.py --source DIR [--out DIR] [--size 256] [--overwrite]
        [-o classes=phantom|all] [-o spacing_mm=null] [-o max_patients=null]

Same as ``medcl data check btcv`` / ``medcl data prepare btcv``; the logic lives in
:mod:`medcl_lite.data.catalog` (:mod:`medcl_lite.data.catalog.abdomen`).
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("btcv", sys.argv[1:]))
