"""Check and prepare CheXpert temporal pretraining pool (registration).

    python data_scripts/prepare_chexpert.py                      # where to get it, expected layout
    python data_scripts/prepare_chexpert.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_chexpert.py --source DIR [--out DIR] [--size 256] [--overwrite]
        [-o max_patients=1000] [-o "views=[PA, AP]"]

Same as ``medcl data check chexpert`` / ``medcl data prepare chexpert``; the logic lives in
:mod:`medcl_lite.data.catalog`.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("chexpert", sys.argv[1:]))
