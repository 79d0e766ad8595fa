"""Tests of verified downloads (from a local HTTP server) and safe archive extraction."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import socket
import tarfile
import threading
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from medcl_lite.data import download
from medcl_lite.data.download import (
    MARKER,
    ChecksumError,
    DownloadError,
    RemoteFile,
    UnsafeArchiveError,
    data_home,
    extract,
    fetch,
    is_complete,
    sha256sum,
)

PAYLOAD = b"lung field " * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
TREE = {"a.txt": b"top", "scans/ct/b.bin": bytes(range(256)), "scans/readme.md": b"# r"}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.hits[self.path] += 1
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A loopback HTTP server: set ``server.files[path] = bytes``; ``server.hits`` counts GETs."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.hits = {}, Counter()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _remote(server, path="/scan.bin", body=PAYLOAD, **kwargs) -> RemoteFile:
    server.files[path] = body
    kwargs.setdefault("sha256", PAYLOAD_SHA)
    return RemoteFile(name=path.strip("/"), url=server.url + path, **kwargs)


def test_fetch_downloads_verifies_and_is_idempotent(server, tmp_path):
    remote = _remote(server, size=len(PAYLOAD))
    path = fetch(remote, tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / "scan.bin" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["scan.bin"]  # no temp file
    assert server.hits["/scan.bin"] == 1
    assert fetch(remote, tmp_path / "cache", progress=False) == path
    assert server.hits["/scan.bin"] == 1  # verified copy: no network
    assert sha256sum(path) == PAYLOAD_SHA


def test_fetch_accepts_prefixed_uppercase_hash(server, tmp_path):
    remote = _remote(server, sha256="sha256:" + PAYLOAD_SHA.upper())
    assert fetch(remote, tmp_path, progress=False).read_bytes() == PAYLOAD


def test_corrupted_download_raises_and_keeps_nothing(server, tmp_path):
    remote = _remote(server, body=PAYLOAD[:-1] + b"X")
    with pytest.raises(ChecksumError, match="scan.bin") as info:
        fetch(remote, tmp_path, progress=False)
    assert PAYLOAD_SHA in str(info.value) and remote.url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_raises(server, tmp_path):
    remote = _remote(server, size=len(PAYLOAD) + 1)
    with pytest.raises(ChecksumError, match=f"size expected {len(PAYLOAD) + 1} bytes, got"):
        fetch(remote, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_existing_file_is_replaced(server, tmp_path, caplog):
    remote = _remote(server)
    (tmp_path / "scan.bin").write_bytes(b"stale copy")
    with caplog.at_level(logging.WARNING, logger=download.__name__):
        path = fetch(remote, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and server.hits["/scan.bin"] == 1
    assert "downloading it again" in caplog.text


def test_leftover_part_file_is_removed(server, tmp_path):
    leftover = tmp_path / ".scan.bin.part-deadbeef"
    leftover.write_bytes(b"half")
    fetch(_remote(server), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.bin"]


def test_unpinned_refused_by_default(server, tmp_path):
    remote = _remote(server, sha256=None)
    with pytest.raises(ValueError, match="no pinned sha256.*allow_unpinned=True"):
        fetch(remote, tmp_path, progress=False)
    assert server.hits["/scan.bin"] == 0 and list(tmp_path.iterdir()) == []


def test_unpinned_allowed_reports_hash(server, tmp_path, caplog):
    remote = _remote(server, sha256=None)
    with caplog.at_level(logging.WARNING, logger=download.__name__):
        path = fetch(remote, tmp_path, progress=False, allow_unpinned=True)
    assert path.read_bytes() == PAYLOAD
    assert "NOT verified" in caplog.text and f"sha256={PAYLOAD_SHA!r}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=download.__name__):
        fetch(remote, tmp_path, progress=False, allow_unpinned=True)
    assert server.hits["/scan.bin"] == 1 and PAYLOAD_SHA in caplog.text  # kept, still reported


@pytest.mark.parametrize("bad", ["abc", "g" * 64])
def test_malformed_hash_refused(server, tmp_path, bad):
    with pytest.raises(ValueError, match="64 hexadecimal"):
        fetch(_remote(server, sha256=bad), tmp_path, progress=False)


@pytest.mark.parametrize("name", ["../up.bin", "sub/x.bin", "", ".hidden"])
def test_unsafe_file_name_refused(tmp_path, name):
    remote = RemoteFile(name=name, url="http://127.0.0.1:9/x", sha256=PAYLOAD_SHA)
    with pytest.raises(ValueError, match="plain file name"):
        fetch(remote, tmp_path / "cache", progress=False)


def test_http_404_names_url(server, tmp_path):
    remote = RemoteFile(name="gone.zip", url=server.url + "/gone.zip", sha256=PAYLOAD_SHA)
    with pytest.raises(DownloadError, match="/gone.zip") as info:
        fetch(remote, tmp_path, progress=False)
    assert "404" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_names_url(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/scan.bin"
    with pytest.raises(DownloadError, match=url):
        fetch(RemoteFile("scan.bin", url, PAYLOAD_SHA), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCL_DATA", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert data_home(tmp_path / "given") == tmp_path / "given" and (tmp_path / "given").is_dir()
    monkeypatch.delenv("MEDCL_DATA")
    monkeypatch.setattr(download.pooch, "os_cache", lambda project: tmp_path / "os" / project)
    assert data_home() == tmp_path / "os" / "medcl_lite"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        data_home(tmp_path / "file")


# ---------------------------------------------------------------- extraction


def _zip(path: Path, files: dict[str, bytes], infos=()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
        for info, body in infos:
            zf.writestr(info, body)
    return path


def _tar(path: Path, files: dict[str, bytes], infos=(), mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        for info in infos:
            tf.addfile(info)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MARKER
    }


@pytest.mark.parametrize(
    "name, mode",
    [("a.zip", None), ("a.tar", "w"), ("a.tar.gz", "w:gz"), ("a.tgz", "w:gz")]
    + [("a.tar.bz2", "w:bz2"), ("a.tar.xz", "w:xz")],
)
def test_extract_round_trip(tmp_path, name, mode):
    archive = (
        _zip(tmp_path / name, TREE) if mode is None else _tar(tmp_path / name, TREE, mode=mode)
    )
    dest = extract(archive, tmp_path / "out" / "data")
    assert dest == tmp_path / "out" / "data" and is_complete(dest)
    assert _tree(dest) == TREE
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data"]  # no temp folder left


def _assert_nothing_extracted(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # no temp folder either
    assert not list(tmp_path.rglob("evil*"))


def _symlink(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize(
    "member, build",
    [
        ("../evil.txt", lambda p, m: _zip(p.with_suffix(".zip"), {**TREE, m: b"x"})),
        ("../evil.txt", lambda p, m: _tar(p, {**TREE, m: b"x"})),
        ("scans/../../evil.txt", lambda p, m: _tar(p, {**TREE, m: b"x"})),
        ("ABSOLUTE", lambda p, m: _zip(p.with_suffix(".zip"), {**TREE, m: b"x"})),
        ("ABSOLUTE", lambda p, m: _tar(p, {**TREE, m: b"x"})),
        ("C:/evil.txt", lambda p, m: _zip(p.with_suffix(".zip"), {**TREE, m: b"x"})),
        ("evil_link", lambda p, m: _tar(p, TREE, [_symlink(m, "/etc/passwd")])),
        ("evil_hard", lambda p, m: _tar(p, TREE, [_symlink(m, "a.txt", tarfile.LNKTYPE)])),
        ("evil_fifo", lambda p, m: _tar(p, TREE, [_fifo(m)])),
    ],
)
def test_unsafe_archive_rejected(tmp_path, member, build):
    if member == "ABSOLUTE":
        member = str(tmp_path / "outside" / "evil.txt")
    (tmp_path / "src").mkdir()
    archive = build(tmp_path / "src" / "bad.tar.gz", member)
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "data"
    with pytest.raises(UnsafeArchiveError, match="member") as info:
        extract(archive, dest)
    assert repr(member) in str(info.value) and str(archive) in str(info.value)
    _assert_nothing_extracted(tmp_path, dest)


@pytest.fixture
def src(tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    return tmp_path / "src"


def test_validation_does_not_rely_on_tar_data_filter(tmp_path, src, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)  # as on Python < 3.11.4
    assert _tree(extract(_tar(src / "ok.tgz", TREE), tmp_path / "ok")) == TREE
    for n, (name, build) in enumerate(
        [
            ("../evil.txt", lambda m: _tar(src / "a.tgz", {m: b"x"})),
            ("evil_link", lambda m: _tar(src / "b.tgz", {}, [_symlink(m, "../../evil_target")])),
        ]
    ):
        with pytest.raises(UnsafeArchiveError, match=repr(name)):
            extract(build(name), tmp_path / f"out{n}" / "data")
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.glob("out*/*"))


def test_fetch_with_progress_bar(server, tmp_path, capsys):
    fetch(_remote(server), tmp_path, progress=True)
    assert "100%" in capsys.readouterr().err  # tqdm's bar, on stderr
    fetch(_remote(server, path="/quiet.bin"), tmp_path, progress=False)
    assert "100%" not in capsys.readouterr().err


def test_zip_symlink_rejected(tmp_path, src):
    info = zipfile.ZipInfo("evil_link")
    info.external_attr = 0o120777 << 16
    archive = _zip(src / "a.zip", TREE, [(info, "/etc/passwd")])
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchiveError, match="'evil_link' is a symlink"):
        extract(archive, tmp_path / "out" / "data")
    _assert_nothing_extracted(tmp_path, tmp_path / "out" / "data")


def test_extract_is_idempotent(tmp_path, src):
    archive = _zip(src / "a.zip", TREE)
    dest = extract(archive, tmp_path / "data")
    (dest / "note.txt").write_text("added later")
    archive.unlink()  # a complete dest does not need the archive any more
    assert extract(archive, tmp_path / "data") == dest
    assert (dest / "note.txt").read_text() == "added later"


def test_half_extracted_dest_is_redone(tmp_path, src):
    archive = _tar(src / "a.tar.gz", TREE)
    dest = tmp_path / "data"
    (dest / "scans" / "ct").mkdir(parents=True)
    (dest / "scans" / "ct" / "b.bin").write_bytes(b"trunc")  # crash mid-file, no marker
    (tmp_path / ".data.tmp-0badc0de").mkdir()  # and a crashed temporary folder
    (tmp_path / ".data.tmp-0badc0de" / "a.txt").write_bytes(b"to")
    assert not is_complete(dest)
    extract(archive, dest)
    assert is_complete(dest) and _tree(dest) == TREE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src"]


def test_foreign_dest_is_not_replaced(tmp_path, src):
    archive = _zip(src / "a.zip", TREE)
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "my_notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="my_notes.txt"):
        extract(archive, dest)
    assert (dest / "my_notes.txt").read_text() == "precious" and not is_complete(dest)


def test_not_an_archive(tmp_path, src):
    (src / "a.zip").write_bytes(b"this is not a zip")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        extract(src / "a.zip", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        extract(src / "missing.zip", tmp_path / "data")
    assert not (tmp_path / "data").exists()
