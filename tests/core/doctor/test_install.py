"""Which Siesta this is: its install kind read from a ``siesta`` distribution's metadata
(``direct_url.json``, PEP 610), written here as pip writes it into a temporary site folder;
and Python, Qt and the platform, with Qt's version read from the metadata, never imported."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import app
from app.core.doctor.install import install_kind, system_items


def site(tmp_path: Path, *, direct_url: dict | None, version: str = app.__version__, installer: str = "pip",
         folder: str = "siesta-{v}.dist-info", record_app: bool = True) -> Path:
    """A site folder with a siesta distribution in it (and, for a wheel, its app package)."""
    root = tmp_path / "site"
    meta = root / folder.format(v=version)
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: siesta\nVersion: {version}\n")
    (meta / "INSTALLER").write_text(installer + "\n")
    if direct_url is not None:
        (meta / "direct_url.json").write_text(json.dumps(direct_url))
    if record_app:
        (root / "app").mkdir()
        (root / "app" / "__init__.py").write_text("")
    return root


def test_a_bundle() -> None:
    item = install_kind(frozen=True)
    assert item.value["kind"] == "bundle" and item.source == "sys.frozen (a PyInstaller bundle)"


def test_an_editable_install(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    root = site(tmp_path, direct_url={"dir_info": {"editable": True}, "url": clone.as_uri()}, record_app=False)
    item = install_kind(frozen=False, search_path=[str(root)], app_file=str(clone / "app" / "__init__.py"))
    assert item.value["kind"] == "editable" and item.value["installer"] == "pip"
    assert item.shown() == f"editable, from {clone}, installed by pip"
    assert item.source == f"importlib.metadata: siesta-{app.__version__}.dist-info/direct_url.json"
    assert item.notes == ()


def test_an_editable_install_of_another_clone_says_which_code_runs(tmp_path: Path) -> None:
    root = site(tmp_path, direct_url={"dir_info": {"editable": True}, "url": (tmp_path / "other").as_uri()},
                record_app=False)
    here = tmp_path / "here" / "app" / "__init__.py"
    item = install_kind(frozen=False, search_path=[str(root)], app_file=str(here))
    assert item.notes == (f"but the app package is imported from {here.parent}, not from this install "
                          f"({tmp_path / 'other' / 'app'})",)


def test_a_wheel_built_from_a_folder(tmp_path: Path) -> None:
    root = site(tmp_path, direct_url={"dir_info": {}, "url": (tmp_path / "src").as_uri()}, installer="uv")
    item = install_kind(frozen=False, search_path=[str(root)], app_file=str(root / "app" / "__init__.py"))
    assert item.value["kind"] == "wheel"
    assert item.shown() == f"wheel, built from {tmp_path / 'src'}, installed by uv"
    assert item.notes == ()


def test_a_wheel_file(tmp_path: Path) -> None:
    wheel = tmp_path / "dist" / "siesta-0.1.0-py3-none-any.whl"
    root = site(tmp_path, direct_url={"archive_info": {"hashes": {}}, "url": wheel.as_uri()})
    item = install_kind(frozen=False, search_path=[str(root)], app_file=str(root / "app" / "__init__.py"))
    assert item.shown() == f"wheel, from {wheel}, installed by pip"


def test_a_wheel_from_an_index_and_stale_metadata(tmp_path: Path) -> None:
    root = site(tmp_path, direct_url=None, version="0.0.1")
    item = install_kind(frozen=False, search_path=[str(root)], app_file=str(root / "app" / "__init__.py"))
    assert item.shown() == "wheel, from a package index, installed by pip"
    assert item.source == "importlib.metadata: siesta-0.0.1.dist-info, without direct_url.json"
    assert item.notes == (f"the distribution says version 0.0.1, the code {app.__version__} (reinstall to refresh "
                          "the metadata)",)


def test_a_source_tree_with_only_a_build_leftover(tmp_path: Path) -> None:
    root = site(tmp_path, direct_url=None, folder="siesta.egg-info", record_app=False)  # what setup.py leaves
    item = install_kind(frozen=False, search_path=[str(root)], app_file=str(tmp_path / "clone/app/__init__.py"))
    assert item.value == {"kind": "source tree", "path": str(tmp_path / "clone")}
    assert item.shown() == f"source tree (not installed), {tmp_path / 'clone'}"


def test_this_install() -> None:
    assert install_kind().value["kind"] in ("editable", "wheel", "source tree")


def test_qt_is_read_from_the_metadata() -> None:
    items = {i.key: i for i in system_items()}
    qt = items["qt"]
    assert qt.value["version"] == importlib.metadata.version(qt.value["distribution"])
    assert qt.source == f"importlib.metadata ({qt.value['distribution']})"
    assert items["python"].value["executable"]
    assert items["packages"].value["aiohttp"] == importlib.metadata.version("aiohttp")
