"""``engine_status``: the llama-server loads would run, and when it is an engine that
``siesta engine install`` put there, that engine's backend, llama.cpp tag and version (one
source for ``siesta engine info`` and the app's Settings); the message a load gives when
there is no llama-server at all; and the CUDA driver version read through a fake NVML
module, which picks the CUDA build. Against the local fake releases API."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.core.config.paths import Paths
from app.core.config.recipes import read_recipe
from app.core.config.settings import load_settings
from app.core.engine import install as ei
from app.core.engine import locate as engine
from app.core.engine import release as er
from app.core.engine.install import rollback
from app.core.models.backend import BackendError, build_launch
from tests.core.engine.test_install import LINUX, add_cpu, do_install, script, tar_gz
from tests.fakes.releases import FakeReleases


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
    built = engine.source_build_binary(paths.data_dir)
    built.parent.mkdir(parents=True)
    built.write_bytes(script("0.0.1"))
    built.chmod(0o755)
    s = status(paths)
    assert s.path == built and s.usable and s.engine is None and s.tag is None


def test_on_windows_the_source_build_and_the_cache_are_found_by_their_exe(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows the source build and the tests' build cache hold llama-server.exe (what
    build.py installs there): that is what is looked for, never a bare llama-server."""
    monkeypatch.setattr(sys, "platform", "win32")
    data, cache = tmp_path / "data", tmp_path / "cache"
    cached = cache / "llama-cpp-python-0.3.36" / "llama-server.exe"
    for path in (cached, data / "engine" / "llama-server", cache / "llama-cpp-python-0.3.36" / "llama-server"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(script("0.0.1"))
        path.chmod(0o755)
    assert engine.find_llama_server(None, data, cache) == cached  # the bare names are not Windows' binaries
    built = engine.source_build_binary(data)
    assert built == data / "engine" / "llama-server.exe"
    built.write_bytes(script("0.0.2"))
    built.chmod(0o755)
    assert engine.find_llama_server(None, data, cache) == built


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


# ---- the CUDA driver version, through NVML ----------------------------------------------

class FakeNvml:
    """pynvml's functions that the probes call, for one NVIDIA GPU whose driver supports ``cuda``."""

    class NVMLError(Exception):
        pass

    def __init__(self, cuda: int | None = 12080, *, v2: bool = True, init_fails: bool = False) -> None:
        self.cuda, self.init_fails, self.inits = cuda, init_fails, 0
        if v2:
            self.nvmlSystemGetCudaDriverVersion_v2 = self._version

    def _version(self) -> int:
        if self.cuda is None:
            raise self.NVMLError("Not Supported")
        return self.cuda

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self._version()

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int: return 1
    def nvmlDeviceGetHandleByIndex(self, index: int) -> int: return index
    def nvmlDeviceGetName(self, handle: int) -> str: return "NVIDIA GeForce RTX 4090"
    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any: return SimpleNamespace(total=24 << 30, used=1 << 30)


@pytest.mark.parametrize("nvml, expected", [
    (FakeNvml(12080), "12.8"), (FakeNvml(13010, v2=False), "13.1"), (FakeNvml(12040), "12.4"),
    (FakeNvml(None), None), (FakeNvml(init_fails=True), None),
])
def test_the_cuda_driver_version_through_nvml(nvml, expected) -> None:
    assert er.cuda_driver_version(nvml) == expected
    assert nvml.inits == 0  # every nvmlInit has its nvmlShutdown


def test_without_nvml_the_driver_version_is_unknown(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed: import fails
    assert er.cuda_driver_version() is None


def test_the_gpu_probe_carries_the_driver_version_into_auto(tmp_path) -> None:
    gpus = er.probe_gpus(nvml=FakeNvml(12080), root=tmp_path)
    assert [(g.kind, g.via, g.cuda_driver) for g in gpus] == [("nvidia", "NVML", "12.8")]
    assert er.detect_backend(LINUX, gpus) == (
        "cuda", "NVIDIA GeForce RTX 4090 found through NVML (its driver supports CUDA 12.8): CUDA")
    assert er.probe_gpus(nvml=None, root=tmp_path) == []


def cuda_release(fake: FakeReleases, tag: str, versions: tuple[str, ...]) -> None:
    files = {}
    for v in versions:
        files[f"llama-{tag}-bin-ubuntu-cuda-{v}-x64.tar.gz"] = tar_gz({"llama-server": script(f"cuda{v}")},
                                                                     top=f"llama-{tag}/")
        files[f"cudart-llama-bin-ubuntu-cuda-{v}-x64.tar.gz"] = tar_gz({f"libcudart.so.{v}": b"rt"}, top="")
    fake.add(tag, files)


@pytest.mark.parametrize("driver, picked", [(12080, "12.4"), (13020, "13.1"), (11080, "12.4")])
def test_auto_installs_the_newest_cuda_build_the_driver_supports(releases, paths, monkeypatch, tmp_path,
                                                                 driver, picked) -> None:
    """``--backend auto`` with a fake NVML module as ``pynvml``: the GPU is found through it,
    and the CUDA build is the newest one its driver supports (the oldest when none is)."""
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(driver))
    cuda_release(releases, "b7", ("12.4", "13.1"))
    result = ei.install(paths.data_dir, releases.url, tag="b7", backend="auto", plat=LINUX,
                        gpus=lambda: er.probe_gpus(root=tmp_path))
    e = result.engine
    assert (e.backend, e.version) == ("cuda", f"cuda{picked} (fake)")
    assert f"its driver supports CUDA {driver // 1000}.{driver % 1000 // 10}" in result.reason
    assert (e.binary.parent / f"libcudart.so.{picked}").is_file()  # the matching runtime beside it
    assert any(f"the CUDA {picked} build" in note for note in result.messages)
    assert any("may not run until the driver is updated" in note for note in result.messages) == (driver < 12000)


def test_backend_cuda_asks_the_driver_too(releases, paths, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(13000))
    cuda_release(releases, "b7", ("12.4", "13.1"))
    assert ei.install(paths.data_dir, releases.url, tag="b7", backend="cuda", plat=LINUX).engine.version == \
        "cuda13.1 (fake)"
