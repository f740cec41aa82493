"""The llama-server loads would run: its path, where it was found, its version, its backend and
the devices it sees, and the engines ``siesta engine install`` keeps.

The binary is found as the manager finds it (:func:`app.core.engine.locate.engine_status`);
its version is what ``llama-server --version`` says (cached, as Settings and ``siesta engine
info`` ask it), its devices what ``llama-server --list-devices`` lists. The backend of an
installed engine is what was recorded at install; for any other llama-server it is read off
those devices (``CUDA0`` -> CUDA; none listed: the CPU).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from app.core.config.paths import Paths, engine_cache_dir
from app.core.config.settings import LoadedSettings
from app.core.doctor.report import Item, found, missing, one
from app.core.engine import locate
from app.core.spawn import child_env, child_options

__all__ = ["engine_items", "found_by", "list_devices"]

_DEVICE = re.compile(r"^\s*(?P<id>[A-Za-z][A-Za-z_-]*?)(?P<n>\d+)\s*:\s*(?P<desc>.*)$")


def found_by(path: Path, status: locate.EngineStatus, paths: Paths, cache_dir: Path) -> str:
    """Where the llama-server in use was found, in words (the order of
    :func:`~app.core.engine.locate.find_llama_server`)."""
    if status.configured_by:
        return f"the llama_server setting ({status.configured_by})"
    if status.engine is not None and status.engine.active:
        return f"the active engine of `siesta engine install` ({paths.data_dir / 'engines' / 'state.json'})"
    if path == locate.source_build_binary(paths.data_dir):
        return f"the source build in Siesta's data dir ({paths.data_dir / 'engine'})"
    try:
        path.relative_to(cache_dir)
        return f"the build cache of scripts/build-llama-server.sh ({cache_dir})"
    except ValueError:
        return "PATH"


def list_devices(path: Path, timeout: float = locate.VERSION_TIMEOUT) -> tuple[list[str] | None, str]:
    """The devices ``path --list-devices`` lists (``["CUDA0: NVIDIA ...", ...]``, [] for none),
    and what went wrong when None."""
    try:
        done = subprocess.run([str(path), "--list-devices"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, env=child_env(), **child_options())
    except OSError as exc:
        return None, f"cannot run it: {exc.strerror or exc}"
    except subprocess.TimeoutExpired:
        return None, f"`--list-devices` did not answer within {timeout:.0f} s"
    out = done.stdout.decode("utf-8", "replace")
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower().startswith("available devices")), None)
    if done.returncode != 0 or start is None:
        last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
        return None, f"`--list-devices` failed (exit {done.returncode}: {last[:160]}); an older llama-server?"
    devices = []
    for line in lines[start + 1:]:
        if not line.startswith((" ", "\t")) or not line.strip():
            break
        if line.strip() != "(none)":
            devices.append(line.strip())
    return devices, ""


def _backends(devices: list[str]) -> list[str]:
    names = []
    for device in devices:
        match = _DEVICE.match(device.split(":", 1)[0] + ":")
        name = match["id"] if match else device.split(":", 1)[0]
        if name not in names:
            names.append(name)
    return names


def engine_items(paths: Paths, settings: LoadedSettings) -> Iterable[Item]:
    status = locate.engine_status(paths, settings)
    cache_dir = engine_cache_dir()
    if status.path is None:
        yield missing("path", "path", "none found: not set, no engine installed by `siesta engine install`, "
                      "no source build, nothing in the build cache or on PATH (`siesta engine install` gets one)",
                      "app.core.engine.locate.find_llama_server")
    elif not status.usable:
        yield missing("path", "path", f"{status.path} is not an executable file",
                      f"the llama_server setting ({status.configured_by})" if status.configured_by else None)
    if status.path is not None and status.usable:
        path = status.path
        yield found("path", "path", str(path), found_by(path, status, paths, cache_dir))
        yield one("version", "version", lambda: _version(path))
        yield one("backend", "backend", lambda: _backend(path, status, paths))
    yield _engines(status, paths)


def _version(path: Path) -> Item:
    version = locate.llama_server_version_sync(path)
    if not version.ok:
        return missing("version", "version", version.text, "llama-server --version")
    return found("version", "version", version.text, "llama-server --version")


def _backend(path: Path, status: locate.EngineStatus, paths: Paths) -> Item:
    devices, why = list_devices(path)
    notes = [f"device {d}" for d in devices or []]
    if status.engine is not None:
        e = status.engine
        if devices is None:
            notes.append(f"devices: {why}")
        return found("backend", "backend", {"backend": e.backend, "tag": e.tag, "devices": devices},
                     f"{paths.data_dir / 'engines' / e.name / 'engine.json'} (recorded at install); "
                     "devices: llama-server --list-devices",
                     text=f"{e.backend} (llama.cpp {e.tag}, installed engine {e.name})", notes=notes)
    if devices is None:
        return missing("backend", "backend", f"not an installed engine, and {why}", "llama-server --list-devices")
    backends = _backends(devices)
    text = ", ".join(backends) if backends else "CPU only (it lists no GPU device)"
    return found("backend", "backend", {"backend": backends[0].lower() if backends else "cpu", "devices": devices},
                 "llama-server --list-devices", text=text, notes=notes)


def _engines(status: locate.EngineStatus, paths: Paths) -> Item:
    state = paths.data_dir / "engines" / "state.json"
    if not status.engines:
        return found("installed", "installed engines", [], str(state.parent),
                     text="none (`siesta engine install` puts them there)")
    listed = []
    for e in status.engines:
        mark = " (active)" if e.active else " (previous)" if e.previous else ""
        listed.append(f"{e.name}{mark}: llama.cpp {e.tag}, backend {e.backend}")
    return found("installed", "installed engines",
                 [{"name": e.name, "tag": e.tag, "backend": e.backend, "version": e.version, "active": e.active,
                   "previous": e.previous, "binary": str(e.binary)} for e in status.engines],
                 str(state), text="; ".join(listed))
