"""The source build reuses a llama-server Siesta itself would run before it compiles one (so the
README's two commands compile it at most once), and finds Siesta's data dir with the standard
library exactly where platformdirs puts it, on every platform."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

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
    source_build = data / "engine" / build.binary_name()
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
    source_build = tmp_path / "xdg" / "siesta" / "engine" / build.binary_name()
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
    monkeypatch.setattr(build, "build_llama_server", lambda dest, **kw: dest / build.binary_name())
    assert build.main([]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / f"llama-cpp-python-{build.SDIST_VERSION}"
                                                                       / build.binary_name())



def test_a_source_build_copies_the_tests_cached_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`siesta engine install --from-source` after `bash .ci/run`: no second compile."""
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    dest = tmp_path / "data" / "engine"
    assert build.copy_cached_build(dest) is None  # nothing cached
    cached = tmp_path / "cache" / f"llama-cpp-python-{build.SDIST_VERSION}" / build.binary_name()
    cached.parent.mkdir(parents=True)
    cached.write_text(VERSION_SCRIPT)
    cached.chmod(0o755)
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_AVX512=ON")
    assert build.copy_cached_build(dest) is None  # other flags asked for: built
    monkeypatch.delenv("CMAKE_ARGS")
    copied = build.copy_cached_build(dest)
    assert copied == dest / build.binary_name() and copied.read_text() == VERSION_SCRIPT
    assert build.answers_version(copied)
    assert build.copy_cached_build(dest) is None  # one is there already


# ---- where each CMake generator puts the binary --------------------------------------------------

def tree(root: Path, *files: str) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"built: " + name.encode())
    return root


def test_the_built_binary_is_found_by_the_generators_layout(tmp_path: Path) -> None:
    """Makefiles and Ninja write bin/llama-server; Visual Studio (MSBuild) and the other
    multi-config generators bin/<config>/llama-server.exe, Release as the build asks
    (https://cmake.org/cmake/help/latest/prop_tgt/RUNTIME_OUTPUT_DIRECTORY.html: "multi-configuration
    generators ... append a per-configuration subdirectory")."""
    assert build.binary_name("linux") == build.binary_name("darwin") == "llama-server"
    assert build.binary_name("win32") == "llama-server.exe"
    make = tree(tmp_path / "make", "bin/llama-server", "bin/llama-cli")
    assert build.find_built_binary(make, "llama-server") == make / "bin" / "llama-server"
    msvc = tree(tmp_path / "msvc", "bin/Release/llama-server.exe", "bin/Release/llama-server.pdb",
                "bin/Release/ggml.lib", "common/Release/common.lib")
    assert build.find_built_binary(msvc, "llama-server.exe") == msvc / "bin" / "Release" / "llama-server.exe"
    other = tree(tmp_path / "relwithdebinfo", "bin/RelWithDebInfo/llama-server.exe")
    assert build.find_built_binary(other, "llama-server.exe") == other / "bin" / "RelWithDebInfo" / "llama-server.exe"
    with pytest.raises(build.EngineBuildError, match=r"no llama-server\.exe is under"):
        build.find_built_binary(make, "llama-server.exe")  # the name without .exe is not Windows' binary


def sdist(folder: Path) -> None:
    """A llama-cpp-python sdist as pip downloads it: the llama.cpp tree under vendor/."""
    data = b"cmake_minimum_required(VERSION 3.14)\n"
    info = tarfile.TarInfo(f"llama_cpp_python-{build.SDIST_VERSION}/vendor/llama.cpp/CMakeLists.txt")
    info.size = len(data)
    with tarfile.open(folder / f"llama_cpp_python-{build.SDIST_VERSION}.tar.gz", "w:gz") as tar:
        tar.addfile(info, io.BytesIO(data))


def test_a_source_build_on_windows_installs_llama_server_exe_from_the_msvc_tree(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole build on a fake Windows with Visual Studio: pip, cmake's configure and build
    are a fake subprocess.Popen, the build writing what MSBuild writes
    (build/bin/Release/llama-server.exe); the files are real. The build is asked for Release
    (MSBuild builds Debug unless told) and dest/llama-server.exe is installed."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(build, "answers_version", lambda path: path.is_file())
    steps: list[list[str]] = []

    class Step:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            steps.append(argv)
            if argv[1:4] == ["-m", "pip", "download"]:
                sdist(Path(argv[argv.index("-d") + 1]))
            elif argv[:2] == ["cmake", "--build"]:
                tree(Path(argv[2]), "bin/Release/llama-server.exe", "bin/Release/llama-server.pdb")
            self.stdout = iter(["[ 50%] Building CXX object tools/server/CMakeFiles/llama-server.dir\n"])

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Step)
    dest = tmp_path / "dest"
    binary = build.build_llama_server(dest)
    assert binary == dest / "llama-server.exe" and binary.read_bytes() == b"built: bin/Release/llama-server.exe"
    configure, compile_ = steps[1], steps[2]
    assert configure[0] == "cmake" and "-DCMAKE_BUILD_TYPE=Release" in configure
    assert compile_[compile_.index("--config") + 1] == "Release" and "--target" in compile_
    assert sorted(p.name for p in dest.iterdir()) == ["build.log", "llama-server.exe"]
