"""The project's documentation (``docs/*.md``) and the citations of it.

- No tracked text file cites documents that are not in the repository (the design notes the
  project started from).
- Every ``docs/<file>.md`` cited in the package, the notebooks, the parameter files, the
  benchmarks, the tests, the README and the docs themselves exists, and every section a citation
  names (a quoted name, ``docs/methods.md, "PCL"``, or a link anchor, ``methods.md#pcl--...``) is
  a heading of that file.
- Every ``medcl_lite.x.y`` named in backticks in ``docs/*.md`` imports.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Design notes that were never part of the repository; citing them leaves a reader stranded.
#: (Spelled as a pattern, so that this file does not cite them itself.)
UNAVAILABLE = re.compile(r"\b(?:METHODS|DESIGN)\.md\b")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg"}

#: Where citations of the docs are looked for.
CITING = [
    "medcl_lite/**/*.py",
    "notebooks/*.py",
    "notebooks/solutions/*.py",
    "notebooks/params/**/*.yaml",
    "notebooks/params/**/*.md",
    "benchmarks/**/*.py",
    "benchmarks/**/*.md",
    "tests/*.py",
    "README.md",
    "docs/*.md",
]

#: ``docs/methods.md, "PCL"`` or ``docs/design.md, "Data"`` (one or two quoted section names).
_CITATION = re.compile(
    r"docs/(?P<file>[\w-]+\.md)"
    r"(?:,\s*(?P<q1>[\"'])(?P<name1>[^\"'\n]+?)(?P=q1)"
    r"(?:\s+and\s+(?P<q2>[\"'])(?P<name2>[^\"'\n]+?)(?P=q2))?)?"
)
#: Markdown link targets ``](path.md)``, ``](path.md#anchor)`` or, in the same file, ``](#anchor)``.
_LINK = re.compile(r"\]\((?P<target>[^)\s#]+\.md)?(?:#(?P<anchor>[^)\s]+))?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_DOTTED = re.compile(r"`(medcl_lite(?:\.[A-Za-z_]\w*)+)")


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower-case, punctuation dropped (except ``-`` and ``_``),
    each space a ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    """The heading texts of a Markdown file, in order, outside fenced code blocks."""
    found, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append(match.group(2))
    return found


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of ``path`` (repeats get ``-1``, ``-2`` ...)."""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(path):
        slug = github_anchor(heading)
        result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return result


def section_names(path: Path) -> set[str]:
    """Names a citation may use for a section: the whole heading, or its part before " — "."""
    names = set()
    for heading in headings(path):
        names.add(heading)
        names.add(heading.split(" — ")[0].strip())
    return names


def citing_files() -> list[Path]:
    files = {p for pattern in CITING for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(p for p in files if p.resolve() != Path(__file__).resolve())


def citations(text: str) -> list[tuple[str, list[str]]]:
    """``(file, [section names])`` of every ``docs/<file>.md`` citation in ``text``."""
    return [
        (m["file"], [n for n in (m["name1"], m["name2"]) if n]) for m in _CITATION.finditer(text)
    ]


def citation_problems(path: Path) -> list[str]:
    """What is wrong with the citations of the docs in ``path`` (empty when nothing is)."""
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT).as_posix()
    problems = []
    for file, names in citations(text):
        doc = DOCS / file
        if not doc.is_file():
            problems.append(f"{where}: cites docs/{file}, which does not exist")
            continue
        for name in names:
            if name not in section_names(doc):
                problems.append(f'{where}: docs/{file} has no section "{name}"')
    for m in _LINK.finditer(text):
        if m["target"] is None and (m["anchor"] is None or path.suffix != ".md"):
            continue  # ``]()`` or not a Markdown file's own anchor
        target = path if m["target"] is None else (path.parent / m["target"]).resolve()
        shown = m["target"] or where
        if not target.is_file():
            problems.append(f"{where}: link to {shown}, which does not exist")
        elif m["anchor"] and m["anchor"] not in anchors(target):
            problems.append(f"{where}: {shown} has no heading with anchor #{m['anchor']}")
    return problems


def resolve(name: str):
    """Import ``name`` (``package.module.attr...``): the longest importable module, then getattr."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is None or not module_name.startswith(err.name):
                raise  # a missing dependency inside an existing module: a real error
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


# --------------------------------------------------------------------------------------------
# the checker itself
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("PCL — positional pairs", "pcl--positional-pairs"),
        ("IDEAL: headline Dice", "ideal-headline-dice"),
        ("Shared loss: SimCLR form", "shared-loss-simclr-form"),
        ("Protocol common to all chapters", "protocol-common-to-all-chapters"),
        ("CL-TCI: data", "cl-tci-data"),
        ("The one_idea (v2)", "the-one_idea-v2"),
    ],
)
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor


def test_citation_parsing():
    text = (
        'x (docs/design.md, "Data"; docs/methods.md, "PCL" and "LRC") y '
        "docs/methods.md, 'PCL: caveats' and docs/methods.md gives none"
    )
    assert citations(text) == [
        ("design.md", ["Data"]),
        ("methods.md", ["PCL", "LRC"]),
        ("methods.md", ["PCL: caveats"]),
        ("methods.md", []),
    ]


def test_bad_citations_are_found(tmp_path, monkeypatch):
    """A missing file, a missing section and a missing anchor are each reported."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "methods.md").write_text("# Methods\n\n## PCL — positional pairs\n\n### PCL: caveats\n")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cite = notebooks / "nb.py"
    cite.write_text(
        '# ok: docs/methods.md, "PCL", docs/methods.md, "PCL: caveats",\n'
        "# [docs/methods.md, PCL](../docs/methods.md#pcl--positional-pairs)\n"
        '# bad: docs/other.md, "PCL"; docs/methods.md, "LRC";\n'
        "# [x](../docs/methods.md#lrc--localized-region-contrast) [y](../docs/missing.md)\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "DOCS", docs)
    problems = citation_problems(cite)
    assert len(problems) == 5, problems  # missing.md twice: as a path and as a link
    assert any("docs/other.md" in p for p in problems)
    assert any('no section "LRC"' in p for p in problems)
    assert any("#lrc--localized-region-contrast" in p for p in problems)
    assert any("missing.md" in p for p in problems)


def test_resolve():
    from medcl_lite.losses import info_nce

    assert resolve("medcl_lite.losses.info_nce") is info_nce
    with pytest.raises(AttributeError):
        resolve("medcl_lite.losses.no_such_loss")
    with pytest.raises((ImportError, AttributeError)):
        resolve("medcl_lite.no_such_module.f")


# --------------------------------------------------------------------------------------------
# the repository
# --------------------------------------------------------------------------------------------
def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    paths = [ROOT / name for name in out.split("\0") if name]
    return [p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file()]


def test_no_citation_of_documents_outside_the_repository():
    files = _tracked_text_files()
    assert files, "git ls-files listed no text file"
    offenders = []
    for path in files:
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            if UNAVAILABLE.search(line):
                offenders.append(f"{path.relative_to(ROOT).as_posix()}:{number}: {line.strip()}")
    assert not offenders, "cites a document that is not in the repository:\n" + "\n".join(offenders)


def test_docs_exist_with_unique_headings():
    for name in ("methods.md", "design.md"):
        path = DOCS / name
        assert path.is_file(), f"docs/{name} is missing"
        slugs = [github_anchor(h) for h in headings(path)]
        repeated = sorted({s for s in slugs if slugs.count(s) > 1})
        assert not repeated, (
            f"docs/{name}: headings with the same anchor {repeated} (unstable anchors)"
        )


def test_citations_of_the_docs_resolve():
    files = citing_files()
    found = sum(len(citations(p.read_text(encoding="utf-8"))) for p in files)
    assert found >= 40, f"only {found} citations of docs/ found: is the pattern still right?"
    problems = [problem for path in files for problem in citation_problems(path)]
    assert not problems, "\n".join(problems)


def test_notebook_title_cells_link_to_the_docs():
    """Chapters 01-05 link their method's section of docs/methods.md (relative, from notebooks/)."""
    for path in sorted((ROOT / "notebooks").glob("0[1-5]_*.py")):
        head = path.read_text(encoding="utf-8")[:4000]
        assert "](../docs/methods.md#" in head, (
            f"{path.name}: no link to docs/methods.md in its title cell"
        )


def test_names_in_the_docs_import():
    names = sorted(
        {
            m[1]
            for doc in DOCS.glob("*.md")
            for m in _DOTTED.finditer(doc.read_text(encoding="utf-8"))
        }
    )
    assert len(names) >= 20, f"only {len(names)} medcl_lite names found in docs/"
    broken = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as err:
            broken.append(f"{name}: {type(err).__name__}: {err}")
    assert not broken, "names in docs/*.md that do not resolve:\n" + "\n".join(broken)
