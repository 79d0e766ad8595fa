"""Shared fixtures: a tiny hand-made labelled SliceSet that trains in seconds."""

import matplotlib

matplotlib.use("Agg")

import medcl_lite  # noqa: E402  (before torch: passive OpenMP waiting, inherited by nbval's kernels)

medcl_lite.set_threads()  # $MEDCL_THREADS if set (e.g. 1 beside a long run), else one per core

import dataclasses  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import http.server  # noqa: E402
import threading  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from medcl_lite.data.sliceset import SliceSet  # noqa: E402


def single_image_meta(n: int, **columns) -> pd.DataFrame:
    """Meta of ``n`` 2-D images, one patient each (sample ``s{k}``, patient ``p{k}``), plus ``columns``."""
    base = {"sample_id": [f"s{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)], "site": "A",
            "time": 0, "volume_id": "", "slice_index": 0, "n_slices": 1, "depth": np.nan}  # fmt: skip
    return pd.DataFrame({**base, **columns})


def make_tiny_set(n_patients: int = 6, n_times: int = 3, size: int = 32, seed: int = 0) -> SliceSet:
    """Patients x time points of a disc (class 1) with a small blob (class 2), two sites."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks, rows = [], [], []
    for p in range(n_patients):
        cx = rng.uniform(size * 0.3, size * 0.6)
        for t in range(n_times):
            mask = (((xx - cx) ** 2 + (yy - size / 2) ** 2) < (size / 5) ** 2).astype(np.uint8)
            mask[((xx - cx - size / 4) ** 2 + (yy - size / 3) ** 2) < (size / 10) ** 2] = 2
            image = 0.3 + 0.4 * (mask > 0) + 0.05 * rng.standard_normal((size, size))
            images.append(np.clip(image, 0, 1).astype(np.float32))
            masks.append(mask)
            rows.append(
                {"sample_id": f"p{p}_t{t}", "patient_id": f"p{p}", "site": "AB"[p % 2], "time": t,
                 "volume_id": "", "slice_index": 0, "n_slices": 1, "depth": np.nan}
            )
    return SliceSet(np.stack(images), np.stack(masks), pd.DataFrame(rows), ("background", "disc", "blob"), "tiny")


@pytest.fixture
def tiny_set() -> SliceSet:
    return make_tiny_set()


class _Server:
    """Serve a folder on 127.0.0.1 and count GET requests."""

    def __init__(self, folder: Path):
        self.requests = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def serve_dataset(tmp_path, monkeypatch):
    """Factory: zip a folder, serve it on 127.0.0.1 and pin it as catalog entry ``name``'s file.

    ``serve_dataset(name, folder, file_name) -> (server, archive)``; servers stop after the test.
    """
    from medcl_lite.data import catalog
    from medcl_lite.data.download import RemoteFile

    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    servers = []

    def serve(name: str, folder: Path, file_name: str):
        web = tmp_path / f"web-{name}"
        web.mkdir()
        archive = web / file_name
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(folder).as_posix())
        server = _Server(web)
        servers.append(server)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        file = RemoteFile(file_name, f"{server.url}/{archive.name}", digest)
        monkeypatch.setitem(catalog.CATALOG, name, dataclasses.replace(catalog.CATALOG[name], files=(file,)))
        return server, archive

    yield serve
    for server in servers:
        server.close()


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def import_benchmark(name: str):
    """A script of ``benchmarks/`` as a module, imported as ``python benchmarks/<name>.py`` runs it
    (its folder first on ``sys.path``, for ``from _common import ...``); a generator for fixtures."""
    import importlib
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
