"""Builds the whole report: every probe family in its own worker thread (the slow ones, such
as ``llama-server --version`` or a remote that does not answer, wait side by side), the
sections in a fixed order. Blocking: call it from a worker thread in a GUI
(``asyncio.to_thread``) or from the CLI. Needs no running Siesta; never raises for what it
finds.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.core.config.endpoint import SettingsError
from app.core.config.paths import Paths
from app.core.config.settings import LoadedSettings, Settings, load_settings
from app.core.doctor import engine, files, install, memory, network, tray
from app.core.doctor.report import Item, Report, guarded
from app.core.memory.gpus import GpuMemory
from app.core.memory.pressure import PSI_MEMORY

__all__ = ["Probes", "build_report", "SECTIONS"]

SECTIONS = ("siesta", "system", "engine", "memory", "gpus", "tray", "config", "folders", "server", "remotes",
            "recipes")
"""Every section of the report, in order (the JSON report's keys besides ``format`` and ``generated``)."""


@dataclass
class Probes:
    """What the probes read, for tests to point elsewhere: the environment, the GPU reader,
    where /proc is, the PSI file, the platform, this process's pid, how long a remote gets."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    gpus: Callable[[], GpuMemory] = GpuMemory
    root: Path | None = None  # a Linux tree whose proc/meminfo is read (None: this machine, through its reader)
    psi_path: Path = PSI_MEMORY
    platform: str = sys.platform
    own_pid: int | None = None
    remote_timeout: float = network.REMOTE_TIMEOUT


def load_for_report(paths: Paths, flags: Mapping[str, Any] | None) -> tuple[LoadedSettings, str | None]:
    """The settings in force, and why settings.toml (or a flag or variable) could not be used:
    then the settings without the file, else every default."""
    flags = dict(flags or {})
    try:
        return load_settings(paths.settings_file, flags), None
    except SettingsError as exc:
        error = str(exc)
    absent = paths.config_dir / f".siesta-doctor-{uuid.uuid4().hex}.toml"  # no file: flags and environment only
    try:
        return load_settings(absent, flags), error
    except SettingsError:
        defaults = {name: "default (the settings do not load)" for name in Settings.model_fields}
        return LoadedSettings(Settings.model_construct(), defaults, paths.settings_file), error


def build_report(paths: Paths, flags: Mapping[str, Any] | None = None, *, settings: LoadedSettings | None = None,
                 probes: Probes | None = None) -> Report:
    """``siesta doctor``'s report for the Siesta that ``paths`` and ``settings`` describe
    (``settings``: those of a running app; else read from ``paths`` and ``flags``)."""
    probes = probes or Probes()
    error = None
    if settings is None:
        settings, error = load_for_report(paths, flags)
    values = settings.values
    env = probes.environ
    families: list[tuple[str, str, Callable[[], Iterable[Item]]]] = [
        ("siesta", "Siesta", install.siesta_items),
        ("system", "System", install.system_items),
        ("engine", "llama-server", lambda: engine.engine_items(paths, settings)),
        ("memory", "Memory", lambda: memory.memory_items(root=probes.root, psi_path=probes.psi_path)),
        ("gpus", "GPUs", lambda: memory.gpu_items(probes.gpus)),
        ("tray", "System tray", lambda: tray.tray_items(env, probes.platform)),
        ("config", "Configuration", lambda: files.config_items(paths, settings, error, env)),
        ("folders", "Folders", lambda: files.folder_items(paths, env)),
        ("server", "Server", lambda: [network.port_item(values.host, values.port,
                                                         f"port: {_source(settings, 'port')}, host: "
                                                         f"{_source(settings, 'host')}",
                                                         values.api_key, own_pid=probes.own_pid)]),
        ("remotes", "Remotes", lambda: network.remote_items(paths.settings_file, env, probes.remote_timeout)),
        ("recipes", "Recipes", lambda: files.recipe_items(paths)),
    ]
    assert tuple(key for key, _, _ in families) == SECTIONS
    with ThreadPoolExecutor(max_workers=len(families), thread_name_prefix="siesta-doctor") as pool:
        futures = [pool.submit(guarded, key, title, probe) for key, title, probe in families]
        sections = tuple(f.result() for f in futures)
    return Report(datetime.now().astimezone().isoformat(timespec="seconds"), sections)


def _source(settings: LoadedSettings, name: str) -> str:
    return settings.sources.get(name, "default")
