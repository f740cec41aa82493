"""The llama-server Siesta runs: which one, whether it can run, what it says its version
is, and what building one needs. No Qt: the tray app's bridge and ``siesta engine`` both
call this.

* :func:`engine_status`: the binary loads would run now, whether it is an executable
  file, which flag, variable or file configured it, and when it is the active engine
  ``siesta engine install`` put there, that engine (its llama.cpp tag, backend and version)
  and the other installed ones (a few file checks; cheap). ``siesta engine info`` and the
  app's Settings both read it.
* :func:`llama_server_version` (async, for the GUI's loop) and
  :func:`llama_server_version_sync` (for the CLI): what ``llama-server --version`` says,
  in one line, with a timeout. Both share one cache for the whole process, keyed by the
  file's path, mtime and size, so a rebuilt binary is asked again.
* :func:`build_command` / :func:`build_env`: the build as a subprocess
  (``python -m app.core.engine.build``), which can be stopped; :func:`build_tools_missing`,
  :func:`gpu_choices` and :func:`gpu_toolkits` for choosing how to build.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.config.paths import engine_cache_dir
from app.core.engine import build as engine_build
from app.core.engine.install import InstalledEngine, active_binary, installed
from app.core.spawn import child_env, child_options

if TYPE_CHECKING:
    from app.core.config.paths import Paths
    from app.core.config.settings import LoadedSettings

__all__ = [
    "EngineStatus", "EngineVersion", "VERSION_TIMEOUT", "engine_status", "engine_dir", "find_llama_server",
    "source_build_binary", "version_line",
    "llama_server_version", "llama_server_version_sync", "build_command", "build_env",
    "build_tools_missing", "gpu_choices", "gpu_toolkits",
]

VERSION_TIMEOUT = 15.0
"""Longest wait for ``llama-server --version``."""

_VersionKey = tuple[str, int, int]  # (path, mtime_ns, size)
_versions: dict[_VersionKey, EngineVersion] = {}  # for the whole process
_pending: dict[tuple[asyncio.AbstractEventLoop, _VersionKey], asyncio.Future[EngineVersion]] = {}


@dataclass(frozen=True)
class EngineStatus:
    """Which llama-server Siesta would run, and whether it can."""

    path: Path | None
    usable: bool  # an existing file that may be executed
    configured_by: str | None  # "settings.toml", "--llama-server", "SIESTA_LLAMA_SERVER"; None: found by search
    engine: InstalledEngine | None = None  # the installed engine ``path`` belongs to, if it is one
    engines: tuple[InstalledEngine, ...] = ()  # every installed engine, the active one first

    @property
    def backend(self) -> str | None:
        """The installed engine's backend (``"cpu"``, ``"cuda"``...); None for any other llama-server."""
        return self.engine.backend if self.engine else None

    @property
    def tag(self) -> str | None:
        """The installed engine's llama.cpp release tag (``"b6000"``); None for any other llama-server."""
        return self.engine.tag if self.engine else None

    @property
    def installed_version(self) -> str | None:
        """What the installed engine's ``--version`` said when it was installed."""
        return self.engine.version if self.engine else None

    @property
    def origin(self) -> str:
        """Where the llama-server comes from, in words: ``"set by --llama-server"``,
        ``"installed engine b6000-cuda: llama.cpp b6000, backend cuda"``, or ``""`` (found by search)."""
        if self.configured_by:
            return f"set by {self.configured_by}"
        if self.engine is not None:
            return f"installed engine {self.engine.name}: llama.cpp {self.engine.tag}, backend {self.engine.backend}"
        return ""


@dataclass(frozen=True)
class EngineVersion:
    """What ``--version`` said, in one line, and whether it answered (exit 0 in time)."""

    text: str
    ok: bool

    def __str__(self) -> str:
        return self.text


def engine_dir(paths: Paths) -> Path:
    """Where an installed llama-server goes: Siesta's data dir, where loads look for it."""
    return paths.data_dir / "engine"


def source_build_binary(data_dir: Path) -> Path:
    """Where ``siesta engine install --from-source`` puts its llama-server (``.exe`` on Windows)."""
    return data_dir / "engine" / engine_build.binary_name()


def find_llama_server(configured: Path | None, data_dir: Path, cache_dir: Path) -> Path | None:
    """The llama-server to use: the setting, else the active engine installed by ``siesta
    engine install`` (``engines/state.json``), else Siesta's data dir ``engine/`` (the source
    build), else the build cache, else PATH."""
    if configured is not None:
        return configured.expanduser()
    active = active_binary(data_dir)
    name = engine_build.binary_name()  # llama-server.exe on Windows
    candidates = ([active] if active is not None else []) + [source_build_binary(data_dir)]
    if cache_dir.is_dir():
        candidates += sorted(cache_dir.glob(f"*/{name}"), reverse=True)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("llama-server")
    return Path(found) if found else None


def engine_status(paths: Paths, settings: LoadedSettings) -> EngineStatus:
    """The llama-server that loads would run now, found as the manager finds it, and the
    installed engine it is (when it is the active one ``siesta engine install`` put there,
    or a setting names that engine's binary)."""
    configured = settings.values.llama_server
    path = find_llama_server(configured, paths.data_dir, engine_cache_dir())
    usable = path is not None and path.is_file() and os.access(path, os.X_OK)
    configured_by = None
    if configured is not None:
        source = settings.sources.get("llama_server", "default")
        configured_by = source.split(" ", 1)[1] if " " in source else source
    engines = tuple(installed(paths.data_dir))
    mine = None
    if path is not None and usable:
        resolved = path.resolve()
        mine = next((e for e in engines if e.binary == resolved), None)  # the active one first
    return EngineStatus(path, usable, configured_by, mine, engines)


# ---- --version ------------------------------------------------------------------------

def version_line(output: str) -> str:
    """What ``llama-server --version`` printed, in one line: ``"0.5.0-dev (build 1, commit 0c1e570)"``."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("version:"):
            return line.split(":", 1)[1].strip()
    return lines[0][:120] if lines else "(no version printed)"


def _answer(output: bytes, returncode: int) -> EngineVersion:
    version = version_line(output.decode("utf-8", "replace"))
    if returncode == 0:
        return EngineVersion(version, True)
    return EngineVersion(f"{version} (--version failed: exit {returncode})", False)


def _cannot_run(exc: OSError) -> EngineVersion:
    return EngineVersion(f"cannot run it: {exc.strerror or exc}", False)


def _timed_out(timeout: float) -> EngineVersion:
    return EngineVersion(f"did not answer --version within {timeout:.0f} s", False)


def _key(path: Path) -> _VersionKey:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


async def llama_server_version(path: Path, timeout: float = VERSION_TIMEOUT) -> EngineVersion:
    """What ``path --version`` says, as an asyncio subprocess; cached while the file stays
    the same, and concurrent callers on one loop share one run."""
    try:
        key = _key(path)
    except OSError as exc:
        return _cannot_run(exc)
    if key in _versions:
        return _versions[key]
    loop = asyncio.get_running_loop()
    pending = _pending.get((loop, key))
    if pending is None:
        pending = _pending[(loop, key)] = asyncio.ensure_future(_run_version(path, timeout))
        pending.add_done_callback(lambda _f: _pending.pop((loop, key), None))
    version = await asyncio.shield(pending)
    _versions[key] = version
    return version


async def _run_version(path: Path, timeout: float) -> EngineVersion:
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path), "--version", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=child_env(), **child_options())
    except OSError as exc:
        return _cannot_run(exc)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        return _timed_out(timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return _answer(out, proc.returncode)


def llama_server_version_sync(path: Path, timeout: float = VERSION_TIMEOUT) -> EngineVersion:
    """:func:`llama_server_version` for code with no event loop (the CLI); same cache."""
    try:
        key = _key(path)
    except OSError as exc:
        return _cannot_run(exc)
    if key in _versions:
        return _versions[key]
    try:
        done = subprocess.run([str(path), "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, env=child_env(), **child_options())
    except OSError as exc:
        return _cannot_run(exc)
    except subprocess.TimeoutExpired:
        return _timed_out(timeout)
    version = _versions[key] = _answer(done.stdout, done.returncode)
    return version


# ---- building one ---------------------------------------------------------------------

def build_command(dest: Path, gpu: str) -> list[str]:
    """The build as a subprocess (so it can be stopped): it prints ``[ 42%] text`` lines
    to stderr and the installed binary's path to stdout."""
    return [sys.executable, "-m", "app.core.engine.build", "--dest", str(dest), "--gpu", gpu]


def build_env() -> dict[str, str]:
    """The build's environment: ours without Siesta's secrets, with this ``app`` package
    importable even when Siesta runs from a source checkout started from another folder."""
    env = child_env()
    if not getattr(sys, "frozen", False):
        root = str(Path(engine_build.__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def build_tools_missing() -> list[str]:
    """What the build needs and this computer lacks: ``cmake``, ``a C++ compiler``."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake")
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def gpu_choices() -> list[str]:
    """Every backend a build can target, the CPU first."""
    return ["cpu"] + [g for g in engine_build.GPU_FLAGS if g != "cpu"]


def gpu_toolkits() -> list[str]:
    """GPU toolkits whose compilers are installed (``cuda``, ``rocm``, ``vulkan``)."""
    return engine_build.detect_gpu_toolkits()
