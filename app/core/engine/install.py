"""Installs a prebuilt llama-server from llama.cpp's releases into Siesta's data dir,
safely, and switches between installed engines.

Layout, under ``<data dir>/engines/``::

    b6000-cuda/          one engine: the whole unpacked directory (Linux builds load their
      engine.json        backends as shared libraries beside the binary), and what it is
    b5990-cpu/           the previous engine, kept for ``rollback``
    state.json           {"active": "b6000-cuda", "previous": "b5990-cpu"} (not a symlink: Windows)

An install downloads each asset (size and sha256 checked, cancellable), unpacks it into a
staging directory beside the engines (refusing absolute paths, ``..``, links out of it and
anything written through a link),
runs ``llama-server --version``, moves the directory into place and only then rewrites
``state.json``: a failure at any step leaves the active engine as it was. Engines other than
the active and the previous one are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # httpx costs 7 MB and 30 ms: imported when a download starts
    import httpx


from app.core.config.atomic_write import write_text_atomic
from app.core.engine.release import (
    DEFAULT_TAG,
    Asset,
    Choice,
    Gpu,
    NoBuild,
    Platform,
    ReleaseError,
    current_platform,
    detect_backend,
    expected_digest,
    fetch_release,
    pick_assets,
    source_build_command,
    tag_number,
)
from app.core.spawn import child_env, child_options

__all__ = [
    "InstallError", "Cancelled", "InstalledEngine", "engines_dir", "active_binary", "installed",
    "install", "update", "rollback", "safe_extract", "download", "Result", "ReleaseError", "deactivate",
]

Progress = Callable[[int, int, str], None]  # (bytes done, bytes total, what)
STATE = "state.json"
META = "engine.json"
SMOKE_TIMEOUT = 30.0
CHUNK = 1 << 16


class InstallError(Exception):
    """The install was refused or failed; the active engine is untouched."""


class Cancelled(InstallError):
    """The user cancelled the install."""


@dataclass(frozen=True)
class InstalledEngine:
    name: str  # "b6000-cuda"
    tag: str
    backend: str
    version: str  # what --version said at install time
    binary: Path
    active: bool
    previous: bool


def engines_dir(data_dir: Path) -> Path:
    return data_dir / "engines"


# ---- state ------------------------------------------------------------------------------

def _read_state(root: Path) -> dict[str, str | None]:
    try:
        data = json.loads((root / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"active": None, "previous": None}
    if not isinstance(data, dict):
        return {"active": None, "previous": None}
    return {key: data.get(key) if isinstance(data.get(key), str) else None for key in ("active", "previous")}


def _write_state(root: Path, active: str | None, previous: str | None) -> None:
    write_text_atomic(root / STATE, json.dumps({"active": active, "previous": previous}, indent=2) + "\n")


def _meta(engine: Path) -> dict[str, str] | None:
    try:
        data = json.loads((engine / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("binary"), str) else None


def _engine_binary(engine: Path) -> Path | None:
    meta = _meta(engine)
    if meta is None:
        return None
    binary = (engine / meta["binary"]).resolve()
    return binary if binary.is_relative_to(engine.resolve()) and binary.is_file() else None


def active_binary(data_dir: Path) -> Path | None:
    """The active installed engine's llama-server, or None (no engine, or a broken one)."""
    root = engines_dir(data_dir)
    active = _read_state(root)["active"]
    if not active or "/" in active or "\\" in active or active.startswith("."):
        return None
    return _engine_binary(root / active)


def installed(data_dir: Path) -> list[InstalledEngine]:
    """Every installed engine, the active one first, then the previous one."""
    root = engines_dir(data_dir)
    state = _read_state(root)
    out = []
    for engine in sorted(root.iterdir()) if root.is_dir() else []:
        meta = _meta(engine) if engine.is_dir() and not engine.name.startswith(".") else None
        binary = _engine_binary(engine) if meta else None
        if meta is None or binary is None:
            continue
        out.append(InstalledEngine(engine.name, str(meta.get("tag", "?")), str(meta.get("backend", "?")),
                                   str(meta.get("version", "?")), binary, engine.name == state["active"],
                                   engine.name == state["previous"]))
    return sorted(out, key=lambda e: (not e.active, not e.previous, e.name))


def _prune(root: Path) -> None:
    state = _read_state(root)
    keep = {state["active"], state["previous"]}
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


# ---- download ---------------------------------------------------------------------------

def download(client: httpx.Client, asset: Asset, dest: Path, sha256: str | None, *,
             progress: Progress | None = None, cancel: threading.Event | None = None) -> None:
    """Downloads ``asset`` to ``dest``, checking its size and (unless None) its sha256."""
    import httpx

    digest = hashlib.sha256()
    done = 0
    try:
        with client.stream("GET", asset.url, follow_redirects=True) as response, dest.open("wb") as out:
            if response.status_code != 200:
                raise InstallError(f"{asset.name}: HTTP {response.status_code} from {asset.url}")
            for chunk in response.iter_bytes(CHUNK):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if done > asset.size:
                    raise InstallError(f"{asset.name}: more than the {asset.size} bytes the release lists")
                if progress:
                    progress(done, asset.size, asset.name)
    except httpx.HTTPError as exc:
        raise InstallError(f"{asset.name}: download failed: {exc}") from None
    if done != asset.size:
        raise InstallError(f"{asset.name}: got {done} bytes, the release lists {asset.size}")
    if sha256 is not None and digest.hexdigest() != sha256:
        raise InstallError(f"{asset.name}: sha256 {digest.hexdigest()} is not the expected {sha256}")


# ---- unpacking --------------------------------------------------------------------------

def _inside(name: str, what: str) -> PurePosixPath:
    """``name`` as a relative path with no ``..``; InstallError otherwise."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise InstallError(f"{what}: refused: absolute path {name!r}")
    if ".." in path.parts:
        raise InstallError(f"{what}: refused: path {name!r} leaves the engine directory")
    return path


def _link_inside(member: PurePosixPath, target: str, what: str) -> None:
    """Refuses a link whose target, read as text, is absolute or climbs out of the archive
    (a tar's first check; a zip's links are checked again where they land, see
    :func:`_extract_zip`)."""
    if target.startswith(("/", "\\")) or (target[1:2] == ":" and target[:1].isalpha()):
        raise InstallError(f"{what}: refused: link {member} points to the absolute path {target!r}")
    depth = len(member.parent.parts)
    for part in PurePosixPath(target.replace("\\", "/")).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise InstallError(f"{what}: refused: link {member} -> {target!r} points out of the engine directory")


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpacks a .tar.gz or .zip into ``dest``, refusing the whole archive if any entry is
    absolute, climbs with ``..``, is a link out of ``dest``, is written through a link, or is
    a device."""
    what = archive.name
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _extract_zip(zf, dest, what)
        return
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                path = _inside(member.name, what)
                if member.issym():
                    _link_inside(path, member.linkname, what)
                elif member.islnk():
                    _inside(member.linkname, what)
                elif not (member.isfile() or member.isdir()):
                    raise InstallError(f"{what}: refused: {member.name!r} is a device or fifo")
            # the "data" filter also refuses what lands out of dest through a link on disk
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise InstallError(f"{what}: refused: {exc}") from None
    except tarfile.TarError as exc:
        raise InstallError(f"{what}: not a .tar.gz or .zip archive we can read: {exc}") from None


def _extract_zip(zf: zipfile.ZipFile, dest: Path, what: str) -> None:
    """A zip's entries into ``dest``, never written through a link: the directories and files
    first, each in a directory whose real path (:func:`os.path.realpath`, links on disk
    followed) is inside ``dest``; the links last, once nothing more is written, each checked
    where it really points once all of them exist (a link through another link, a chain).

    An entry under a link of the same archive (``x -> .``, then ``x/y``) is refused: nothing
    a release holds needs one, and it is how a zip writes where its names do not say. Of two
    entries with the same name, the later one wins, as in any unzip."""
    entries: dict[PurePosixPath, tuple[zipfile.ZipInfo, bool]] = {}
    for info in zf.infolist():
        path = _inside(info.filename, what)
        if not path.parts:
            continue  # "./": dest itself
        link = stat.S_ISLNK(info.external_attr >> 16)
        if link:
            _link_inside(path, _link_target(zf, info), what)
        entries.pop(path, None)
        entries[path] = (info, link)
    links = {path for path, (_info, link) in entries.items() if link}
    for path in entries:
        through = next((parent for parent in path.parents if parent in links), None)
        if through is not None:
            raise InstallError(f"{what}: refused: {path} is written through the link {through}")
    root = os.path.realpath(dest)
    for path, (info, link) in entries.items():
        if link:
            continue
        if info.is_dir():
            _real_dir(root, path.parts, what)
            continue
        target = os.path.join(_real_dir(root, path.parts[:-1], what), path.name)
        if os.path.islink(target):  # left by an earlier archive in dest: replaced, not written through
            os.unlink(target)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        if (info.external_attr >> 16) & 0o111:
            os.chmod(target, 0o755)
    made = []
    for path, (info, link) in entries.items():
        if not link:
            continue
        place = os.path.join(_real_dir(root, path.parts[:-1], what), path.name)
        if os.path.isdir(place) and not os.path.islink(place):
            raise InstallError(f"{what}: refused: link {path} would replace a directory")
        if os.path.lexists(place):
            os.unlink(place)
        os.symlink(_link_target(zf, info), place)
        made.append((path, place))
    for path, place in made:
        if not _is_within(root, os.path.realpath(place)):
            for _path, other in made:
                if os.path.islink(other):
                    os.unlink(other)
            raise InstallError(f"{what}: refused: link {path} -> {_link_target(zf, entries[path][0])!r} "
                               "points out of the engine directory")


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    return zf.read(info).decode("utf-8", "replace")


def _is_within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _real_dir(root: str, parts: tuple[str, ...], what: str) -> str:
    """The directory ``root/parts...``, made where missing, as a real path: each step is
    resolved (:func:`os.path.realpath`) and must stay inside ``root``."""
    current = root
    for part in parts:
        if part == ".":
            continue
        current = os.path.realpath(os.path.join(current, part))
        if not _is_within(root, current):
            raise InstallError(f"{what}: refused: {'/'.join(parts)} goes out of the engine directory through a link")
        if not os.path.isdir(current):
            os.mkdir(current)
    return current


def _find_binary(root: Path, name: str) -> Path:
    found = sorted((p for p in root.rglob(name) if p.is_file() and not p.is_symlink()),
                   key=lambda p: len(p.parts))
    if not found:
        raise InstallError(f"the archive holds no {name}")
    return found[0]


def _smoke_test(binary: Path) -> str:
    """What ``llama-server --version`` says, in one line; InstallError if it fails."""
    try:
        done = subprocess.run([str(binary), "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=SMOKE_TIMEOUT, cwd=binary.parent,
                              env=child_env(), **child_options())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"the unpacked llama-server does not run: {exc}") from None
    text = done.stdout.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    version = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("version:")),
                   lines[0][:120] if lines else "")
    if done.returncode != 0:
        tail = "\n".join(lines[-5:])
        raise InstallError(f"the unpacked llama-server failed `--version` (exit {done.returncode}):\n{tail}")
    return version or "(no version printed)"


# ---- install, update, rollback ----------------------------------------------------------

@dataclass(frozen=True)
class Result:
    engine: InstalledEngine
    choice: Choice | None
    reason: str  # why this backend
    messages: tuple[str, ...] = ()


def install(data_dir: Path, base_url: str, *, backend: str = "auto", tag: str = DEFAULT_TAG,
            no_verify: bool = False, progress: Progress | None = None, cancel: threading.Event | None = None,
            plat: Platform | None = None, gpus: Callable[[], list[Gpu]] | list[Gpu] | None = None,
            cuda_driver: str | None = None, client: httpx.Client | None = None) -> Result:
    """Installs llama.cpp's release ``tag`` (or ``latest``) for ``backend`` and makes it active.

    Raises :class:`~app.core.engine.release.Offline`, :class:`~app.core.engine.release.NoBuild`
    (the caller prints the source build), ReleaseError or InstallError; on any of them the
    active engine is untouched."""
    import httpx

    plat = plat or current_platform()
    reason = f"--backend {backend}"
    auto = backend == "auto"
    if auto:
        backend, reason = detect_backend(plat, gpus)
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0), follow_redirects=True)
    try:
        release = fetch_release(base_url, tag, client)
        messages: list[str] = []
        others = ("vulkan", "cpu") if backend in ("cuda", "rocm") else ("cpu",)
        fallbacks = [backend] + ([b for b in others if b != backend] if auto else [])
        for candidate in fallbacks:
            try:
                choice = pick_assets(release, candidate, plat, cuda_driver=cuda_driver, probe_driver=True)
                break
            except NoBuild as exc:
                if candidate == fallbacks[-1]:
                    raise
                messages.append(f"{exc}; to build it from source: {source_build_command(candidate)}")
        if choice.backend != backend:
            reason += f"; installing the {choice.backend} build instead"
        engine = _install_choice(data_dir, choice, plat, no_verify, progress, cancel, client)
        return Result(engine, choice, reason, tuple(messages) + choice.notes)
    finally:
        if own:
            client.close()


def _install_choice(data_dir: Path, choice: Choice, plat: Platform, no_verify: bool, progress: Progress | None,
                    cancel: threading.Event | None, client: httpx.Client) -> InstalledEngine:
    root = engines_dir(data_dir)
    if tag_number(choice.release.tag) < 0:  # the engine's folder name: never a path
        raise InstallError(f"not a llama.cpp release tag: {choice.release.tag[:80]!r} (bNNNN): refused")
    name = f"{choice.release.tag}-{choice.backend}"
    if _read_state(root)["active"] == name and _engine_binary(root / name) is not None:
        return next(e for e in installed(data_dir) if e.name == name)  # already there: nothing to do
    digests = []
    for asset in choice.assets:
        sha, _source = expected_digest(choice.release.tag, asset)
        if sha is None and not no_verify:
            raise InstallError(f"{asset.name} has no sha256 digest, neither pinned in Siesta nor from the releases "
                               "API: refused (pass --no-verify to install it anyway)")
        digests.append(sha)
    root.mkdir(parents=True, exist_ok=True)
    state = _read_state(root)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
    try:
        unpacked = staging / "engine"
        unpacked.mkdir()
        archives = []
        for asset, sha in zip(choice.assets, digests):
            archive = staging / ("download-" + asset.name.replace("/", "_"))
            download(client, asset, archive, sha, progress=progress, cancel=cancel)
            archives.append(archive)
        safe_extract(archives[0], unpacked)
        binary = _find_binary(unpacked, "llama-server.exe" if plat.system == "windows" else "llama-server")
        for archive in archives[1:]:  # the CUDA runtime goes beside the binary
            safe_extract(archive, binary.parent)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        binary.chmod(binary.stat().st_mode | 0o755)
        version = _smoke_test(binary)
        meta = {"tag": choice.release.tag, "backend": choice.backend, "version": version,
                "binary": binary.relative_to(unpacked).as_posix(), "assets": [a.name for a in choice.assets]}
        (unpacked / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        final = root / name
        if final.exists():  # a broken or previous copy of the same release
            if name == state["active"]:
                state["active"] = None  # broken: not kept as the previous one
            shutil.rmtree(final)
        os.replace(unpacked, final)
    except OSError as exc:
        raise InstallError(f"install failed: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    previous = state["active"] if state["active"] not in (None, name) else state["previous"]
    _write_state(root, name, previous if previous != name else None)
    _prune(root)
    return next(e for e in installed(data_dir) if e.name == name)


def update(data_dir: Path, base_url: str, **kwargs: object) -> Result | None:
    """Installs the latest release beside the active engine (same backend) and switches to
    it; None when the active engine is already that release."""
    import httpx

    current = next((e for e in installed(data_dir) if e.active), None)
    kwargs.setdefault("backend", current.backend if current else "auto")
    if current is not None:
        client = kwargs.get("client")
        latest = fetch_release(base_url, "latest", client if isinstance(client, httpx.Client) else None)
        if tag_number(latest.tag) <= tag_number(current.tag):
            return None
        kwargs["tag"] = latest.tag
    else:
        kwargs.setdefault("tag", "latest")
    return install(data_dir, base_url, **kwargs)  # type: ignore[arg-type]


def rollback(data_dir: Path) -> InstalledEngine:
    """Makes the previous engine active again (and the active one previous)."""
    root = engines_dir(data_dir)
    state = _read_state(root)
    previous = state["previous"]
    if not previous or _engine_binary(root / previous) is None:
        raise InstallError("there is no previous engine to go back to")
    _write_state(root, previous, state["active"])
    return next(e for e in installed(data_dir) if e.name == previous)


def deactivate(data_dir: Path) -> str | None:
    """No installed engine active any more (a source build takes over); the one that was
    becomes the previous one, for ``rollback``. Returns its name."""
    root = engines_dir(data_dir)
    state = _read_state(root)
    if state["active"] is None:
        return None
    _write_state(root, None, state["active"])
    _prune(root)
    return state["active"]

