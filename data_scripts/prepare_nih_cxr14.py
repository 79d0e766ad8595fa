"""Check and prepare NIH ChestX-ray14 temporal pretraining pool (manual download, 42 GB).

    python data_scripts/prepare_nih_cxr14.py                      # where to get it, expected layout
    python data_scripts/prepare_nih_cxr14.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_nih_cxr14.py --source DIR [--out DIR] [--size 256] [--overwrite]
        [-o max_patients=1000] [-o "views=[PA, AP]"] [-o allow_missing=true]

Same as ``medcl data check nih-cxr14`` / ``medcl data prepare nih-cxr14``; the logic lives in
:mod:`medcl_lite.data.catalog`.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("nih-cxr14", sys.argv[1:]))
