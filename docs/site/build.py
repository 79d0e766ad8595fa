"""Build the course website: ``make docs`` -> ``build/site/index.html`` (static HTML, offline).

Sphinx with myst-nb renders, without executing anything:

- the README as the front page, ``docs/methods.md`` and ``docs/design.md``;
- every chapter *with the outputs of its recorded reference run*
  (``notebooks/reference/<chapter>/<chapter>.ipynb``, papermill's executed notebook). When only
  the text changed since the run, the page shows today's text with the recorded outputs; when
  the code changed (or no run was recorded), the page says so in a banner and the build lists it
  as **stale** (or **missing**);
- the worked solutions (without outputs) and the API reference from the docstrings.

The pages are staged in ``build/site-src/`` (links rewritten to the site's layout), then built
with warnings as errors. ``python docs/site/build.py --out build/site``; ``--report`` writes the
chapters' state (fresh / stale / missing) as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = NOTEBOOKS / "reference"
INJECTED = "injected-parameters"

#: Links in the repository's files -> the site's layout (stage root: index.md, methods.md,
#: design.md, chapters/, api/).
_ANCHORS = (r"(\]\([^)#\s]*\.ipynb)#([^)\s]+)\)", lambda m: f"{m[1]}#{m[2].lower()})")  # Jupyter -> myst
_README_LINKS = [(r"\]\(docs/", "]("), (r"\]\(notebooks/", "](chapters/")]
_CHAPTER_LINKS = [(r"\]\(\.\./docs/", "](../"), (r"\]\(\.\./README\.md", "](../index.md"), _ANCHORS]
_SOLUTION_LINKS = [(r"\]\(\.\./\.\./docs/", "](../../"), (r"\]\(\.\./\.\./README\.md", "](../../index.md"), _ANCHORS]
_DOC_LINKS = [(r"\]\(\.\./README\.md", "](index.md"), (r"\]\(\.\./notebooks/", "](chapters/")]


def chapters() -> list[str]:
    """The chapters, by their py:percent sources: ``00_quickstart`` ... ``06_...``."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _injected(cell) -> bool:
    """The cell papermill added with the run's parameters (not part of the chapter)."""
    return INJECTED in cell.metadata.get("tags", [])


def _code_cells(cells) -> list:
    return [c for c in cells if c.cell_type == "code" and not _injected(c)]


def _code(cells) -> list[str]:
    return [c.source for c in _code_cells(cells)]


def chapter_page(chapter: str) -> tuple[nbformat.NotebookNode, str, str]:
    """``(notebook to render, state, note)`` of one chapter.

    ``state`` is ``"fresh"`` (the recorded run executed today's code: today's text, recorded
    outputs), ``"stale"`` (the code changed since the run: the recorded notebook as it ran, with a
    banner) or ``"missing"`` (no recorded run: today's notebook without outputs, with a banner).
    """
    source = nbformat.read(NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    executed_path = REFERENCE / chapter / f"{chapter}.ipynb"
    if not executed_path.is_file():
        note = (f"No reference run of this chapter is recorded yet: the page shows its text and code"
                f" without outputs. Record one: `medcl reproduce {chapter} -f notebooks/params/... --record`.")  # fmt: skip
        return _with_banner(source, "missing", note), "missing", note
    executed = nbformat.read(executed_path, as_version=4)
    run = json.loads((REFERENCE / chapter / "run.json").read_text()) if (REFERENCE / chapter / "run.json").is_file() else {}
    when = f"commit {str(run.get('commit', '?'))[:10]}, {run.get('date', '?')}, {run.get('machine', '?')}"
    if _code(source.cells) == _code(executed.cells):
        outputs = iter(_code_cells(executed.cells))
        for cell in source.cells:
            if cell.cell_type == "code":
                done = next(outputs)
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
        note = f"The outputs below are those of the chapter's recorded reference run ({when})."
        return _with_banner(source, "fresh", note), "fresh", note
    executed.cells = [c for c in executed.cells if not _injected(c)]
    note = (f"**Stale**: the chapter's code has changed since its reference run ({when}); the page shows"
            " that run as it was. Record it again to bring the page up to date.")  # fmt: skip
    return _with_banner(executed, "stale", note), "stale", note


def _with_banner(nb: nbformat.NotebookNode, state: str, note: str) -> nbformat.NotebookNode:
    kind = "note" if state == "fresh" else "warning"
    banner = nbformat.v4.new_markdown_cell(f":::{{{kind}}}\n{note}\n:::")
    title = next((k for k, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
    nb.cells.insert(title + 1, banner)  # after the title cell: the page keeps its title
    return nb


def _rewrite(text: str, rules) -> str:
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text)
    return text


def _rewrite_notebook(nb: nbformat.NotebookNode, rules) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _rewrite(cell.source, rules)
    return nb


def stage(folder: Path) -> dict[str, str]:
    """Write the site's sources into ``folder``; return each chapter's state."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "chapters" / "solutions").mkdir(parents=True)
    shutil.copy(HERE / "conf.py", folder / "conf.py")
    states, notes = {}, {}
    for chapter in chapters():
        nb, states[chapter], notes[chapter] = chapter_page(chapter)
        nbformat.write(_rewrite_notebook(nb, _CHAPTER_LINKS), folder / "chapters" / f"{chapter}.ipynb")
        solution = NOTEBOOKS / "solutions" / f"{chapter}.ipynb"
        if solution.is_file():
            nb = nbformat.read(solution, as_version=4)
            nbformat.write(_rewrite_notebook(nb, _SOLUTION_LINKS),
                           folder / "chapters" / "solutions" / f"{chapter}.ipynb")  # fmt: skip
    for name in ("methods.md", "design.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        (folder / name).write_text(_rewrite(text, _DOC_LINKS), encoding="utf-8")
    readme = _rewrite((ROOT / "README.md").read_text(encoding="utf-8"), _README_LINKS)
    toc = ["", "```{toctree}", ":hidden:", ":caption: Chapters", "",
           *[f"chapters/{c}" for c in chapters()], "```", "",
           "```{toctree}", ":hidden:", ":caption: Reference", "", "methods", "design", "solutions", "api", "```", ""]  # fmt: skip
    (folder / "index.md").write_text(readme + "\n".join(toc), encoding="utf-8")
    solutions = ["# Worked answers to the exercises", "",
                 "Each chapter's exercises, answered and explained (run them to see the outputs).", "",
                 "```{toctree}", ":maxdepth: 1", "",
                 *[f"chapters/solutions/{c}" for c in chapters() if (NOTEBOOKS / "solutions" / f"{c}.ipynb").is_file()],
                 "```", ""]  # fmt: skip
    (folder / "solutions.md").write_text("\n".join(solutions), encoding="utf-8")
    api = ["# API reference", "", "Generated from the docstrings of the `medcl_lite` package.", "",
           "```{eval-rst}", ".. autosummary::", "   :toctree: api", "   :recursive:", "", "   medcl_lite", "```", ""]  # fmt: skip
    (folder / "api.md").write_text("\n".join(api), encoding="utf-8")
    (folder / "chapters.json").write_text(json.dumps({"states": states, "notes": notes}, indent=2))
    return states


class _Links(HTMLParser):
    """The ``href`` / ``src`` values and the ``id`` values of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)
            elif key == "id" and value:
                self.ids.add(value)


def broken_links(site: Path) -> list[str]:
    """Internal links of the built ``site`` whose file or ``#anchor`` does not exist."""
    pages = {}
    for page in site.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        pages[page.resolve()] = parser
    broken = []
    for page, parser in pages.items():
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(site.resolve())}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{page.relative_to(site.resolve())}: {link} (no such anchor)")
    return sorted(set(broken))


def build(out: Path, stage_dir: Path, strict: bool = True) -> dict[str, str]:
    """Stage and build the site into ``out``, then check its internal links; print each
    chapter's state and return the states.

    Raises:
        subprocess.CalledProcessError: Sphinx failed (with ``strict``: any warning).
        ValueError: internal links that lead nowhere (listed).
    """
    states = stage(stage_dir)
    for chapter, state in states.items():
        print(f"chapter {chapter}: {state}" + ("" if state == "fresh" else "  <- re-record its reference run"))
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "--keep-going", str(stage_dir), str(out)]
    if strict:
        command.insert(3, "-W")
    subprocess.run(command, check=True)
    broken = broken_links(out)
    if broken:
        raise ValueError("broken internal links:\n  " + "\n  ".join(broken[:50]))
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "site"), help="HTML folder")
    parser.add_argument("--stage", default=str(ROOT / "build" / "site-src"), help="staged sources")
    parser.add_argument("--no-strict", action="store_true", help="warnings do not fail the build")
    args = parser.parse_args(argv)
    try:
        build(Path(args.out), Path(args.stage), strict=not args.no_strict)
    except subprocess.CalledProcessError as error:
        print(f"the site build failed (sphinx exit {error.returncode}); see the warnings above", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"the site build failed: {error}", file=sys.stderr)
        return 1
    print(f"site: {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
