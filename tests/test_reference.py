"""Recorded reference runs: `medcl reproduce --record` keeps a run's tables and executed notebook
with how it was made; notebooks read them back (never retyped)."""

import json

import pandas as pd
import pytest
from test_repro import _write_notebook

from medcl_lite import reference, repro

BODY = (
    "from pathlib import Path\n"
    "Path(out_dir, 'results.csv').write_text(f'init,n_labelled,test_dice\\nrandom init,1,{x / 10}\\n')\n"
    "Path(out_dir, 'results.md').write_text('| x |\\n')\n"
    "Path(out_dir, 'scratch.txt').write_text('not a table')\n"
)


def test_record_keeps_tables_notebook_and_how_it_ran(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDCL_REFERENCE", str(tmp_path / "reference"))
    nb = tmp_path / "07_demo.ipynb"
    _write_notebook(nb, body=BODY)
    argv = ["reproduce", str(nb), "-p", "x", "3", "--name", "r", "--runs-dir", str(tmp_path / "runs"),
            "--no-progress", "--threads", "1", "--record"]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["medcl", *argv])
    assert repro.main(argv) == 0
    dest = tmp_path / "reference" / "07_demo"
    assert "recorded as the reference run" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["07_demo.ipynb", "results.csv", "results.md", "run.json"]
    run = json.loads((dest / "run.json").read_text())
    assert run["chapter"] == "07_demo" and run["threads"] == 1 and run["wall_time"].endswith(" s")
    assert run["command"].startswith("medcl reproduce ") and "--record" not in run["command"]
    assert run["commit"] != "" and "core" in run["machine"]
    table = reference.load_table("07_demo")
    assert table.equals(pd.DataFrame({"init": ["random init"], "n_labelled": ["1"], "test_dice": [0.3]}))
    assert reference.load_table("07_demo", "diagnosis.csv") is None
    assert "commit" in reference.caption("07_demo") and run["command"] in reference.caption("07_demo")
    assert "Note:" not in reference.caption("07_demo")
    (dest / "run.json").write_text(json.dumps({**run, "note": "two models were loaded"}))  # added by hand
    assert reference.caption("07_demo").endswith("Note: two models were loaded")
    # recording again replaces the whole folder: no table of the old run survives
    (dest / "diagnosis.csv").write_text("stale\n")
    assert repro.main(argv) == 0
    assert not (dest / "diagnosis.csv").exists() and not list((tmp_path / "reference").glob(".*"))
    # the commit is read when the run starts (the code it executed), and can be given
    other = reference.record(tmp_path / "runs" / "r", "07_demo", "cmd", dest_root=tmp_path / "other", commit="abc123")
    assert json.loads((other / "run.json").read_text())["commit"] == "abc123"
    assert reference.current_commit() != ""


def test_missing_reference_and_unfinished_runs_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDCL_REFERENCE", str(tmp_path))
    assert reference.load_table("00_quickstart") is None
    assert "no recorded reference run of 00_quickstart" in reference.caption("00_quickstart")
    with pytest.raises(FileNotFoundError, match="not a finished run of 00_quickstart"):
        reference.record(tmp_path, "00_quickstart", "medcl reproduce 00_quickstart")
    assert repro.main(["reproduce", "--grid", "g.yaml", "--record"]) == 2
    assert "--record" in capsys.readouterr().err


def test_the_repository_reference_folder_is_found_without_settings(monkeypatch):
    monkeypatch.delenv("MEDCL_REFERENCE", raising=False)
    assert reference.reference_root().parts[-2:] == ("notebooks", "reference")
