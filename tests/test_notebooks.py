"""Notebooks: .py and .ipynb pairs in sync, the conventions, and the quickstart through papermill.

nbval executes every notebook on its defaults (the smoke size on a CPU) in `make test`; the test
below runs the quickstart the way `make demo` does, through `medcl reproduce`, in smoke mode.
"""

import re
from pathlib import Path

import jupytext
import pytest

from medcl_lite import repro

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
SOLUTIONS = sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]_*.py"))
SOURCES = CHAPTERS + SOLUTIONS  # every notebook follows the same conventions


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_notebooks():
    assert CHAPTERS, "no notebooks/NN_name.py found"


EXERCISE = re.compile(r"^# \*\*Exercise (\d\d\.\d) · (.+?)\*\* \*\(about (\d+) min on 2 cores\)\*", re.MULTILINE)
ANSWER = re.compile(r"^# ## Exercise (\d\d\.\d) · (.+)$", re.MULTILINE)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_exercises_with_worked_answers(chapter):
    """3-5 exercises per chapter (predict, run, explain), at least two that run in 5 minutes on 2 cores,
    each with its worked answer, under the same number and title, in notebooks/solutions/<chapter>.py."""
    text = chapter.read_text()
    exercises = EXERCISE.findall(text)
    assert 3 <= len(exercises) <= 5, f"{chapter.name}: {len(exercises)} exercises (3-5 expected)"
    assert [n for n, _, _ in exercises] == [f"{chapter.stem[:2]}.{i}" for i in range(1, len(exercises) + 1)]
    assert sum(int(minutes) <= 5 for _, _, minutes in exercises) >= 2, f"{chapter.name}: fewer than two 5-minute exercises"
    for word in ("Predict", "Run", "Explain"):
        assert text.count(f"*{word}*") >= len(exercises), f"{chapter.name}: every exercise asks to {word.lower()}"
    solution = NOTEBOOKS / "solutions" / chapter.name
    assert solution.is_file(), f"{solution} missing"
    answers = ANSWER.findall(solution.read_text())
    assert answers == [(n, title) for n, title, _ in exercises], f"{solution.name}: answers differ from the exercises"
    assert f"solutions/{chapter.stem}.ipynb" in text, f"{chapter.name} does not link its solutions"


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


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_parameters_cell_keeps_few_knobs_in_sight(source):
    """The parameters cell holds what a student changes; a paper reproduction's other settings sit
    in one collapsed ``reproduction`` cell right after it (REPRODUCTION), settable by name."""
    from medcl_lite import repro

    cells = jupytext.read(source).cells
    i = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    knobs = re.findall(r"^(\w+) = ", cells[i].source, flags=re.MULTILINE)
    assert len(knobs) <= 15, f"{len(knobs)} parameters in sight: {knobs}"
    keys = repro.reproduction_keys(source.with_suffix(".ipynb"))
    if len(knobs) + len(keys) > 15:  # a chapter with many settings parks them in REPRODUCTION
        nxt = cells[i + 1]
        assert "reproduction" in nxt.metadata.get("tags", []) and nxt.metadata["jupyter"]["source_hidden"]
        assert "reproduction" in knobs and not set(keys) & set(knobs)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter(source):
    """papermill skips a parameter line it cannot parse (e.g. a comment holding '='): none may be."""
    from papermill.inspection import inspect_notebook

    cell = next(c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", []))
    assigned = re.findall(r"^(\w+) = ", cell.source, flags=re.MULTILINE)
    parsed = set(inspect_notebook(str(source.with_suffix(".ipynb"))))
    assert assigned and set(assigned) == parsed, f"not parsed by papermill: {sorted(set(assigned) - parsed)}"


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_setup_obeys_thread_settings(source, tmp_path, monkeypatch):
    """The setup cells in a fresh kernel started as JupyterLab starts one (no OpenMP settings) with
    MEDCL_THREADS=1: torch gets 1 thread, and OpenMP waits passively because the setup imports
    medcl_lite before torch (tests/test_threads.py checks that OpenMP itself then reads PASSIVE)."""
    import nbformat
    from nbclient import NotebookClient

    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDCL_THREADS", "1")
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "print_env()" in c.source)
    nb.cells = nb.cells[: last + 1]
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert re.search(r"^cpu_threads\s+1$", printed, re.MULTILINE), printed
    assert re.search(r"^omp_wait_policy\s+PASSIVE$", printed, re.MULTILINE), printed


@pytest.mark.notebook
def test_quickstart_reproduce_smoke(tmp_path):
    """The quickstart through `medcl reproduce`, with the diagnosis run (nbval runs it without)."""
    import pandas as pd

    params = repro.load_params([str(NOTEBOOKS / "params/quickstart/smoke.yaml")], [("diagnose", "true")])
    out = repro.reproduce("00_quickstart", params, name="qs", runs_dir=tmp_path, progress=False)
    for name in ("00_quickstart.ipynb", "params.yaml", "results.md", "results.csv", "protocols.csv", "diagnosis.csv",
                 "diagnosis_rows.csv", "wall_time.txt"):  # fmt: skip
        assert (out / name).is_file(), name
    for figure in ("dice_vs_labels.png", "paired_by_site.png"):
        assert (out / "figures" / figure).is_file(), figure
    results = (out / "results.md").read_text()
    assert "random init" in results and "Per site" in results and "site A, frozen encoder" in results
    diagnosed = pd.read_csv(out / "diagnosis.csv").set_index("ablation")
    for row in ("reference", "pretrained with scanner views", "decoder first, then all (LP-FT)",
                "BN statistics per test site", "all labels"):  # fmt: skip
        assert row in diagnosed.index, row
    executed = (out / "00_quickstart.ipynb").read_text()
    assert "BN statistics per test site, site A" in executed  # the per-site BatchNorm reading, computed


PARAM_FILES = sorted(p for p in (NOTEBOOKS / "params").glob("*/*.yaml") if not p.stem.startswith("grid"))
GRID_FILES = sorted((NOTEBOOKS / "params").glob("*/grid*.yaml"))
def _paper_presets(chapter: str) -> list[Path]:
    """A chapter's real-data presets: not the notebook sizes, not grid files."""
    return [p for p in PARAM_FILES if p.parent.name == chapter and p.stem not in ("smoke", "cpu", "gpu")]


PAPER_OF = {"quickstart": "00_quickstart", "cl_tci": "01_cl_tci", "pcl": "02_pcl", "lrc": "03_lrc", "ideal": "04_ideal", "lrclr": "05_lrclr"}


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_parameter_files_name_only_known_parameters(path):
    """Every preset loads and names only parameters of its notebook's `parameters` cell."""
    params = repro.load_params([str(path)])
    assert params, f"{path} is empty"
    repro.check_params(repro.find_notebook(PAPER_OF[path.parent.name]), params)


def test_cl_tci_paper_presets_carry_the_paper_values():
    for path in sorted((NOTEBOOKS / "params" / "cl_tci").glob("transfer_*.yaml")):
        params = repro.load_params([str(path)])
        expected = {"pretrain_epochs": 500, "lr": 0.1, "warmup_epochs": 10, "queue_size": 3072,
                    "moco_momentum": 0.999, "temperature": 0.1, "proj_dim": 512, "n_folds": 5,
                    "ft_epochs": 200, "ft_batch": 10, "ft_lr": 1e-4, "ft_loss": "ce"}
        assert {k: params[k] for k in expected} == expected, path.name
        assert params["label_counts"] == [10, "all"]
        text = path.read_text()
        assert all(f"{k}:" in line and "#" in line for k in expected for line in text.splitlines()
                   if line.startswith(f"{k}:")), f"{path.name}: every paper value carries a comment"


def _assert_commented(path: Path, keys) -> None:
    lines = path.read_text().splitlines()
    for key in keys:
        line = next(line for line in lines if line.startswith(f"{key}:"))
        assert "#" in line, f"{path.name}: {key} carries no comment citing its source"


def test_pcl_paper_presets_carry_the_paper_values():
    theta = {"acdc_semi_patients": 0.35, "acdc_semi_volumes": 0.35, "chd_semi": 0.1,
             "transfer_mmwhs": 0.1, "transfer_hvsmr": 0.1}
    budgets = {"acdc_semi_patients": ("patients", [2, 6]), "acdc_semi_volumes": ("volumes", [1, 2, 8])}
    papers = _paper_presets("pcl")
    assert sorted(p.stem for p in papers) == sorted(theta)
    for path in papers:
        params = repro.load_params([str(path)])
        expected = {"threshold": theta[path.stem], "parts": 4, "pretrain_epochs": 300, "pretrain_batch": 32,
                    "lr": 0.1, "temperature": 0.1, "proj_dim": 512, "augment": "pcl_elastic", "n_folds": 5,
                    "ft_epochs": 100, "ft_batch": 10, "ft_lr": 5e-5, "ft_loss": "ce", "warmup_epochs": 0}
        assert {k: params[k] for k in expected} == expected, path.name
        assert {"SimCLR", "GCL", "PCL"} <= set(params["methods"]), path.name
        if path.stem in budgets:
            assert (params["label_unit"], params["label_counts"]) == budgets[path.stem]
        if path.stem.startswith(("chd", "transfer")):
            assert params["ft_augment"] == "none"  # the public code's CT fine-tuning
        _assert_commented(path, [*expected, "label_counts", "ft_augment"])


def test_lrc_real_data_presets_mark_every_unpublished_value():
    for path in _paper_presets("lrc"):
        params = repro.load_params([str(path)])
        assert {"MoCo", "MoCo + LRC", "Supervised", "Supervised + LRC"} <= set(params["methods"])
        assert params["pretrain_data"] != params["supervised_data"]  # supervised source: another set
        unpublished = ["region_weight", "regions_per_image", "region_min_pixels", "sp_scale", "sp_sigma", "sp_min_size"]
        _assert_commented(path, unpublished)
        text = {line.split(":")[0]: line for line in path.read_text().splitlines() if ":" in line}
        assert all("ours" in text[k] for k in unpublished), path.name


def test_ideal_real_data_presets_carry_the_paper_budgets_and_mark_our_values():
    budgets = {"acdc_semi": ("patients", [1, 2, 8, "all"]), "mmwhs_semi": ("volumes", [2, 4, 8, "all"])}
    papers = _paper_presets("ideal")
    assert sorted(p.stem for p in papers) == sorted(budgets)
    for path in papers:
        params = repro.load_params([str(path)])
        assert (params["label_unit"], params["label_counts"]) == budgets[path.stem]
        assert {"MoCo", "IDEAL dense"} <= set(params["methods"]) and params["dense_weight"] > 0
        ours = ["dense_per_image", "dense_temperature", "cps_threshold", "cps_rampup", "ft_steps", "pretrain_epochs"]
        _assert_commented(path, [*ours, "dense_level", "label_counts"])
        text = {line.split(":")[0]: line for line in path.read_text().splitlines() if ":" in line}
        assert all("ours" in text[k] for k in ours), path.name


@pytest.mark.parametrize("path", GRID_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_grid_files_expand_to_known_parameters(path):
    """Every grid file loads, and each of its cells names only parameters of its notebook."""
    from medcl_lite import grid

    cells = grid.expand_grid(grid.load_grid(path))
    assert cells and len({c.id for c in cells}) == len(cells)
