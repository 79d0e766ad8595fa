"""Verified downloads into a cache folder and safe extraction of zip / tar archives.

A :class:`RemoteFile` pins a download by sha256 (and size when known). :func:`fetch` downloads it
with pooch into a temporary file next to its final place, checks it, and only then renames it
into place, so the cache never holds a file that failed its checks. :func:`extract` validates
every archive member before extracting anything (no paths that leave the target, no links, no
devices), extracts into a temporary sibling folder, writes a ``.complete`` marker and renames the
folder into place. Both are idempotent: a verified file / complete folder is returned untouched.

The cache folder is :func:`data_home`: ``$MEDCL_DATA`` if set, else the user cache dir.
Leftover temporary files from an interrupted run are removed by the next call, so two
processes should not fetch or extract the same file into the same folder at the same time.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import pooch

MARKER = ".complete"
ENV_VAR = "MEDCL_DATA"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOG = logging.getLogger(__name__)


class ChecksumError(ValueError):
    """A file's sha256 or size differs from the pinned one."""


class UnsafeArchiveError(ValueError):
    """An archive member would escape the target folder or is not a plain file / folder."""


class DownloadError(OSError):
    """A download failed (network error, HTTP error status, unknown protocol)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download, pinned by its checksum.

    Attributes:
        name: file name in the cache folder (no folders), e.g. ``"NLM-MontgomeryCXRSet.zip"``.
        url: where to download it from (http, https, ftp or doi, as pooch supports).
        sha256: expected hex digest (an optional ``"sha256:"`` prefix is accepted); ``None`` means
            not pinned, which :func:`fetch` refuses unless asked (see there).
        size: expected size in bytes, checked when given.
    """

    name: str
    url: str
    sha256: str | None
    size: int | None = None


def data_home(path: str | Path | None = None) -> Path:
    """The data cache folder, created if missing.

    ``path`` if given, else ``$MEDCL_DATA`` if set and non-empty, else
    ``pooch.os_cache("medcl_lite")`` (e.g. ``~/.cache/medcl_lite`` on Linux).
    """
    if path is None:
        path = os.environ.get(ENV_VAR) or pooch.os_cache("medcl_lite")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"data folder {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha256sum(path: str | Path) -> str:
    """The sha256 hex digest of the file at ``path``, read in chunks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot compute the sha256 of {path}: no such file")
    return pooch.file_hash(str(path), alg="sha256")


def fetch(
    file: RemoteFile,
    folder: str | Path,
    *,
    progress: bool = True,
    allow_unpinned: bool = False,
) -> Path:
    """Download ``file`` into ``folder`` (created if missing) and return ``folder / file.name``.

    A file already there that matches its size and sha256 is returned without network access;
    one that does not is downloaded again. The download goes to a temporary file in ``folder``
    that is checked and then renamed into place; on any failure it is deleted.

    Unpinned files (``file.sha256`` is None) are refused unless ``allow_unpinned``; then the file
    is downloaded (or the one already there kept) and its measured sha256 is logged as a warning
    with how to pin it: it is never trusted silently.

    Raises:
        ValueError: unpinned without ``allow_unpinned``, malformed sha256, unsafe file name.
        ChecksumError: the downloaded size or sha256 differs from the pinned one.
        DownloadError: network or HTTP error (the message names the url).
    """
    _check_name(file)
    expected = _expected_sha256(file)
    if expected is None and not allow_unpinned:
        raise ValueError(
            f"{file.name} ({file.url}) has no pinned sha256: refusing to download an unverified"
            " file. Pass allow_unpinned=True to download it once and log its sha256 to pin."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file.name
    _remove_leftovers(folder, f".{file.name}.part-")
    if target.is_file():
        if expected is None:
            _report_unpinned(file, target, sha256sum(target), "kept the file already there")
            return target
        problem = _mismatch(file, target, expected)
        if problem is None:
            return target
        _LOG.warning("%s: %s; downloading it again", target, problem)
    tmp = folder / f".{file.name}.part-{uuid.uuid4().hex[:8]}"
    try:
        _download(file.url, tmp, progress)
        if expected is not None:
            problem = _mismatch(file, tmp, expected)
            if problem is not None:
                raise ChecksumError(
                    f"download of {file.name} from {file.url} failed its check: {problem}."
                    " The file was deleted; the server may have changed the file or the transfer"
                    " was corrupted. Try again; if the publisher changed the file, check the new"
                    " version before updating the pinned sha256."
                )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if expected is None:
        _report_unpinned(file, target, sha256sum(target), "downloaded it")
    return target


def _check_name(file: RemoteFile) -> None:
    name = file.name
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(
            f"RemoteFile.name {name!r} (url {file.url}) must be a plain file name: no folders,"
            " not empty and not starting with '.'"
        )


def _expected_sha256(file: RemoteFile) -> str | None:
    if file.sha256 is None:
        return None
    digest = file.sha256.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise ValueError(
            f"RemoteFile {file.name}: sha256 {file.sha256!r} is not 64 hexadecimal characters"
        )
    return digest


def _mismatch(file: RemoteFile, path: Path, expected: str) -> str | None:
    """What is wrong with ``path`` (size first, as it is cheap), or None when it matches."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        return f"size expected {file.size} bytes, got {size} bytes"
    digest = sha256sum(path)
    if digest != expected:
        return f"sha256 expected {expected}, got {digest}"
    return None


def _report_unpinned(file: RemoteFile, path: Path, digest: str, action: str) -> None:
    size = path.stat().st_size
    _LOG.warning(
        f"{file.name} is NOT verified (no pinned sha256); {action}: {path}. Its sha256 is"
        f" {digest} ({size} bytes). Check it against the publisher's checksum, then pin it:"
        f" RemoteFile(name={file.name!r}, url={file.url!r}, sha256={digest!r}, size={size})"
    )


def _download(url: str, path: Path, progress: bool) -> None:
    downloader = _downloader(url, progress)
    try:
        downloader(url, str(path), None)
    except Exception as error:  # requests / ftplib raise many types
        raise DownloadError(
            f"cannot download {url}: {type(error).__name__}: {error}. Check the address and"
            " your internet connection (nothing was kept)."
        ) from error


def _downloader(url: str, progress: bool):
    """pooch's downloader for the protocol of ``url`` (http(s), ftp or doi)."""
    protocol = url.split(":", 1)[0].lower() if ":" in url else ""
    kinds = {
        "http": pooch.HTTPDownloader,
        "https": pooch.HTTPDownloader,
        "ftp": pooch.FTPDownloader,
        "doi": pooch.DOIDownloader,
    }
    if protocol not in kinds:
        raise ValueError(f"cannot download {url!r}: unsupported protocol (use {sorted(kinds)})")
    return kinds[protocol](progressbar=progress)


def _remove_leftovers(folder: Path, prefix: str) -> None:
    """Delete temporary files / folders ``folder/prefix*`` left by an interrupted run."""
    for leftover in folder.glob(f"{_glob_escape(prefix)}*"):
        _LOG.info("removing leftover %s from an interrupted run", leftover)
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _glob_escape(text: str) -> str:
    """``text`` with glob special characters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def is_complete(folder: str | Path) -> bool:
    """Whether ``folder`` holds the completion marker written by :func:`extract`."""
    return (Path(folder) / MARKER).is_file()


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip or tar (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) archive.

    Every member is validated before anything is written: no ``..`` parts, no absolute or drive
    paths, no symlinks or hardlinks, no devices or fifos. Members are extracted into a temporary
    sibling of ``dest``; a ``.complete`` marker is written and the folder renamed to ``dest``.
    A complete ``dest`` is returned untouched (the archive may even be gone). An incomplete
    ``dest`` left by an interrupted run (holding only files from this archive) is redone.

    Raises:
        FileNotFoundError: ``archive`` missing (and ``dest`` not complete).
        ValueError: ``archive`` is neither a zip nor a tar archive.
        UnsafeArchiveError: a member fails validation (nothing is extracted).
        FileExistsError: ``dest`` exists, is incomplete and holds files not from ``archive``.
    """
    archive, dest = Path(archive), Path(dest)
    if is_complete(dest):
        return dest
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    members = _members(archive)
    if dest.exists():
        _check_partial(dest, archive, members)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest.parent, f".{dest.name}.tmp-")
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _extract_all(archive, tmp)
        (tmp / MARKER).write_text(f"extracted from {archive.name}\n", encoding="utf-8")
        if dest.exists():
            _LOG.warning("removing incomplete %s (interrupted extraction) and redoing it", dest)
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _members(archive: Path) -> set[str]:
    """Validate every member of ``archive``; return their normalised relative paths."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            entries = [(info.filename, _zip_kind(info)) for info in zf.infolist()]
    elif tarfile.is_tarfile(archive):
        try:
            with tarfile.open(archive, "r:*") as tf:
                entries = [(info.name, _tar_kind(info)) for info in tf.getmembers()]
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ValueError(f"cannot read tar archive {archive}: {error}") from error
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive (or it is corrupt)")
    paths = set()
    for name, kind in entries:
        parts = _safe_parts(archive, name)
        if kind not in ("file", "folder"):
            raise UnsafeArchiveError(
                f"archive {archive} member {name!r} is a {kind}: only plain files and folders"
                " are extracted"
            )
        if parts:
            paths.add("/".join(parts))
    return paths


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16  # unix mode when made on unix, else 0
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "special file (device, fifo or socket)"
    return "folder" if info.is_dir() else "file"


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.ischr() or info.isblk():
        return "device"
    if info.isfifo():
        return "fifo"
    if info.isdir():
        return "folder"
    return "file" if info.isreg() else f"tar entry of type {info.type!r}"


def _safe_parts(archive: Path, name: str) -> list[str]:
    """The path parts of member ``name``; raise when it is absolute or climbs out with ``..``."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"archive {archive} member {name!r} has a NUL in its name")
    windows = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or windows.drive or windows.root:
        raise UnsafeArchiveError(
            f"archive {archive} member {name!r} has an absolute or drive path: it would be"
            " written outside the target folder"
        )
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"archive {archive} member {name!r} contains '..': it could be written outside the"
            " target folder"
        )
    return parts


def _check_partial(dest: Path, archive: Path, members: set[str]) -> None:
    """Refuse to replace an incomplete ``dest`` holding anything not from ``archive``."""
    if not dest.is_dir():
        raise FileExistsError(f"extraction target {dest} exists and is not a folder")
    folders = {"/".join(m.split("/")[:i]) for m in members for i in range(1, m.count("/") + 1)}
    for path in dest.rglob("*"):
        relative = path.relative_to(dest).as_posix()
        if relative not in members and not (path.is_dir() and relative in folders):
            raise FileExistsError(
                f"extraction target {dest} exists without a {MARKER} marker and holds"
                f" {relative!r}, which is not in {archive}: remove it or choose another folder"
            )


def _extract_all(archive: Path, folder: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
        return
    with tarfile.open(archive, "r:*") as tf:
        if hasattr(tarfile, "data_filter"):  # Python 3.12+, 3.11.4+: a second line of defence
            tf.extractall(folder, filter="data")
        else:
            tf.extractall(folder)
