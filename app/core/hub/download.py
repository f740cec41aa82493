"""Siesta's own downloader for model files from the Hub: resumable across runs, verified,
into the cache layout ``huggingface_hub`` and llama.cpp's ``-hf`` share, so each file is
stored once and every tool finds it.

Layout under :func:`hub_cache_dir`: ``models--ORG--NAME/blobs/<sha256>`` holds the bytes,
``snapshots/<commit>/<file>`` is a relative symlink into ``blobs`` (where symlinks are not
allowed, as on Windows without the privilege, a hard link to the blob; only where neither
works, a copy, which the disk check counts), ``refs/main`` names the commit. While a file
comes in it is ``blobs/<sha256>.incomplete``; a later run sends ``Range: bytes=N-`` and
carries on from there (``huggingface_hub`` itself does not resume across runs). A ``206``
must start where asked (its ``Content-Range``), a ``200`` to a Range request means the
server ignored it and the file starts over. The sha256 the Hub gives is checked before the
file is renamed into ``blobs``: a mismatch is refused and the bad bytes removed, so a
partial or wrong file never sits where a complete one is expected. The same lock file as
``huggingface_hub`` (``.locks/models--ORG--NAME/<sha256>.lock``) keeps two downloads of one
file apart.

Redirects are followed here, not by httpx, so the token goes to the Hub's own host only and
never to the host a download is redirected to. Cancel (a ``threading.Event``) raises
:class:`DownloadCancelled` and keeps the partial file. Everything blocks; no Qt, no asyncio.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from app.core.config.sizes import format_bytes
from app.core.discovery import default_hf_hub_cache
from app.core.hub.client import (
    FileNotFound,
    GatedRepo,
    HubClient,
    HubError,
    HubFile,
    RepoNotFound,
    RevisionNotFound,
    gated_message,
)

__all__ = ["hub_cache_dir", "repo_dir", "snapshot_path", "partial_path", "blob_path", "is_cached",
           "download_file", "check_disk_space", "free_space", "links_work", "snapshot_copy_bytes",
           "DownloadCancelled", "DownloadFailed",
           "IntegrityError", "NotEnoughDiskSpace", "CHUNK", "RETRY_DELAYS"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_REDIRECTS = 10
RETRY_DELAYS = (1.0, 3.0, 10.0)  # waits before each try again; one more failure in a row gives up
PROGRESS_EVERY = 0.1  # seconds between progress calls
TIMEOUT = httpx.Timeout(30.0, connect=15.0)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

Progress = Callable[[int, int], None]


class DownloadFailed(HubError):
    """A download that could not finish; what is fetched so far is kept for the next run."""


class DownloadCancelled(DownloadFailed):
    """Cancelled by the user; the partial file is kept, and the next run resumes it."""

    def __init__(self, message: str, partial: Path | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class IntegrityError(HubError):
    """The bytes do not have the sha256 the Hub gives; they were removed."""


class NotEnoughDiskSpace(HubError):
    """Too little free space for the download; nothing was fetched."""

    def __init__(self, path: Path, needed: int, free: int, why: str = "") -> None:
        super().__init__(f"not enough free disk space in {path}: the download needs {format_bytes(needed)}"
                         f"{f' ({why})' if why else ''}, and {format_bytes(free)} is free. Free up "
                         f"{format_bytes(needed - free)} or more, or set HF_HUB_CACHE to a disk with room.")
        self.path, self.needed, self.free = path, needed, free


# --------------------------------------------------------------------------- the cache layout


def hub_cache_dir() -> Path:
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``
    (``$XDG_CACHE_HOME`` honoured, as ``huggingface_hub`` does)."""
    return default_hf_hub_cache()


def repo_dir(cache_dir: Path, repo: str) -> Path:
    return cache_dir / ("models--" + repo.replace("/", "--"))


def blob_path(cache_dir: Path, repo: str, file: HubFile) -> Path:
    return repo_dir(cache_dir, repo) / "blobs" / file.etag


def partial_path(cache_dir: Path, repo: str, file: HubFile) -> Path:
    return repo_dir(cache_dir, repo) / "blobs" / f"{file.etag}.incomplete"


def snapshot_path(cache_dir: Path, repo: str, commit: str, file: HubFile | str) -> Path:
    name = file if isinstance(file, str) else file.name
    return repo_dir(cache_dir, repo) / "snapshots" / commit / name


def is_cached(cache_dir: Path, repo: str, file: HubFile) -> bool:
    """Whether the complete file is in the cache: its blob, of the right size."""
    blob = blob_path(cache_dir, repo, file)
    return blob.is_file() and blob.stat().st_size == file.size


def _safe_path(text: str) -> bool:
    """A relative path that stays inside its folder."""
    return not text.startswith("/") and "\\" not in text and all(p not in ("", ".", "..") for p in text.split("/"))


def _check_names(file: HubFile, commit: str, revision: str) -> None:
    if not re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", file.etag):
        raise HubError(f"the Hub gave no usable sha256 for {file.name}")
    if not re.fullmatch(r"[0-9a-f]{40}", commit) or not _safe_path(revision):
        raise HubError(f"the Hub gave an unusable commit {commit!r} for revision {revision!r}")
    if not _safe_path(file.name):
        raise HubError(f"refusing a file name that leaves the snapshot folder: {file.name!r}")


# --------------------------------------------------------------------------- disk space


def free_space(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk_space(path: Path, needed: int, why: str = "") -> None:
    """NotEnoughDiskSpace, with the figures (and ``why``, what the figure counts), when
    ``path``'s disk has less than ``needed`` free."""
    if needed <= 0:
        return
    free = free_space(path)
    if free < needed:
        raise NotEnoughDiskSpace(Path(path), needed, free, why)


def links_work(folder: Path) -> bool:
    """Whether a snapshot entry in ``folder`` can point at its blob without a second copy:
    a symlink, else a hard link (on Windows a symlink needs a privilege most users lack, a
    hard link on NTFS none; FAT32 and exFAT have neither). Tried on an empty file of its
    own, removed after; a folder that cannot be written counts as linking (the download
    then says what is wrong)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".link-probe.{os.getpid()}.{threading.get_ident()}"
        probe.write_bytes(b"")
    except OSError:
        return True
    link = probe.with_name(probe.name + ".link")
    try:
        for make in (lambda: os.symlink(probe.name, link), lambda: os.link(probe, link)):
            try:
                make()
                return True
            except OSError:
                continue
        return False
    finally:
        for path in (link, probe):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


def snapshot_copy_bytes(cache_dir: Path, repo: str, commit: str, files: Iterable[HubFile]) -> int:
    """The bytes the snapshot entries of ``files`` will take beyond their blobs: 0 where they
    can be links (:func:`links_work`), else the size of each one not yet in place (a copy)."""
    missing = [f for f in files if not _snapshot_in_place(cache_dir, repo, commit, f)]
    if not missing or links_work(repo_dir(cache_dir, repo)):
        return 0
    return sum(f.size for f in missing)


# --------------------------------------------------------------------------- the download


def download_file(client: HubClient, repo: str, commit: str, file: HubFile, *,
                  progress: Progress | None = None, cancel: threading.Event | None = None,
                  cache_dir: Path | None = None, revision: str = "main") -> Path:
    """Fetches ``file`` of ``repo`` at ``commit`` into the cache and returns its snapshot path.

    A file already in the cache is not fetched again. ``progress(done, total)`` is called as
    bytes arrive (from a worker thread when the caller runs there).
    """
    cache_dir = hub_cache_dir() if cache_dir is None else Path(cache_dir)
    _check_names(file, commit, revision)
    blob = blob_path(cache_dir, repo, file)
    if not is_cached(cache_dir, repo, file):
        blob.parent.mkdir(parents=True, exist_ok=True)
        lock_file = cache_dir / ".locks" / repo_dir(cache_dir, repo).name / f"{file.etag}.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with _lock(lock_file, cancel, file.name):
            if not is_cached(cache_dir, repo, file):  # another process may have finished it
                _fetch(client, client.resolve_url(repo, commit, file.name), repo, file,
                       partial_path(cache_dir, repo, file), blob, progress, cancel)
    elif progress:
        progress(file.size, file.size)
    link = _link_snapshot(cache_dir, repo, commit, file)
    if revision and revision != commit:
        _write_ref(repo_dir(cache_dir, repo) / "refs" / revision, commit)
    return link


@contextmanager
def _lock(lock_file: Path, cancel: threading.Event | None, name: str) -> Iterator[None]:
    """The lock ``huggingface_hub`` takes for the same blob, so two downloads never share a file."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_file))
    while True:
        try:
            lock.acquire(timeout=0.5)
            break
        except Timeout:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"cancelled while waiting for another download of {name}") from None
            log.debug("waiting for another download of %s to finish", name)
    try:
        yield
    finally:
        lock.release()


def _new_hash(file: HubFile) -> Any:
    """sha256 for an LFS file; for a small file kept in git, the sha1 of its git blob."""
    if file.sha256:
        return hashlib.sha256()
    sha = hashlib.sha1()
    sha.update(f"blob {file.size}\0".encode())
    return sha


class _Retry(Exception):
    """A failure worth another try; ``restart``: the partial file is no good, start from zero."""

    def __init__(self, message: str, *, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart


def _fetch(client: HubClient, url: str, repo: str, file: HubFile, partial: Path, blob: Path,
           progress: Progress | None, cancel: threading.Event | None) -> None:
    """Fills ``partial`` until it holds the whole file, verifies it, renames it to ``blob``."""
    sha = _new_hash(file)
    done = 0
    if partial.exists() and partial.stat().st_size > file.size:
        partial.unlink()
    if partial.exists():  # resuming: the bytes so far go into the checksum first
        with partial.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                if cancel is not None and cancel.is_set():
                    raise DownloadCancelled(f"cancelled; the partial {file.name} is kept", partial)
                sha.update(chunk)
                done += len(chunk)
    failures = 0
    last_call = 0.0
    if progress:
        progress(done, file.size)

    def cancelled() -> DownloadCancelled:
        return DownloadCancelled(f"cancelled; {format_bytes(done)} of {format_bytes(file.size)} of {file.name} "
                                 "is kept for the next run", partial)

    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http, partial.open("ab") as out:
        while done < file.size:
            if cancel is not None and cancel.is_set():
                raise cancelled()
            before = done
            try:
                with _Following(client, http, url, repo, file, done) as response:
                    if response.status_code == 200 and done:
                        log.info("%s: the server ignored the Range request; starting over", file.name)
                        out.truncate(0)
                        sha, done = _new_hash(file), 0
                    elif response.status_code == 206:
                        _check_content_range(response, done, file)
                    for chunk in response.iter_bytes():
                        if cancel is not None and cancel.is_set():
                            out.flush()
                            raise cancelled()
                        if done + len(chunk) > file.size:
                            out.close()
                            partial.unlink(missing_ok=True)
                            raise IntegrityError(f"{file.name}: the server sent more than its {file.size} bytes; "
                                                 "the download was removed")
                        out.write(chunk)
                        sha.update(chunk)
                        done += len(chunk)
                        now = time.monotonic()
                        if progress and (now - last_call >= PROGRESS_EVERY or done == file.size):
                            last_call = now
                            progress(done, file.size)
                    out.flush()
                    if done < file.size:
                        raise _Retry(f"the connection ended after {format_bytes(done)}")
                continue
            except httpx.TransportError as exc:
                error: Exception = exc
            except _Retry as exc:
                error = exc
                if exc.restart:
                    out.truncate(0)
                    sha, done = _new_hash(file), 0
            out.flush()
            failures = 1 if done > before else failures + 1  # progress made: the count starts again
            if failures > len(RETRY_DELAYS):
                raise DownloadFailed(
                    f"downloading {file.name} failed: {error or type(error).__name__}. "
                    f"{format_bytes(done)} of {format_bytes(file.size)} is kept: run the same command "
                    "again to resume.") from error
            delay = RETRY_DELAYS[failures - 1]
            log.warning("%s: %s; trying again from %s in %.0f s", file.name, error or type(error).__name__,
                        format_bytes(done), delay)
            if cancel is None:
                time.sleep(delay)
            elif cancel.wait(delay):
                raise cancelled()
    got = sha.hexdigest()
    if got != file.etag.lower():
        partial.unlink(missing_ok=True)
        raise IntegrityError(f"{file.name} is damaged: its checksum is {got}, but the Hub says {file.etag}. "
                             "The bad download was removed; run the same command again to fetch it anew.")
    os.replace(partial, blob)
    if progress:
        progress(file.size, file.size)


class _Following:
    """GET ``url`` from ``offset`` (a context manager giving the streamed response),
    following redirects here so the token goes to the Hub's host only."""

    def __init__(self, client: HubClient, http: httpx.Client, url: str, repo: str, file: HubFile,
                 offset: int) -> None:
        self.client, self.http, self.url, self.repo, self.file, self.offset = client, http, url, repo, file, offset
        self.response: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            headers = self.client.headers_for(url)
            if self.offset:
                headers["Range"] = f"bytes={self.offset}-"
            response = self.http.send(self.http.build_request("GET", url, headers=headers), stream=True)
            if response.is_redirect and "location" in response.headers:
                response.close()
                url = urljoin(url, response.headers["location"])
                continue
            self.response = response
            if response.status_code in (200, 206):
                return response
            response.read()
            response.close()
            self._raise(response)
        raise DownloadFailed(f"{self.file.name}: more than {MAX_REDIRECTS} redirects")

    def __exit__(self, *exc: object) -> None:
        if self.response is not None:
            self.response.close()

    def _raise(self, response: httpx.Response) -> None:
        code = response.headers.get("x-error-code", "")
        status = response.status_code
        where = f"{self.repo}/{self.file.name}"
        if code == "GatedRepo":
            raise GatedRepo(gated_message(self.client.endpoint, self.repo, have_token=bool(self.client.token)))
        if code == "RepoNotFound" or (status == 401 and not code):
            raise RepoNotFound(f"no model repository {self.repo} on {self.client.endpoint}")
        if code == "RevisionNotFound":
            raise RevisionNotFound(f"{self.repo} has no such revision")
        if code == "EntryNotFound" or status == 404:
            raise FileNotFound(f"{where} is not on {self.client.endpoint}")
        if status == 416:
            raise _Retry(f"the server refused the range from byte {self.offset}", restart=True)
        message = response.headers.get("x-error-message") or response.text[:200].strip()
        text = f"{where}: the server answered {status}" + (f": {message}" if message else "")
        if status >= 500 or status in (408, 429):
            raise _Retry(text)
        raise HubError(text)


def _check_content_range(response: httpx.Response, offset: int, file: HubFile) -> None:
    """A 206 must hold this file's bytes from ``offset`` on; else start over from zero."""
    value = response.headers.get("content-range", "").strip()
    match = _CONTENT_RANGE.match(value)
    if not match or (match.group(3) != "*" and int(match.group(3)) != file.size):
        raise _Retry(f"a partial answer with Content-Range {value!r} does not fit the file", restart=True)
    if int(match.group(1)) != offset:
        raise _Retry(f"asked for the bytes from {offset}, the server sent them from {match.group(1)}",
                     restart=True)


# --------------------------------------------------------------------------- snapshot and ref


def _snapshot_in_place(cache_dir: Path, repo: str, commit: str, file: HubFile) -> bool:
    """Whether ``snapshots/<commit>/<file>`` already holds the file: a symlink to its blob,
    or a hard link or copy of the right size."""
    link = snapshot_path(cache_dir, repo, commit, file)
    try:
        return link.is_file() and link.stat().st_size == file.size and (
            not link.is_symlink() or link.resolve() == blob_path(cache_dir, repo, file).resolve())
    except OSError:
        return False


def _link_snapshot(cache_dir: Path, repo: str, commit: str, file: HubFile) -> Path:
    """``snapshots/<commit>/<file>`` as a relative symlink to the blob, as huggingface_hub
    makes it; where symlinks are not allowed (Windows without the privilege or Developer
    Mode: ERROR_PRIVILEGE_NOT_HELD) a hard link to the blob, which needs no privilege on
    NTFS and takes no second copy of the bytes; a copy only where neither works."""
    link = snapshot_path(cache_dir, repo, commit, file)
    blob = blob_path(cache_dir, repo, file)
    if _snapshot_in_place(cache_dir, repo, commit, file):
        return link
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(blob, link.parent)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp)
    except OSError:
        try:
            os.link(blob, tmp)
        except OSError:  # a disk without hard links either (FAT32, exFAT): keep a copy
            log.info("%s: neither a symlink nor a hard link to its blob could be made; copying it", link)
            shutil.copyfile(blob, tmp)
    os.replace(tmp, link)
    return link


def _write_ref(ref: Path, commit: str) -> None:
    """``refs/<revision>`` names the commit, as huggingface_hub writes it (no newline)."""
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit, encoding="utf-8")
    os.replace(tmp, ref)
