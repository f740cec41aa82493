"""``engine_status``: the llama-server loads would run, and when it is an engine that
``siesta engine install`` put there, that engine's backend, llama.cpp tag and version (one
source for ``siesta engine info`` and the app's Settings); and the message a load gives
when there is no llama-server at all. Against the local fake releases API."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core import engine
from app.core.backend import BackendError, build_launch
from app.core.engine_install import rollback
from app.core.paths import Paths
from app.core.recipes import read_recipe
from app.core.settings import load_settings
from tests.fake_releases import FakeReleases
from tests.test_engine_install import add_cpu, do_install, script


@pytest.fixture
def releases():
    fake = FakeReleases().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def no_engine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "no-cache"))  # the test's llama-server cache
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no llama-server on PATH


def status(paths: Paths, **flags: object) -> engine.EngineStatus:
    return engine.engine_status(paths, load_settings(paths.settings_file, flags))


def test_no_llama_server_at_all(paths) -> None:
    s = status(paths)
    assert (s.path, s.usable, s.configured_by, s.engine, s.engines) == (None, False, None, None, ())
    assert (s.backend, s.tag, s.installed_version, s.origin) == (None, None, None, "")


def test_the_active_installed_engine_is_reported(releases, paths) -> None:
    add_cpu(releases, "b1")
    installed = do_install(releases, paths.data_dir, "b1").engine
    s = status(paths)
    assert s.usable and s.path == installed.binary and s.configured_by is None
    assert (s.backend, s.tag, s.installed_version) == ("cpu", "b1", "1.0.b1 (fake)")
    assert s.engine is not None and s.engine.name == "b1-cpu" and s.engine.active
    assert s.origin == "installed engine b1-cpu: llama.cpp b1, backend cpu"
    assert [e.name for e in s.engines] == ["b1-cpu"]


def test_update_and_rollback_change_what_is_reported(releases, paths) -> None:
    add_cpu(releases, "b1")
    do_install(releases, paths.data_dir, "b1")
    add_cpu(releases, "b2")
    do_install(releases, paths.data_dir, "b2")
    s = status(paths)
    assert (s.tag, s.installed_version) == ("b2", "1.0.b2 (fake)")
    assert [(e.name, e.active, e.previous) for e in s.engines] == [("b2-cpu", True, False), ("b1-cpu", False, True)]
    rollback(paths.data_dir)
    assert status(paths).tag == "b1"


def test_a_setting_wins_and_is_not_called_an_installed_engine(releases, paths, tmp_path) -> None:
    add_cpu(releases, "b1")
    do_install(releases, paths.data_dir, "b1")
    mine = tmp_path / "bin" / "llama-server"
    mine.parent.mkdir()
    mine.write_bytes(script("7.7"))
    mine.chmod(0o755)
    s = status(paths, llama_server=str(mine))
    assert s.path == mine and s.usable and s.configured_by == "--llama-server"
    assert s.engine is None and s.backend is None and s.origin == "set by --llama-server"
    assert [e.name for e in s.engines] == ["b1-cpu"]  # still listed


def test_a_setting_naming_an_installed_engine_reports_it(releases, paths) -> None:
    add_cpu(releases, "b1")
    installed = do_install(releases, paths.data_dir, "b1").engine
    s = status(paths, llama_server=str(installed.binary))
    assert s.configured_by == "--llama-server" and s.tag == "b1" and s.backend == "cpu"
    assert s.origin == "set by --llama-server"


def test_a_source_build_is_no_installed_engine(paths) -> None:
    built = paths.data_dir / "engine" / "llama-server"
    built.parent.mkdir(parents=True)
    built.write_bytes(script("0.0.1"))
    built.chmod(0o755)
    s = status(paths)
    assert s.path == built and s.usable and s.engine is None and s.tag is None


def test_a_broken_installed_engine_is_not_reported(releases, paths) -> None:
    add_cpu(releases, "b1")
    installed = do_install(releases, paths.data_dir, "b1").engine
    installed.binary.unlink()
    s = status(paths)
    assert s.path is None and s.engine is None and s.engines == ()


def test_the_ui_bridge_gets_the_same_status(releases, paths) -> None:
    pytest.importorskip("PySide6")
    from app.ui.bridge import EngineStatus

    add_cpu(releases, "b1")
    do_install(releases, paths.data_dir, "b1")
    core = status(paths)
    ui = EngineStatus(core.path, core.usable, core.configured_by, core.engine, core.engines)
    assert ui.tag == "b1" and ui.problem is None


def test_a_load_without_llama_server_names_siesta_engine_install(paths) -> None:
    model = paths.data_dir / "m.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    recipe_file = paths.recipe_file("m")
    recipe_file.write_text(f'backend = "llamacpp"\nmodel = "{model}"\n', encoding="utf-8")
    with pytest.raises(BackendError) as info:
        build_launch(read_recipe(recipe_file), None, 1234)
    message = str(info.value)
    assert "siesta engine install" in message and "build-llama-server.sh" not in message
