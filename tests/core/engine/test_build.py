"""The source build reuses a llama-server Siesta itself would run before it compiles one (so the
README's two commands compile it at most once), and finds Siesta's data dir with the standard
library exactly where platformdirs puts it, on every platform."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
import pytest

from app.core.engine import build
from app.core.engine.install import active_binary
from tests.core.engine.test_install import add_cpu, do_install
from tests.fakes.releases import FakeReleases

VERSION_SCRIPT = '#!/bin/sh\n[ "$1" = "--version" ] && echo "version: 1 (fake)" && exit 0\nexit 1\n'


def test_the_data_dir_rule_agrees_with_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert build.default_data_dir() == Path(platformdirs.unix.Unix("siesta").user_data_dir)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert build.default_data_dir() == Path(platformdirs.unix.Unix("siesta").user_data_dir) == tmp_path / "xdg/siesta"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert build.default_data_dir() == Path(platformdirs.macos.MacOS("siesta").user_data_dir)
    monkeypatch.delenv("XDG_DATA_HOME")
    assert build.default_data_dir() == Path(platformdirs.macos.MacOS("siesta").user_data_dir)
    monkeypatch.setattr(sys, "platform", "win32")
    local = str(tmp_path / "AppData" / "Local")
    monkeypatch.setenv("LOCALAPPDATA", local)
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", lambda csidl: local)
    assert build.default_data_dir() == Path(platformdirs.windows.Windows("siesta").user_data_dir)


def test_it_finds_the_engine_siesta_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert build.engines_in_data_dir(data) == []
    source_build = data / "engine" / "llama-server"
    source_build.parent.mkdir(parents=True)
    source_build.write_text(VERSION_SCRIPT)
    assert build.engines_in_data_dir(data) == [source_build]
    fake = FakeReleases().start()
    try:
        add_cpu(fake, "b100")
        do_install(fake, data, "b100")
    finally:
        fake.stop()
    assert build.engines_in_data_dir(data) == [active_binary(data), source_build]  # the installed one first


def test_a_state_file_naming_a_folder_outside_is_ignored(tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    engines.mkdir(parents=True)
    (engines / "state.json").write_text('{"active": "../elsewhere"}')
    assert build.engines_in_data_dir(tmp_path) == []
    (engines / "state.json").write_text('["not", "a", "table"]')
    assert build.engines_in_data_dir(tmp_path) == []


def test_main_reuses_siestas_engine_and_builds_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "cache"))
    source_build = tmp_path / "xdg" / "siesta" / "engine" / "llama-server"
    source_build.parent.mkdir(parents=True)
    source_build.write_text(VERSION_SCRIPT)
    source_build.chmod(0o755)

    def no_build(*args: object, **kwargs: object) -> Path:
        raise AssertionError("built although Siesta's engine answers --version")

    monkeypatch.setattr(build, "build_llama_server", no_build)
    assert build.main([]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(source_build) and "reusing the llama-server Siesta runs" in err

    source_build.write_text("#!/bin/sh\nexit 1\n")  # one that does not answer is not reused
    monkeypatch.setattr(build, "build_llama_server", lambda dest, **kw: dest / "llama-server")
    assert build.main([]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / f"llama-cpp-python-{build.SDIST_VERSION}"
                                                                       / "llama-server")



def test_a_source_build_copies_the_tests_cached_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`siesta engine install --from-source` after `bash .ci/run`: no second compile."""
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    dest = tmp_path / "data" / "engine"
    assert build.copy_cached_build(dest) is None  # nothing cached
    cached = tmp_path / "cache" / f"llama-cpp-python-{build.SDIST_VERSION}" / "llama-server"
    cached.parent.mkdir(parents=True)
    cached.write_text(VERSION_SCRIPT)
    cached.chmod(0o755)
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_AVX512=ON")
    assert build.copy_cached_build(dest) is None  # other flags asked for: built
    monkeypatch.delenv("CMAKE_ARGS")
    copied = build.copy_cached_build(dest)
    assert copied == dest / "llama-server" and copied.read_text() == VERSION_SCRIPT and build.answers_version(copied)
    assert build.copy_cached_build(dest) is None  # one is there already
