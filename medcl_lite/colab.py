"""Where a chapter installs medcl_lite from on Colab: one place for every notebook.

Each chapter's setup cell runs, on Colab only, ``pip install -q <INSTALL_SOURCE>``. The notebooks
cannot import this module before the package is installed, so the source is written into their
install cells; this constant is the one place it is decided, and ``python -m medcl_lite.colab``
writes it into every chapter and solution (``notebooks/*.py``; then ``make notebooks``). A test
fails when a notebook installs from anywhere else.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: pip's source of the package on Colab: the repository until medcl-lite is on PyPI, then its name.
INSTALL_SOURCE = "git+https://github.com/medcl-lite/medcl_lite"

#: The pip call of a setup cell: ``[sys.executable, "-m", "pip", "install", "-q", "<source>"]``.
_PIP_CALL = re.compile(r'(\[sys\.executable, "-m", "pip", "install", "-q", ")([^"]+)("\])')


def install_sources(text: str) -> list[str]:
    """The sources that the Colab install calls in a notebook's text install from."""
    return [m.group(2) for m in _PIP_CALL.finditer(text)]


def write_install_source(paths, source: str = INSTALL_SOURCE) -> list[Path]:
    """Set the install source of every Colab install call in ``paths``; return the files changed."""
    changed = []
    for path in map(Path, paths):
        text = path.read_text(encoding="utf-8")
        new = _PIP_CALL.sub(lambda m: f"{m.group(1)}{source}{m.group(3)}", text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m medcl_lite.colab [NOTEBOOK.py ...]
    from medcl_lite.utils import course_dir

    targets = sys.argv[1:] or sorted(course_dir().glob("*.py")) + sorted(course_dir().glob("solutions/*.py"))
    for path in write_install_source(targets):
        print(f"updated {path}")
    print(f"Colab installs from {INSTALL_SOURCE}; regenerate the .ipynb files with `make notebooks`")
