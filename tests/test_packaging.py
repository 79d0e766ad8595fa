"""Packaging: environment.yml declares what pyproject.toml declares; the console script exists;
the wheel runs away from the checkout; Colab installs from one documented source."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs |= set(extra)
    return {r.replace(" ", "") for r in reqs}


def _conda_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {r.replace(" ", "") for r in pip_section if not r.startswith("-e")}


def test_environment_yml_matches_pyproject():
    assert _conda_requirements() == _pyproject_requirements()


def test_torch_not_pinned_to_one_version():
    assert not any(r.startswith("torch==") for r in _pyproject_requirements())


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "medcl_lite.repro", "--help"], capture_output=True, text=True, check=True
    )
    assert "reproduce" in out.stdout and "data" in out.stdout


NOTEBOOK_SOURCES = sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "notebooks" / "solutions").glob("*.py"))


def test_every_notebook_installs_from_the_one_documented_source():
    from medcl_lite.colab import INSTALL_SOURCE, install_sources

    for path in NOTEBOOK_SOURCES:
        sources = install_sources(path.read_text())
        assert sources == [INSTALL_SOURCE], f"{path.name} installs from {sources} on Colab"
        ipynb = path.with_suffix(".ipynb").read_text()
        assert INSTALL_SOURCE in ipynb


def test_write_install_source_rewrites_every_call(tmp_path):
    from medcl_lite.colab import install_sources, write_install_source

    path = tmp_path / "nb.py"
    path.write_text((ROOT / "notebooks" / "00_quickstart.py").read_text())
    assert write_install_source([path], "medcl-lite==0.2") == [path]
    assert install_sources(path.read_text()) == ["medcl-lite==0.2"]
    assert write_install_source([path], "medcl-lite==0.2") == []  # nothing left to change


@pytest.mark.notebook
def test_wheel_installs_and_runs_away_from_the_checkout(tmp_path):
    """`python -m build` (sdist, then the wheel from it) -> a fresh venv elsewhere -> the CLI,
    the phantoms and the quickstart's smoke run, all from the installed copy (course included)."""
    import json
    import os
    import site

    subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    wheels, sdists = list((tmp_path / "dist").glob("*.whl")), list((tmp_path / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheels[0])],
                   check=True, env=clean)  # fmt: skip
    # then the dependencies (torch ...) from this environment; the package only from the wheel
    Path(purelib, "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "JUPYTER_DATA_DIR": str(tmp_path / "jupyter"),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "MEDCL_RUNS": str(tmp_path / "runs")}  # fmt: skip
    for variable in ("MEDCL_REFERENCE", "PYTHONPATH"):  # nothing may point back at the checkout
        env.pop(variable, None)

    def run(*args):
        return subprocess.run([*args], cwd=work, env=env, check=True, capture_output=True, text=True).stdout

    where = json.loads(run(str(python), "-c", "import json, medcl_lite; from medcl_lite.utils import course_dir;"
                           " print(json.dumps([medcl_lite.__file__, str(course_dir())]))"))  # fmt: skip
    assert all(p.startswith(purelib) for p in where), where  # not the checkout
    assert (Path(where[1]) / "00_quickstart.ipynb").is_file()
    assert (Path(where[1]) / "reference" / "00_quickstart" / "results.csv").is_file()
    assert "reproduce" in run(str(venv / "bin" / "medcl"), "--help")  # the console script
    run(str(python), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "python3")
    run(str(venv / "bin" / "medcl"), "data", "phantoms", "--out", "ph", "--kind", "xray", "--size", "32")
    assert (work / "ph").is_dir()
    smoke = Path(where[1]) / "params" / "quickstart" / "smoke.yaml"
    printed = run(str(venv / "bin" / "medcl"), "reproduce", "00_quickstart", "-f", str(smoke),
                  "--name", "wheel", "--no-progress")  # fmt: skip
    assert "random init" in printed and (work / "runs" / "wheel" / "results.csv").is_file()
