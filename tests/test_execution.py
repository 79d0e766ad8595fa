"""`medcl reproduce` speaks: a line per section of the notebook, no kernel transport warning."""

import re
import sys

import nbformat
import pytest

from medcl_lite import repro
from medcl_lite.execution import section_of_cells


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1\nout_dir = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 09 · A chapter\nWhat it does."),
        params,
        nbformat.v4.new_markdown_cell("## 1 · The data\ntext\n### a subsection"),
        nbformat.v4.new_code_cell("y = 2 * x"),
        nbformat.v4.new_code_cell("z = y + 1"),
        nbformat.v4.new_markdown_cell("## 2 · Training"),
        nbformat.v4.new_code_cell("from pathlib import Path\nPath(out_dir, 'results.md').write_text(f'| {z} |')"),
    ]
    nbformat.write(nb, path)
    return nb


def test_section_of_cells_reads_the_last_heading_above_each_code_cell(tmp_path):
    nb = _notebook(tmp_path / "c.ipynb")
    assert section_of_cells(nb.cells) == {1: "09 · A chapter", 3: "1 · The data", 4: "1 · The data",
                                          6: "2 · Training"}  # fmt: skip


def test_reproduce_prints_sections_without_transport_warnings(tmp_path, capfd):
    _notebook(tmp_path / "c.ipynb")
    code = repro.main(["reproduce", str(tmp_path / "c.ipynb"), "-p", "x", "4", "--name", "speak",
                       "--runs-dir", str(tmp_path / "runs"), "--no-progress"])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 0 and "| 9 |" in out
    lines = [line for line in err.splitlines() if line.startswith("[speak ")]
    # papermill adds the injected-parameters cell: 5 code cells; one line per section entered
    assert [re.sub(r"\d\d:\d\d", "mm:ss", line) for line in lines] == [
        "[speak mm:ss] cell 1/5 · 09 · A chapter",
        "[speak mm:ss] cell 3/5 · 1 · The data",
        "[speak mm:ss] cell 5/5 · 2 · Training",
    ]
    if sys.platform != "win32":  # IPC sockets: nothing goes over TCP, nothing to warn about
        assert "without encryption" not in err and "WARNING" not in err, err


@pytest.mark.skipif(sys.platform == "win32", reason="IPC kernels are Unix-only")
def test_kernel_runs_over_ipc_sockets_that_are_removed(tmp_path, monkeypatch):
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    _notebook(tmp_path / "c.ipynb")
    nb = nbformat.read(tmp_path / "c.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "from ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\nprint(app.transport, app.ip)"))
    nbformat.write(nb, tmp_path / "c.ipynb")
    run = repro.reproduce(str(tmp_path / "c.ipynb"), {}, name="r", runs_dir=tmp_path / "runs", progress=False)
    printed = nbformat.read(run / "c.ipynb", as_version=4).cells[-1].outputs[0]["text"]
    transport, ip = printed.split()
    assert transport == "ipc" and ip.startswith(str(tmp_path / "tmp" / "medcl-kernel-"))
    assert list((tmp_path / "tmp").iterdir()) == []  # sockets and their folder removed


def test_a_long_section_prints_that_it_is_still_running(tmp_path, capfd):
    from pathlib import Path

    from medcl_lite.execution import execute

    nb = _notebook(tmp_path / "c.ipynb")
    nb.cells[4].source = "import time\ntime.sleep(2.5)\nz = y + 1"  # a long cell in section 1
    nbformat.write(nb, tmp_path / "c.ipynb")
    execute(tmp_path / "c.ipynb", tmp_path / "out.ipynb", {"out_dir": str(tmp_path)}, label="beat",
            progress=False, cwd=str(tmp_path), heartbeat=0.5)  # fmt: skip
    err = capfd.readouterr().err
    running = [line for line in err.splitlines() if line.endswith("· 1 · The data (running)")]
    assert running and all(line.startswith("[beat ") for line in running), err
    assert err.splitlines()[-1].endswith("· 2 · Training")  # the heartbeat stopped with the run
    assert Path(tmp_path / "results.md").read_text() == "| 3 |"
