"""`make lab`: JupyterLab on notebooks/ with this project's Python, started headless and read."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_make_lab_opens_notebooks_in_the_project_environment():
    printed = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert ".venv/bin/jupyter lab --notebook-dir=notebooks" in printed
    assert ("--allow-root" in printed) == (os.geteuid() == 0)


@pytest.mark.notebook
def test_jupyterlab_serves_a_chapter_headless(tmp_path):
    port, token = _free_port(), "medcl-test"
    root = ["--allow-root"] if os.geteuid() == 0 else []  # as `make lab` adds for root (containers)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--notebook-dir={ROOT / 'notebooks'}", *root],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                status, _ = _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        status, body = _get(f"{base}/api/contents/00_quickstart.ipynb?token={token}")
        chapter = json.loads(body)
        assert status == 200 and chapter["type"] == "notebook"
        assert chapter["content"]["cells"][0]["source"].startswith("# ")
        status, page = _get(f"{base}/lab/tree/00_quickstart.ipynb?token={token}")
        assert status == 200 and b"JupyterLab" in page
        specs = json.loads(_get(f"{base}/api/kernelspecs?token={token}")[1])
        python = specs["kernelspecs"]["python3"]["spec"]["argv"][0]
        # "python" in a kernel spec is started as the server's own interpreter (jupyter_client),
        # and the server runs on this environment's Python: the kernel is the project's
        assert python in ("python", "python3") or Path(python) == Path(sys.executable), python
    finally:
        server.terminate()
        server.wait(timeout=30)
