"""``siesta engine install`` from llama.cpp's prebuilt releases, against a local fake
releases API (tests/fakes/releases.py) serving archives built here: the real llama-server,
a binary that needs a file beside it, a wrong digest, paths that escape; install, update,
rollback, ``--backend auto`` with injected probes, the CLI, and a chat through Siesta on the
installed engine."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from app.core.engine import install as ei
from app.core.engine import release as er
from app.core.engine.install import InstallError, active_binary, install, installed, rollback, update
from app.core.engine.release import Gpu, NoBuild, Platform, ReleaseError
from app.core.engine.locate import find_llama_server, source_build_binary
from tests.conftest import LLAMA_SERVER
from tests.fakes.releases import FakeReleases

LINUX = Platform("linux", "x64")
CPU_ASSET = "llama-{tag}-bin-ubuntu-x64.tar.gz"
SCRIPT = '#!/bin/sh\nif [ "$1" = "--version" ]; then\n  echo "version: {v} (fake)"\n  exit 0\nfi\nexit 1\n'
# A "llama-server" that cannot run without the library beside it (as GGML_BACKEND_DL builds).
NEEDS_LIB = ('#!/bin/sh\n. "$(dirname "$0")/libggml-cpu.sh" || exit 3\n'
             'if [ "$1" = "--version" ]; then echo "version: $LIB_VERSION (needs its lib)"; exit 0; fi\nexit 1\n')


def tar_gz(entries: dict[str, Any], top: str = "llama-b1/") -> bytes:
    """A .tar.gz: name -> bytes (a file; executable when it starts with #!) or ("symlink", target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, value in entries.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else top + name)
            if isinstance(value, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
                continue
            info.size, info.mode = len(value), 0o755 if value.startswith(b"#!") else 0o644
            tar.addfile(info, io.BytesIO(value))
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if data.startswith(b"#!") else 0o100644) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def script(version: str) -> bytes:
    return SCRIPT.format(v=version).encode()


@pytest.fixture
def releases():
    fake = FakeReleases().start()
    yield fake
    fake.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def add_cpu(fake: FakeReleases, tag: str, entries: dict[str, Any] | None = None, **kw: Any) -> str:
    name = CPU_ASSET.format(tag=tag)
    fake.add(tag, {name: tar_gz(entries or {"llama-server": script(f"1.0.{tag}")}, top=f"llama-{tag}/")}, **kw)
    return name


def do_install(fake: FakeReleases, data_dir: Path, tag: str, **kw: Any) -> ei.Result:
    kw.setdefault("backend", "cpu")
    return install(data_dir, fake.url, tag=tag, plat=LINUX, **kw)


def state(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "engines" / "state.json").read_text())


def engine_names(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "engines").iterdir() if p.is_dir()}


# ---- picking assets ---------------------------------------------------------------------

NAMES = [
    "llama-b7000-bin-ubuntu-x64.tar.gz", "llama-b7000-bin-ubuntu-arm64.tar.gz",
    "llama-b7000-bin-ubuntu-vulkan-x64.tar.gz", "llama-b7000-bin-ubuntu-rocm-7.0-x64.tar.gz",
    "llama-b7000-bin-ubuntu-cuda-12.8-x64.tar.gz", "llama-b7000-bin-ubuntu-cuda-13.1-x64.tar.gz",
    "cudart-llama-bin-ubuntu-cuda-12.8-x64.tar.gz", "cudart-llama-bin-ubuntu-cuda-13.1-x64.tar.gz",
    "llama-b7000-bin-macos-arm64.tar.gz", "llama-b7000-bin-macos-x64.tar.gz",
    "llama-b7000-bin-win-cpu-x64.zip", "llama-b7000-bin-win-vulkan-x64.zip", "llama-b7000-bin-win-cuda-12.4-x64.zip",
    "cudart-llama-bin-win-cuda-12.4-x64.zip", "llama-b7000-bin-win-hip-radeon-x64.zip", "llama-b7000-xcframework.zip",
]
RELEASE = er.Release("b7000", tuple(er.Asset(n, "http://x/" + n, 1, None) for n in NAMES))


@pytest.mark.parametrize("system, machine, backend, expected, cudart", [
    ("Linux", "x86_64", "cpu", "llama-b7000-bin-ubuntu-x64.tar.gz", None),
    ("Linux", "aarch64", "cpu", "llama-b7000-bin-ubuntu-arm64.tar.gz", None),
    ("Linux", "x86_64", "vulkan", "llama-b7000-bin-ubuntu-vulkan-x64.tar.gz", None),
    ("Linux", "x86_64", "rocm", "llama-b7000-bin-ubuntu-rocm-7.0-x64.tar.gz", None),
    ("Linux", "x86_64", "cuda", "llama-b7000-bin-ubuntu-cuda-12.8-x64.tar.gz",
     "cudart-llama-bin-ubuntu-cuda-12.8-x64.tar.gz"),
    ("Darwin", "arm64", "metal", "llama-b7000-bin-macos-arm64.tar.gz", None),
    ("Darwin", "x86_64", "cpu", "llama-b7000-bin-macos-x64.tar.gz", None),
    ("Windows", "AMD64", "cpu", "llama-b7000-bin-win-cpu-x64.zip", None),
    ("Windows", "AMD64", "cuda", "llama-b7000-bin-win-cuda-12.4-x64.zip", "cudart-llama-bin-win-cuda-12.4-x64.zip"),
    ("Windows", "AMD64", "rocm", "llama-b7000-bin-win-hip-radeon-x64.zip", None),
])
def test_the_asset_is_picked_by_pattern(system, machine, backend, expected, cudart) -> None:
    choice = er.pick_assets(RELEASE, backend, er.current_platform(system, machine))
    assert choice.asset.name == expected and (choice.cudart.name if choice.cudart else None) == cudart


def test_cuda_picks_the_newest_build_the_driver_supports() -> None:
    choice = er.pick_assets(RELEASE, "cuda", LINUX, cuda_driver="13.2")
    assert choice.asset.name.endswith("cuda-13.1-x64.tar.gz") and choice.cudart.name.endswith("13.1-x64.tar.gz")


@pytest.mark.parametrize("plat, backend", [(Platform("linux", "arm64"), "vulkan"), (LINUX, "metal"),
                                           (Platform("darwin", "x64"), "metal")])
def test_no_build_for_the_backend_says_so(plat, backend) -> None:
    with pytest.raises(NoBuild, match=f"no prebuilt {backend} build"):
        er.pick_assets(RELEASE, backend, plat)
    assert "--from-source --backend vulkan" in er.source_build_command("vulkan")


# ---- --backend auto ---------------------------------------------------------------------

class FakeNvml:
    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return 1
    def nvmlDeviceGetHandleByIndex(self, index: int) -> int: return index
    def nvmlDeviceGetName(self, handle: int) -> str: return "NVIDIA GeForce RTX 4090"
    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any: return SimpleNamespace(total=24 << 30, used=1 << 30)


def sysfs_card(root: Path, index: int, driver: str, vram: int | None = None, product: str = "") -> None:
    card = root / "sys/class/drm" / f"card{index}"
    pci = root / "sys/devices/pci0000:00" / f"0000:0{index}:00.0"
    (pci / "drm" / f"renderD{128 + index}").mkdir(parents=True)
    (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
    (pci / "driver").symlink_to(root / "sys/bus/pci/drivers" / driver)
    card.mkdir(parents=True)
    (card / "device").symlink_to(pci)
    if vram is not None:
        (pci / "mem_info_vram_total").write_text(str(vram))
        (pci / "mem_info_vram_used").write_text("0")
    if product:
        (pci / "product_name").write_text(product)


def test_auto_picks_cuda_through_nvml(tmp_path: Path) -> None:
    gpus = er.probe_gpus(nvml=FakeNvml(), root=tmp_path)
    assert er.detect_backend(LINUX, gpus) == ("cuda", "NVIDIA GeForce RTX 4090 found through NVML: CUDA")


def test_auto_picks_rocm_on_a_discrete_amd_card_and_vulkan_on_others(tmp_path: Path) -> None:
    sysfs_card(tmp_path, 0, "amdgpu", 16 << 30, "Radeon RX 7900 XTX")
    backend, why = er.detect_backend(LINUX, er.probe_gpus(nvml=None, root=tmp_path))
    assert backend == "rocm" and "Radeon RX 7900 XTX" in why and "ROCm" in why
    other = tmp_path / "igpu"
    sysfs_card(other, 0, "amdgpu", 512 << 20)
    assert er.detect_backend(LINUX, er.probe_gpus(nvml=None, root=other))[0] == "vulkan"
    intel = tmp_path / "intel"
    sysfs_card(intel, 0, "i915")
    backend, why = er.detect_backend(LINUX, er.probe_gpus(nvml=None, root=intel))
    assert backend == "vulkan" and "i915" in why


def test_auto_on_a_mac_and_without_a_gpu(tmp_path: Path) -> None:
    assert er.detect_backend(Platform("darwin", "arm64"), []) == ("metal", "Apple Silicon Mac: Metal")
    assert er.detect_backend(Platform("darwin", "x64"), [])[0] == "cpu"
    backend, why = er.detect_backend(LINUX, er.probe_gpus(nvml=None, root=tmp_path))
    assert backend == "cpu" and "no GPU" in why


def test_auto_on_windows_without_nvidia_is_vulkan() -> None:
    """Windows has no sysfs to see AMD or Intel GPUs by: Vulkan runs on them, and on the CPU."""
    backend, why = er.detect_backend(Platform("windows", "x64"), [])
    assert backend == "vulkan" and "Windows" in why
    nvidia = [Gpu("NVIDIA GeForce RTX 4090", "nvidia", 24 << 30, "NVML")]
    assert er.detect_backend(Platform("windows", "x64"), nvidia)[0] == "cuda"


def test_auto_falls_back_when_the_release_has_no_build_for_the_gpu(releases, data_dir) -> None:
    add_cpu(releases, "b1")
    result = install(data_dir, releases.url, tag="b1", plat=LINUX, backend="auto",
                     gpus=[Gpu("NVIDIA GeForce RTX 4090", "nvidia", 24 << 30, "NVML")])
    assert result.engine.backend == "cpu" and "installing the cpu build instead" in result.reason
    assert any("no prebuilt cuda build" in m and "--from-source --backend cuda" in m for m in result.messages)


# ---- install ----------------------------------------------------------------------------

def test_install_switches_and_find_llama_server_prefers_it(releases, data_dir, tmp_path) -> None:
    add_cpu(releases, "b1")
    old = source_build_binary(data_dir)  # a source build in the old place
    old.parent.mkdir(parents=True)
    old.write_bytes(script("0.0.1"))
    old.chmod(0o755)
    assert find_llama_server(None, data_dir, tmp_path / "cache") == old
    seen: list[tuple[int, int]] = []
    result = do_install(releases, data_dir, "b1", progress=lambda done, total, what: seen.append((done, total)))
    engine = result.engine
    assert (engine.name, engine.tag, engine.backend, engine.version) == ("b1-cpu", "b1", "cpu", "1.0.b1 (fake)")
    assert engine.active and seen and seen[-1][0] == seen[-1][1]
    assert state(data_dir) == {"active": "b1-cpu", "previous": None}
    assert find_llama_server(None, data_dir, tmp_path / "cache") == engine.binary == active_binary(data_dir)
    assert engine.binary == (data_dir / "engines/b1-cpu/llama-b1/llama-server").resolve()
    configured = tmp_path / "mine"
    assert find_llama_server(configured, data_dir, tmp_path / "cache") == configured  # the setting still wins
    assert not [p for p in (data_dir / "engines").iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.llama
def test_install_the_real_llama_server(releases, data_dir) -> None:
    assert LLAMA_SERVER is not None
    add_cpu(releases, "b5", {"llama-server": LLAMA_SERVER.read_bytes()})
    engine = do_install(releases, data_dir, "b5").engine
    assert "0.5.0" in engine.version and engine.binary.read_bytes() == LLAMA_SERVER.read_bytes()
    assert os.access(engine.binary, os.X_OK)


def test_the_directory_is_kept_together(releases, data_dir) -> None:
    """The binary needs the library beside it: the install keeps the whole directory."""
    add_cpu(releases, "b2", {"llama-server": NEEDS_LIB.encode(), "libggml-cpu.sh": b"LIB_VERSION=2.0\n",
                             "libggml-vulkan.sh": b"# another backend\n"})
    engine = do_install(releases, data_dir, "b2").engine
    assert engine.version == "2.0 (needs its lib)"
    assert {p.name for p in engine.binary.parent.iterdir()} == {"llama-server", "libggml-cpu.sh", "libggml-vulkan.sh"}


def test_a_binary_that_fails_its_smoke_test_is_refused(releases, data_dir) -> None:
    add_cpu(releases, "b1")
    do_install(releases, data_dir, "b1")
    add_cpu(releases, "b3", {"llama-server": NEEDS_LIB.encode()})  # its library is missing
    with pytest.raises(InstallError, match="failed `--version`"):
        do_install(releases, data_dir, "b3")
    assert state(data_dir)["active"] == "b1-cpu" and engine_names(data_dir) == {"b1-cpu"}


def test_a_wrong_digest_is_refused_and_the_active_engine_untouched(releases, data_dir) -> None:
    add_cpu(releases, "b1")
    first = do_install(releases, data_dir, "b1").engine
    name = add_cpu(releases, "b2", digests={})
    releases.releases["b2"].digests[name] = "sha256:" + "0" * 64
    with pytest.raises(InstallError, match="sha256 .* is not the expected"):
        do_install(releases, data_dir, "b2")
    assert state(data_dir) == {"active": "b1-cpu", "previous": None}
    assert engine_names(data_dir) == {"b1-cpu"} and active_binary(data_dir) == first.binary


def test_no_digest_is_refused_unless_no_verify(releases, data_dir) -> None:
    name = add_cpu(releases, "b1")
    releases.releases["b1"].digests[name] = None
    with pytest.raises(InstallError, match="no sha256 digest.*--no-verify"):
        do_install(releases, data_dir, "b1")
    assert not any(r.startswith("/download/") for r in releases.requests)  # refused before downloading
    assert do_install(releases, data_dir, "b1", no_verify=True).engine.active


def test_pinned_digests_are_checked_first(releases, data_dir, tmp_path, monkeypatch) -> None:
    name = add_cpu(releases, "b1")
    pinned = tmp_path / "digests.json"
    monkeypatch.setattr(er, "_digests_file", lambda: pinned)
    pinned.write_text(json.dumps({"tags": {"b1": {name: "sha256:" + "1" * 64}}}))
    with pytest.raises(ReleaseError, match="not the one pinned"):
        do_install(releases, data_dir, "b1")
    releases.releases["b1"].digests[name] = None  # the API gives none: the pinned one is used, and wrong
    with pytest.raises(InstallError, match="is not the expected 1111"):
        do_install(releases, data_dir, "b1")
    pinned.write_text(json.dumps({"tags": {"b1": {name: releases.digest("b1", name) or
                                                  "sha256:" + __import__("hashlib").sha256(
                                                      releases.releases["b1"].files[name]).hexdigest()}}}))
    assert do_install(releases, data_dir, "b1").engine.active


def test_the_repository_digests_file_is_valid_json() -> None:
    path = Path(__file__).resolve().parents[3] / "resources" / "engine-digests.json"
    assert isinstance(json.loads(path.read_text()), dict) and isinstance(er.pinned_digests(path), dict)


ESCAPES = {
    "dot-dot": {"../x": b"outside", "llama-server": script("1")},
    "absolute": {"/tmp/siesta-escape": b"outside", "llama-server": script("1")},
    "symlink out": {"llama-server": script("1"), "lib": ("symlink", "../../../etc/passwd")},
    "absolute symlink": {"llama-server": script("1"), "lib": ("symlink", "/etc/passwd")},
}


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_an_archive_with_a_path_that_escapes_is_refused(releases, data_dir, kind) -> None:
    add_cpu(releases, "b1")
    do_install(releases, data_dir, "b1")
    add_cpu(releases, "b2", ESCAPES[kind])
    with pytest.raises(InstallError, match="refused"):
        do_install(releases, data_dir, "b2")
    assert state(data_dir)["active"] == "b1-cpu" and engine_names(data_dir) == {"b1-cpu"}
    assert not (data_dir / "x").exists() and not Path("/tmp/siesta-escape").exists()


@pytest.mark.parametrize("name", ["../x", "/abs/x", "C:/x", "a/../../x"])
def test_a_zip_with_a_path_that_escapes_is_refused(tmp_path, name) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"llama-server.exe": b"MZ", name: b"outside"}))
    (tmp_path / "out").mkdir()
    with pytest.raises(InstallError, match="refused"):
        ei.safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_windows_zip_with_cudart_goes_beside_the_binary(releases, data_dir) -> None:
    releases.add("b4", {"llama-b4-bin-win-cuda-12.4-x64.zip": zip_bytes({"llama-server.exe": script("4"),
                                                                          "ggml-cuda.dll": b"dll"}),
                        "cudart-llama-bin-win-cuda-12.4-x64.zip": zip_bytes({"cudart64_12.dll": b"rt"})})
    engine = install(data_dir, releases.url, tag="b4", backend="cuda", plat=Platform("windows", "x64")).engine
    assert {p.name for p in engine.binary.parent.iterdir()} >= {"llama-server.exe", "ggml-cuda.dll", "cudart64_12.dll"}
    assert engine.backend == "cuda"


# ---- update, rollback, pruning ----------------------------------------------------------

def test_update_rollback_and_old_engines_removed(releases, data_dir) -> None:
    add_cpu(releases, "b1")
    do_install(releases, data_dir, "b1")
    assert update(data_dir, releases.url, plat=LINUX) is None  # b1 is the latest
    add_cpu(releases, "b2")
    result = update(data_dir, releases.url, plat=LINUX)
    assert result is not None and result.engine.name == "b2-cpu"
    assert state(data_dir) == {"active": "b2-cpu", "previous": "b1-cpu"}
    add_cpu(releases, "b3")
    update(data_dir, releases.url, plat=LINUX)
    assert state(data_dir) == {"active": "b3-cpu", "previous": "b2-cpu"}
    assert engine_names(data_dir) == {"b3-cpu", "b2-cpu"}  # b1 removed
    back = rollback(data_dir)
    assert back.name == "b2-cpu" and back.active and active_binary(data_dir) == back.binary
    assert [(e.name, e.active, e.previous) for e in installed(data_dir)] == [("b2-cpu", True, False),
                                                                            ("b3-cpu", False, True)]
    rollback(data_dir)
    assert state(data_dir)["active"] == "b3-cpu"


def test_rollback_without_a_previous_engine(data_dir) -> None:
    with pytest.raises(InstallError, match="no previous engine"):
        rollback(data_dir)


def test_installing_the_active_release_again_downloads_nothing(releases, data_dir) -> None:
    add_cpu(releases, "b1")
    do_install(releases, data_dir, "b1")
    before = len([r for r in releases.requests if r.startswith("/download/")])
    assert do_install(releases, data_dir, "b1").engine.active
    assert len([r for r in releases.requests if r.startswith("/download/")]) == before


def test_offline_and_unknown_tag(data_dir, releases) -> None:
    with pytest.raises(er.Offline, match="cannot reach"):
        install(data_dir, "http://127.0.0.1:9", tag="b1", backend="cpu", plat=LINUX)
    with pytest.raises(ReleaseError, match="no such release"):
        do_install(releases, data_dir, "b404")
    assert not (data_dir / "engines" / "state.json").exists()


# ---- the CLI ----------------------------------------------------------------------------

def cli(*argv: str) -> int:
    from app.cli import main

    return main(list(argv))


@pytest.fixture
def cli_releases(releases, monkeypatch):
    monkeypatch.setenv("SIESTA_ENGINE_RELEASES_URL", releases.url)
    return releases


def cli_data_dir() -> Path:
    from app.core.config.paths import Paths

    return Paths.resolve().data_dir


def test_cli_install_info_update_rollback(cli_releases, capsys) -> None:
    add_cpu(cli_releases, "b1")
    assert cli("engine", "install", "--backend", "cpu", "--tag", "b1") == 0
    out = capsys.readouterr()
    assert "llama.cpp b1, backend cpu (--backend cpu), version 1.0.b1 (fake)" in out.out
    assert "downloading llama-b1-bin-ubuntu-x64.tar.gz" in out.err
    assert cli("engine", "info") == 0
    out = capsys.readouterr().out
    assert "(installed engine b1-cpu: llama.cpp b1, backend cpu)" in out and "b1-cpu" in out and "active" in out
    assert cli("engine", "update") == 0
    assert "already llama.cpp's latest" in capsys.readouterr().out
    add_cpu(cli_releases, "b2")
    assert cli("engine", "update") == 0
    assert "llama.cpp b2, backend cpu" in capsys.readouterr().out
    assert state(cli_data_dir()) == {"active": "b2-cpu", "previous": "b1-cpu"}
    assert cli("engine", "rollback") == 0
    assert "active engine: b1-cpu" in capsys.readouterr().out
    assert cli("engine", "info") == 0
    out = capsys.readouterr().out
    assert "b1-cpu" in out.splitlines()[0] and "previous" in out


def test_cli_takes_the_releases_url_as_a_flag(releases, capsys) -> None:
    add_cpu(releases, "b1")
    assert cli("engine", "install", "--engine-releases-url", releases.url, "--backend", "cpu", "--tag", "b1") == 0
    assert state(cli_data_dir())["active"] == "b1-cpu"


def test_cli_auto_on_this_machine_and_the_default_tag(cli_releases, capsys, monkeypatch) -> None:
    monkeypatch.setattr(er, "probe_gpus", lambda: [])
    monkeypatch.setattr(er, "current_platform", lambda *a: LINUX)
    monkeypatch.setattr(ei, "current_platform", lambda *a: LINUX)
    add_cpu(cli_releases, er.DEFAULT_TAG)
    assert cli("engine", "install") == 0
    assert "no GPU found" in capsys.readouterr().out
    assert f"/releases/tags/{er.DEFAULT_TAG}" in cli_releases.requests


def test_cli_without_a_build_or_network_prints_the_source_build(cli_releases, capsys, monkeypatch) -> None:
    add_cpu(cli_releases, "b1")
    assert cli("engine", "install", "--backend", "rocm", "--tag", "b1") == 1
    err = capsys.readouterr().err
    assert "no prebuilt rocm build" in err and "siesta engine install --from-source --backend rocm" in err
    monkeypatch.setenv("SIESTA_ENGINE_RELEASES_URL", "http://127.0.0.1:9")
    assert cli("engine", "install", "--backend", "vulkan", "--tag", "b1") == 1
    err = capsys.readouterr().err
    assert "no network access" in err and "siesta engine install --from-source --backend vulkan" in err


def test_cli_refuses_a_bad_archive_and_rollback_without_previous(cli_releases, capsys) -> None:
    add_cpu(cli_releases, "b1", ESCAPES["dot-dot"])
    assert cli("engine", "install", "--backend", "cpu", "--tag", "b1") == 1
    assert "refused" in capsys.readouterr().err
    assert cli("engine", "rollback") == 1
    assert "no previous engine" in capsys.readouterr().err


def test_gpu_stays_the_source_build_alias() -> None:
    from app.cli import build_parser

    args = build_parser().parse_args(["engine", "install", "--gpu", "vulkan"])
    assert args.gpu == "vulkan" and args.engine_command == "install"
    args = build_parser().parse_args(["engine", "install", "--from-source", "--backend", "cuda"])
    assert args.from_source and args.backend == "cuda"


def test_a_source_build_takes_over_from_the_installed_engine(cli_releases, capsys, monkeypatch, tmp_path) -> None:
    from app.core.engine import build as engine_build

    add_cpu(cli_releases, "b1")
    assert cli("engine", "install", "--backend", "cpu", "--tag", "b1") == 0
    built: list[str] = []

    def fake_build(dest: Path, *, gpu: str, progress: Any) -> Path:
        built.append(gpu)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / engine_build.binary_name()).write_bytes(script("9.9"))
        (dest / engine_build.binary_name()).chmod(0o755)
        return dest / engine_build.binary_name()

    monkeypatch.setattr(engine_build, "build_llama_server", fake_build)
    assert cli("engine", "install", "--gpu", "vulkan") == 0
    assert built == ["vulkan"] and "back to it: siesta engine rollback" in capsys.readouterr().out
    data = cli_data_dir()
    assert find_llama_server(None, data, tmp_path / "c") == source_build_binary(data)
    assert cli("engine", "rollback") == 0
    assert find_llama_server(None, data, tmp_path / "c") == active_binary(data) is not None


# ---- a chat through Siesta on the installed engine --------------------------------------

@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_a_chat_through_siesta_on_the_installed_engine(releases, paths, write_recipe, front_door,
                                                              tmp_path) -> None:
    import asyncio

    from app.demo_model import write_tiny_model

    assert LLAMA_SERVER is not None
    add_cpu(releases, "b5", {"llama-server": LLAMA_SERVER.read_bytes()})
    engine = (await asyncio.to_thread(do_install, releases, paths.data_dir, "b5")).engine
    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model}"\nargs = ["-t", "1", "--ctx-size", "256"]\n')
    manager, http, url = await front_door(llama_server=None)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        answer = await resp.json()
    assert resp.status == 200 and isinstance(answer["choices"][0]["message"]["content"], str)
    pid = manager.get("tiny").pid
    assert psutil.Process(pid).cmdline()[0] == str(engine.binary)
