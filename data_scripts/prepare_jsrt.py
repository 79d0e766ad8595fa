"""Check and prepare JSRT chest X-rays with the SCR lung masks (registration).

    python data_scripts/prepare_jsrt.py                      # where to get it, expected layout
    python data_scripts/prepare_jsrt.py --check --source DIR # is DIR complete?
    python data_scripts/prepare_jsrt.py --source DIR [--out DIR] [--size 256] [--overwrite]

Same as ``medcl data check jsrt`` / ``medcl data prepare jsrt``; the logic lives in
:mod:`medcl_lite.data.catalog`.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import data_script

if __name__ == "__main__":
    sys.exit(data_script("jsrt", sys.argv[1:]))
