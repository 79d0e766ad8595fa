"""The course website (`make docs`): chapters with their recorded outputs, links that lead
somewhere, and pages that show their figures and tables in a real browser (headless Chromium)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("site_build", ROOT / "docs" / "site" / "build.py")
site_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(site_build)


def _chapter(folder: Path, name: str, code: list[str], text: str = "intro") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}\n{text}")] + [nbformat.v4.new_code_cell(c) for c in code]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    return folder / f"{name}.ipynb"


def _executed(folder: Path, name: str, code: list[str], text: str = "intro") -> None:
    path = _chapter(folder, name, code, text)
    nb = nbformat.read(path, as_version=4)
    injected = nbformat.v4.new_code_cell("x = 2")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(1, injected)
    for k, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.outputs = [nbformat.v4.new_output("stream", text=f"out {k}\n")]
    nbformat.write(nb, path)
    (folder / "run.json").write_text('{"commit": "abcdef1234567", "date": "2026-12-07", "machine": "2 cores"}')


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setattr(site_build, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(site_build, "REFERENCE", tmp_path / "notebooks" / "reference")
    return tmp_path / "notebooks"


def test_fresh_chapter_shows_todays_text_with_the_recorded_outputs(repo):
    _chapter(repo, "00_a", ["x = 1", "print(x)"], text="today's words")
    _executed(repo / "reference" / "00_a", "00_a", ["x = 1", "print(x)"], text="old words")
    nb, state, note = site_build.chapter_page("00_a")
    assert state == "fresh" and "commit abcdef1234" in note
    assert "today's words" in nb.cells[0].source and ":::{note}" in nb.cells[1].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.outputs[0]["text"] for c in code] == ["out 1\n", "out 2\n"]  # the injected cell's skipped


def test_stale_and_missing_chapters_say_so(repo):
    _chapter(repo, "01_b", ["x = 1", "print(x + 1)"])
    _executed(repo / "reference" / "01_b", "01_b", ["x = 1", "print(x)"])
    nb, state, _ = site_build.chapter_page("01_b")
    assert state == "stale" and "**Stale**" in nb.cells[1].source
    assert "print(x)" in [c.source for c in nb.cells]  # the run as it was, outputs included
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    _chapter(repo, "02_c", ["x = 1"])
    nb, state, note = site_build.chapter_page("02_c")
    assert state == "missing" and "No reference run" in note and ":::{warning}" in nb.cells[1].source


def test_broken_internal_links_are_found(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text('<p id="top"><a href="a/b.html#sec">ok</a> <a href="a/b.html#nope">x</a>'
                                         ' <a href="gone.html">y</a> <img src="a/pic.png">'
                                         ' <a href="https://example.org/z">ext</a> <a href="#top">self</a></p>')  # fmt: skip
    (tmp_path / "a" / "b.html").write_text('<h2 id="sec">S</h2><a href="../index.html#top">back</a>')
    assert site_build.broken_links(tmp_path) == [
        "index.html: a/b.html#nope (no such anchor)",
        "index.html: a/pic.png (no such file)",
        "index.html: gone.html (no such file)",
    ]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    states = site_build.build(out / "html", out / "src", strict=True)  # warnings are errors
    return out / "html", states


@pytest.mark.notebook
def test_site_builds_with_every_chapter_api_and_docs(built_site):
    html, states = built_site
    assert set(states) == set(site_build.chapters()) and len(states) >= 7
    for page in ("index.html", "methods.html", "design.html", "api.html", "solutions.html"):
        assert (html / page).is_file(), page
    assert (html / "api" / "medcl_lite.losses.html").is_file()
    assert "info_nce" in (html / "api" / "medcl_lite.losses.html").read_text()
    assert site_build.broken_links(html) == []


@pytest.mark.notebook
def test_chapter_pages_show_their_figures_and_tables_in_chromium(built_site):
    browser = _chromium()
    if browser is None:
        if os.environ.get("MEDCL_CI"):
            pytest.fail("CI must have Debian's chromium (.ci/run installs it)")
        pytest.skip("no chromium on this machine (apt install chromium)")
    html, states = built_site
    for chapter, state in states.items():
        page = (html / "chapters" / f"{chapter}.html").resolve()
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
        assert "<h1" in dom, chapter
        if state == "missing":
            assert "No reference run" in dom, chapter
            continue
        assert dom.count("<img") >= 2, f"{chapter}: its recorded figures are not on the page"
        assert "<table" in dom, f"{chapter}: its recorded tables are not on the page"


def test_make_docs_runs_the_builder():
    printed = subprocess.run(["make", "-n", "docs"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "docs/site/build.py" in printed  # the target exists and calls the builder
