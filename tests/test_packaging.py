"""Packaging: environment.yml declares what pyproject.toml declares; the console script exists."""

import subprocess
import sys
import tomllib
from pathlib import Path

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
