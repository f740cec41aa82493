"""Which Siesta this is and what it runs on: its version and how it was installed, Python,
Qt and the platform. Qt is never imported: its version is read from the package metadata.

How it was installed:

* ``bundle``: ``sys.frozen`` is set (a PyInstaller bundle: no pip, no metadata of its own);
* ``editable``: the ``siesta`` distribution's ``direct_url.json`` (PEP 610, in
  :mod:`importlib.metadata`) says ``dir_info.editable`` (``pip install -e .``);
* ``wheel``: a distribution without that flag: from a local folder or archive
  (``direct_url.json`` names it; ``pip install .``, ``pipx install .``), or from an index
  (no ``direct_url.json``);
* ``source tree``: no installed distribution (``python -m app`` in a clone). A
  ``siesta.egg-info`` folder beside the sources is a build's leftover, not an install, and
  is skipped when an installed one exists.

It also says where the ``app`` package is imported from, and when that is not the installed
copy (another one shadows it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import app
from app.core.doctor.report import Item, found, missing

__all__ = ["siesta_items", "system_items", "install_kind", "PACKAGES"]

PACKAGES = ("aiohttp", "pydantic", "pydantic-settings", "huggingface_hub", "httpx", "psutil", "watchfiles",
            "qasync", "jeepney", "nvidia-ml-py", "pyobjc-framework-Metal")
"""Packages whose versions a bug report names (nvidia-ml-py: NVML, on Linux and Windows;
pyobjc-framework-Metal: the GPU's share of unified memory, on macOS)."""

QT_DISTRIBUTIONS = ("PySide6-Essentials", "PySide6")


def _installed(search_path: Sequence[str] | None) -> list[importlib.metadata.Distribution]:
    """The ``siesta`` distributions on the path, installed ones (``.dist-info``) first."""
    seen: set[str] = set()
    dists = []
    kwargs: dict[str, Any] = {"name": "siesta"}
    if search_path is not None:
        kwargs["path"] = list(search_path)
    for dist in importlib.metadata.distributions(**kwargs):
        where = str(getattr(dist, "_path", "")) or repr(dist)
        if where not in seen:
            seen.add(where)
            dists.append(dist)
    return sorted(dists, key=lambda d: not str(getattr(d, "_path", "")).endswith(".dist-info"))


def _direct_url(dist: importlib.metadata.Distribution) -> dict[str, Any] | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def install_kind(*, frozen: bool | None = None, search_path: Sequence[str] | None = None,
                 app_file: str | None = None) -> Item:
    """How this Siesta was installed (see the module's docstring)."""
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    app_dir = Path(app_file or app.__file__).resolve().parent
    if frozen:
        return found("install", "install", {"kind": "bundle", "path": sys.executable},
                     "sys.frozen (a PyInstaller bundle)", text=f"bundle (PyInstaller), {sys.executable}")
    dists = [d for d in _installed(search_path)
             if str(getattr(d, "_path", "")).endswith(".dist-info") or _direct_url(d) is not None]
    if not dists:
        return found("install", "install", {"kind": "source tree", "path": str(app_dir.parent)},
                     "importlib.metadata: no installed siesta distribution",
                     text=f"source tree (not installed), {app_dir.parent}")
    dist = dists[0]
    where = str(getattr(dist, "_path", "the siesta distribution"))
    direct = _direct_url(dist)
    installer = (dist.read_text("INSTALLER") or "").strip() or None
    notes = []
    name = Path(where).name
    if direct is not None and direct.get("dir_info", {}).get("editable"):
        kind, origin = "editable", str(direct.get("url", ""))
        source = f"importlib.metadata: {name}/direct_url.json"
        text = f"editable, from {_shown_url(origin)}"
    elif direct is not None:
        kind, origin = "wheel", str(direct.get("url", ""))
        vcs = direct.get("vcs_info", {}).get("vcs")
        source = f"importlib.metadata: {name}/direct_url.json"
        built = "from" if "archive_info" in direct else "built from"  # a wheel file, or a folder or repository
        text = f"wheel, {built} {_shown_url(origin)}" + (f" ({vcs})" if vcs else "")
    else:
        kind, origin = "wheel", None
        source = f"importlib.metadata: {name}, without direct_url.json"
        text = "wheel, from a package index"
    if installer:
        text += f", installed by {installer}"
    if len(dists) > 1:
        notes.append("more than one siesta distribution is installed: "
                     + ", ".join(str(getattr(d, "_path", d)) for d in dists))
    expected = _installed_app_dir(dist, kind, origin)
    if expected is not None and expected != app_dir:
        notes.append(f"but the app package is imported from {app_dir}, not from this install ({expected})")
    if dist.version != app.__version__:
        notes.append(f"the distribution says version {dist.version}, the code {app.__version__} "
                     "(reinstall to refresh the metadata)")
    return found("install", "install", {"kind": kind, "url": origin, "installer": installer,
                                        "distribution": where, "app_package": str(app_dir)},
                 source, text=text, notes=notes)


def _file_path(url: str) -> Path | None:
    if not url.startswith("file://"):
        return None
    from urllib.parse import unquote, urlsplit

    return Path(unquote(urlsplit(url).path))


def _shown_url(url: str) -> str:
    path = _file_path(url)
    return str(path) if path is not None else url


def _installed_app_dir(dist: importlib.metadata.Distribution, kind: str, origin: str | None) -> Path | None:
    """Where the install's ``app`` package is (None when it cannot be told)."""
    if kind == "editable":
        path = _file_path(origin or "")
        return (path / "app").resolve() if path is not None else None
    try:
        return Path(str(dist.locate_file("app/__init__.py"))).resolve().parent
    except (OSError, NotImplementedError):
        return None


def siesta_items(*, frozen: bool | None = None, search_path: Sequence[str] | None = None) -> Iterable[Item]:
    yield found("version", "version", app.__version__, "app.__version__")
    yield install_kind(frozen=frozen, search_path=search_path)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _os_name() -> tuple[str, str]:
    if sys.platform.startswith("linux"):
        try:
            release = platform.freedesktop_os_release()
        except OSError:
            return platform.system(), "platform.system() (no /etc/os-release)"
        return release.get("PRETTY_NAME") or release.get("NAME", "Linux"), "/etc/os-release"
    if sys.platform == "darwin":
        return f"macOS {platform.mac_ver()[0]}", "platform.mac_ver()"
    if sys.platform == "win32":
        release, version, _csd, _ptype = platform.win32_ver()
        return f"Windows {release} ({version})", "platform.win32_ver()"
    return platform.system(), "platform.system()"


def system_items() -> Iterable[Item]:
    venv = " (virtual environment)" if sys.prefix != sys.base_prefix else ""
    yield found("python", "Python", {"version": platform.python_version(),
                                     "implementation": platform.python_implementation(),
                                     "executable": sys.executable},
                "sys.version, sys.executable",
                text=f"{platform.python_implementation()} {platform.python_version()}, {sys.executable}{venv}")
    qt = next(((name, v) for name in QT_DISTRIBUTIONS if (v := _version(name)) is not None), None)
    if qt is None:
        yield missing("qt", "Qt (PySide6)", "no PySide6 or PySide6-Essentials distribution in importlib.metadata"
                      + (" (a bundle keeps no package metadata)" if getattr(sys, "frozen", False) else ""))
    else:
        shiboken = _version("shiboken6")
        yield found("qt", "Qt (PySide6)", {"distribution": qt[0], "version": qt[1], "shiboken6": shiboken},
                    f"importlib.metadata ({qt[0]})",
                    text=f"PySide6 {qt[1]}" + (f", shiboken6 {shiboken}" if shiboken else ""))
    os_name, os_source = _os_name()
    yield found("os", "operating system", os_name, os_source)
    yield found("platform", "platform", {"platform": platform.platform(), "machine": platform.machine(),
                                         "kernel": platform.release()},
                "platform.platform(), platform.machine()", text=f"{platform.platform()}, {platform.machine()}")
    versions = {name: _version(name) for name in PACKAGES}
    yield found("packages", "packages", versions, "importlib.metadata",
                text=", ".join(f"{n} {v}" if v else f"{n} (not installed)" for n, v in versions.items()))
    cpus = os.cpu_count()
    if cpus:
        yield found("cpus", "CPUs", cpus, "os.cpu_count()")
