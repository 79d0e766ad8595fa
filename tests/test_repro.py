"""`medcl reproduce`: parameters, papermill execution into runs/<name>/, the printed table."""

import json
import os
import re

import nbformat
import pytest

from medcl_lite import repro


def _write_notebook(
    path,
    body="from pathlib import Path\nPath(out_dir, 'results.md').write_text(f'| x |\\n|---|\\n| {x * 2} |\\n')",
    parameters="x = 1\nout_dir = ''",
):
    """A two-cell notebook: a papermill ``parameters`` cell, then ``body``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_load_params_merges_files_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("x: 1\ny: [1, 2]\n")
    (tmp_path / "b.yaml").write_text("x: 2\n")
    params = repro.load_params([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")], [("y", "[3, all]"), ("z", "true")])
    assert params == {"x": 2, "y": [3, "all"], "z": True}
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        repro.load_params([str(tmp_path / "missing.yaml")])


def test_reproduce_runs_notebook_into_run_folder(tmp_path, capsys):
    nb = tmp_path / "demo_nb.ipynb"
    _write_notebook(nb)
    (tmp_path / "p.yaml").write_text("x: 21\n")
    code = repro.main(["reproduce", str(nb), "-f", str(tmp_path / "p.yaml"), "--name", "r1",
                       "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 0
    run = tmp_path / "runs" / "r1"
    assert (run / "demo_nb.ipynb").is_file() and (run / "params.yaml").is_file()
    assert "| 42 |" in capsys.readouterr().out


def test_unknown_notebook_is_a_clear_error(capsys):
    assert repro.main(["reproduce", "99_nothing"]) == 2
    assert "99_nothing" in capsys.readouterr().err


def test_unknown_parameter_fails_before_running(tmp_path, capsys):
    nb = tmp_path / "demo_nb.ipynb"
    _write_notebook(nb)
    code = repro.main(["reproduce", str(nb), "-p", "xx", "3", "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "'xx'" in err and "'x'" in err
    assert not (tmp_path / "runs").exists()


def test_data_list_and_phantoms(tmp_path, capsys):
    assert repro.main(["data", "list"]) == 0
    assert "xray" in capsys.readouterr().out
    assert repro.main(["data", "phantoms", "--out", str(tmp_path), "--kind", "xray", "--size", "32"]) == 0
    assert (tmp_path / "phantom_xray" / "manifest.csv").is_file()
    assert repro.main(["data", "phantoms", "--out", str(tmp_path), "--kind", "xray", "--size", "32"]) == 2


def test_data_scripts_check_and_prepare(capsys, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    scripts = sorted((Path(__file__).resolve().parents[1] / "data_scripts").glob("prepare_*.py"))
    assert len(scripts) >= 5
    for script in scripts:  # no arguments: where to get the data (exit code 0)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "http" in done.stdout, (script.name, done.stderr)
    assert repro.data_script("jsrt", ["--check", "--source", str(tmp_path)]) == 1  # empty folder
    err = capsys.readouterr().err
    assert err.startswith("error: jsrt") and str(tmp_path) in err and "right lung" in err


def test_kernel_gets_threads_and_passive_wait(tmp_path, monkeypatch):
    """`medcl reproduce --threads 1`: the kernel starts with OMP_WAIT_POLICY=PASSIVE (before torch)
    and MEDCL_THREADS=1, which the notebook's set_threads() obeys; this process's environment is
    left as it was."""
    for name in ("OMP_WAIT_POLICY", "MEDCL_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    body = (
        "import json, os\n"
        "seen = {k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'MEDCL_THREADS', 'OMP_NUM_THREADS')}\n"
        "import medcl_lite\n"
        "seen['threads'] = medcl_lite.set_threads()\n"
        "seen['policy'] = medcl_lite.print_env()['omp_wait_policy']\n"
        "open('threads.json', 'w').write(json.dumps(seen))\n"
    )
    _write_notebook(tmp_path / "threads_nb.ipynb", body, parameters="out_dir = ''")
    code = repro.main(["reproduce", str(tmp_path / "threads_nb.ipynb"), "--name", "t", "--threads", "1",
                       "--runs-dir", str(tmp_path / "runs"), "--no-progress"])  # fmt: skip
    assert code == 0
    seen = json.loads((tmp_path / "runs" / "t" / "threads.json").read_text())
    assert seen == {"OMP_WAIT_POLICY": "PASSIVE", "MEDCL_THREADS": "1", "OMP_NUM_THREADS": "1",
                    "threads": 1, "policy": "PASSIVE"}  # fmt: skip
    assert not {"OMP_WAIT_POLICY", "MEDCL_THREADS", "OMP_NUM_THREADS"} & set(os.environ)


def _write_chapter(path, reproduction="REPRODUCTION = dict(\n    lr=0.0,  # comment\n    folds=0,\n)"):
    """A chapter-shaped notebook: parameters cell, a ``reproduction`` cell, a body using both."""
    _write_notebook(
        path,
        parameters="x = 1\nout_dir = ''\nreproduction = {}",
        body="from pathlib import Path\nfrom medcl_lite.config import reproduction_settings\n"
        "repro = reproduction_settings(REPRODUCTION, reproduction)\n"
        "Path(out_dir, 'results.md').write_text(f'| {x} | {repro.lr} | {repro.folds} |\\n')",
    )
    nb = nbformat.read(path, as_version=4)
    cell = nbformat.v4.new_code_cell(reproduction)
    cell.metadata["tags"] = ["reproduction"]
    nb.cells.insert(1, cell)
    nbformat.write(nb, path)


def test_reproduction_settings_are_parameters_by_name(tmp_path, capsys):
    nb = tmp_path / "chapter.ipynb"
    _write_chapter(nb)
    assert repro.reproduction_keys(nb) == {"lr", "folds"}
    repro.check_params(nb, {"x": 2, "lr": 0.1})  # known: a reproduction setting by name
    with pytest.raises(ValueError, match="unknown parameter 'lrr'.*did you mean 'lr'"):
        repro.check_params(nb, {"lrr": 0.1})
    # By name (parameter files, -p) and nested both reach the notebook's `reproduction` mapping.
    assert repro.fold_reproduction(nb, {"x": 2, "lr": 0.1, "reproduction": {"folds": 3}}) == {
        "x": 2, "reproduction": {"folds": 3, "lr": 0.1}}
    assert repro.fold_reproduction(nb, {"x": 2}) == {"x": 2}
    with pytest.raises(ValueError, match="'lr' is given twice"):
        repro.fold_reproduction(nb, {"lr": 0.1, "reproduction": {"lr": 0.2}})
    code = repro.main(["reproduce", str(nb), "-p", "lr", "0.5", "-p", "folds", "4", "--name", "r",
                       "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 0
    assert "| 1 | 0.5 | 4 |" in capsys.readouterr().out
    # An ill-typed setting fails before the kernel starts, naming itself.
    code = repro.main(["reproduce", str(nb), "-p", "folds", "abc", "--name", "bad",
                       "--runs-dir", str(tmp_path / "runs"), "--no-progress"])  # fmt: skip
    assert code == 2 and not (tmp_path / "runs" / "bad").exists()
    assert "reproduction setting 'folds' must be int like its default 0, got 'abc' (str)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="chapter.ipynb reproduction: setting 'lr' must be float"):
        repro.check_params(nb, {"reproduction": {"lr": "fast"}})
    assert repro.check_params(nb, {"lr": 1, "reproduction": {"folds": 2}}) == {"lr": 1.0, "reproduction": {"folds": 2}}


TYPED = ("seed = 0\nlr = 0.001\nsmoke = None\npreset = 'auto'\nprogress = True\n"
         "counts = []\nreproduction = {}\nout_dir = ''")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("seed", "abc", "int like its default 0, got 'abc' (str)"),
        ("seed", 1.5, "int like its default 0, got 1.5 (float)"),
        ("seed", True, "int like its default 0, got True (bool)"),
        ("lr", "fast", "float like its default 0.001, got 'fast' (str)"),
        ("preset", 3, "str like its default 'auto', got 3 (int)"),
        ("progress", "yes please", "bool like its default True, got 'yes please' (str)"),
        ("counts", 4, "list like its default [], got 4 (int)"),
        ("reproduction", [1], "dict like its default {}, got [1] (list)"),
    ],
)
def test_ill_typed_parameters_fail_before_the_kernel(tmp_path, capsys, key, value, expected):
    nb = tmp_path / "typed.ipynb"
    _write_notebook(nb, parameters=TYPED)
    with pytest.raises(ValueError, match=f"typed.ipynb: parameter '{key}' must be {re.escape(expected)}"):
        repro.check_params(nb, {key: value})
    assert repro.main(["reproduce", str(nb), "-p", key, json.dumps(value), "--name", "x",
                       "--runs-dir", str(tmp_path / "runs")]) == 2  # fmt: skip
    assert f"parameter '{key}'" in capsys.readouterr().err and not (tmp_path / "runs" / "x").exists()


def test_well_typed_parameters_pass_and_are_coerced(tmp_path):
    nb = tmp_path / "typed.ipynb"
    _write_notebook(nb, parameters=TYPED)
    given = {"seed": 3, "lr": 1, "smoke": "anything", "preset": "cpu", "progress": False,
             "counts": [1, "all"], "reproduction": {"a": 1}}  # fmt: skip
    assert repro.check_params(nb, given) == {**given, "lr": 1.0}
    # YAML 1.1 reads 1e-4 as a string; -p and parameter files read it as the number it is
    (tmp_path / "p.yaml").write_text("lr: 5e-5\nseeds: [1e-3, 2]\n")
    assert repro.load_params([str(tmp_path / "p.yaml")], [("x", "1e-4"), ("name", "1e3x")]) == {
        "lr": 5e-5, "seeds": [1e-3, 2], "x": 1e-4, "name": "1e3x"}


def test_reproduction_cell_without_its_dict_is_an_error(tmp_path):
    nb = tmp_path / "chapter.ipynb"
    _write_chapter(nb, reproduction="SETTINGS = dict(lr=0.0)")
    with pytest.raises(ValueError, match="assigns no REPRODUCTION"):
        repro.reproduction_keys(nb)
