"""Check and prepare MIMIC-CXR-JPG temporal pretraining pool (credentialed PhysioNet access).

    python data_scripts/prepare_mimic_cxr.py                      # where to get it, expected layout
    python data_scripts/prepare_mimic_cxr.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_mimic_cxr.py --source DIR [--out DIR] [--size 256] [--overwrite]
        [-o max_patients=1000] [-o allow_missing=true]

Same as ``medcl data check mimic-cxr`` / ``medcl data prepare mimic-cxr``; the logic lives in
:mod:`medcl_lite.data.catalog`.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("mimic-cxr", sys.argv[1:]))
