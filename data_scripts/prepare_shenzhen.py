"""Check and prepare Shenzhen chest X-rays with the Stirenko et al. lung masks (images public, masks on Kaggle).

    python data_scripts/prepare_shenzhen.py                      # where to get it, expected layout
    python data_scripts/prepare_shenzhen.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_shenzhen.py --source DIR [--out DIR] [--size 256] [--overwrite]

Same as ``medcl data check shenzhen`` / ``medcl data prepare shenzhen``; the logic lives in
:mod:`medcl_lite.data.catalog`.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("shenzhen", sys.argv[1:]))
