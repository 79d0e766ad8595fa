"""Download the Indiana University chest X-ray collection with reports (OpenI) and prepare it.

    python data_scripts/download_iu_xray.py --allow-unpinned [--home DIR] [--size 256]
        [--overwrite]

writes ``HOME/raw/iu-xray/`` (NLMCXR_png.tgz, NLMCXR_reports.tgz and their files) and
``HOME/prepared/iu-xray-SIZE/`` (frontal images, ``report`` text, weak finding labels); HOME
defaults to ``$MEDCL_DATA`` or the user cache. OpenI publishes no checksum, so
``--allow-unpinned`` is needed and the measured sha256 values are logged. Same as
``medcl data download iu-xray``.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import main

if __name__ == "__main__":
    sys.exit(main(["data", "download", "iu-xray", *sys.argv[1:]]))
