"""Download the Montgomery County chest X-ray set (public, sha256 checked) and prepare it.

    python data_scripts/download_montgomery.py [--home DIR] [--size 256] [--overwrite]

writes ``HOME/raw/montgomery/`` (archive and its files) and ``HOME/prepared/montgomery-SIZE/``;
HOME defaults to ``$MEDCL_DATA`` or the user cache. Same as ``medcl data download montgomery``.
"""

from __future__ import annotations

import sys

from medcl_lite.repro import main

if __name__ == "__main__":
    sys.exit(main(["data", "download", "montgomery", *sys.argv[1:]]))
