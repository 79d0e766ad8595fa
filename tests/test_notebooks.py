"""Notebooks: .py and .ipynb pairs in sync, the conventions, and the quickstart through papermill.

nbval executes every notebook on its defaults (the smoke size on a CPU) in `make test`; the test
below runs the quickstart the way `make demo` does, through `medcl reproduce`, in smoke mode.
"""

from pathlib import Path

import jupytext
import pytest

from medcl_lite import repro

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_notebooks():
    assert SOURCES, "no notebooks/NN_name.py found"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_generated_from_py(source):
    """The committed .ipynb equals the py:percent source (regenerate with `make notebooks`)."""
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} missing: run `make notebooks`"
    from_py, committed = jupytext.read(source), jupytext.read(paired)
    assert _cells(committed) == _cells(from_py), f"{paired.name} differs from {source.name}: run `make notebooks`"
    assert committed.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{paired.name} has outputs"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_conventions(source):
    nb = jupytext.read(source)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one papermill parameters cell"
    assert "smoke" in params[0].source
    first = nb.cells[0].source
    assert first.startswith("# ") and "colab.research.google.com" in first and "arXiv" in first
    assert "%pip" not in source.read_text(), "install with subprocess behind a Colab guard, not %pip"


@pytest.mark.notebook
def test_quickstart_reproduce_smoke(tmp_path):
    out = repro.reproduce("00_quickstart", repro.load_params([str(NOTEBOOKS / "params/quickstart/smoke.yaml")]),
                          name="qs", runs_dir=tmp_path, progress=False)
    for name in ("00_quickstart.ipynb", "params.yaml", "results.md", "results.csv", "wall_time.txt"):
        assert (out / name).is_file(), name
    assert (out / "figures" / "dice_vs_labels.png").is_file()
    assert "random init" in (out / "results.md").read_text()
