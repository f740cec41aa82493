"""The doctor's llama-server: found as the manager finds it, its version and devices asked of
the binary itself. The binaries here are small real scripts that answer ``--version`` and
``--list-devices`` as llama-server does (a CPU build, a CUDA build, an old build that does not
know ``--list-devices``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.core.config.settings import load_settings
from app.core.doctor.engine import engine_items, list_devices
from app.core.engine import locate

CPU = "Available devices:\n  (none)"
CUDA = ("ggml_cuda_init: found 2 CUDA devices:\nAvailable devices:\n"
        "  CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)\n"
        "  CUDA1: NVIDIA GeForce RTX 3060 (12000 MiB, 11800 MiB free)")


def llama_server(where: Path, devices: str | None = CPU, version: str = "version: 6000 (abc1234)") -> Path:
    """A script that answers like llama-server; ``devices=None``: an old one without --list-devices."""
    where.parent.mkdir(parents=True, exist_ok=True)
    listing = (f"cat <<'END'\n{devices}\nEND\nexit 0" if devices is not None
               else "echo 'error: invalid argument: --list-devices' >&2; exit 1")
    where.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo '{version}'; echo 'built with cc for x86_64'; exit 0 ;;
  --list-devices) {listing} ;;
esac
exit 2
""")
    where.chmod(0o755)
    return where


def items(paths, **flags) -> dict:  # noqa: ANN001, ANN003
    settings = load_settings(paths.settings_file, flags)
    return {item.key: item for item in engine_items(paths, settings)}


def test_a_cpu_llama_server_set_by_a_flag(paths, tmp_path: Path) -> None:  # noqa: ANN001
    binary = llama_server(tmp_path / "bin" / "llama-server")
    found = items(paths, llama_server=str(binary))
    assert found["path"].value == str(binary)
    assert found["path"].source == "the llama_server setting (--llama-server)"
    assert found["version"].value == "6000 (abc1234)" and found["version"].source == "llama-server --version"
    assert found["backend"].value == {"backend": "cpu", "devices": []}
    assert found["backend"].shown() == "CPU only (it lists no GPU device)"
    assert found["installed"].value == []


def test_a_cuda_build_names_its_devices(paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    binary = llama_server(tmp_path / "cuda" / "llama-server", CUDA)
    monkeypatch.setenv("SIESTA_LLAMA_SERVER", str(binary))
    found = items(paths)
    assert found["path"].source == "the llama_server setting (SIESTA_LLAMA_SERVER)"
    assert found["backend"].value["backend"] == "cuda"
    assert found["backend"].shown() == "CUDA"
    assert found["backend"].notes == ("device CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)",
                                      "device CUDA1: NVIDIA GeForce RTX 3060 (12000 MiB, 11800 MiB free)")


def test_an_old_build_without_list_devices(tmp_path: Path, paths) -> None:  # noqa: ANN001
    binary = llama_server(tmp_path / "old" / "llama-server", devices=None)
    devices, why = list_devices(binary)
    assert devices is None and "--list-devices` failed (exit 1: error: invalid argument" in why
    backend = items(paths, llama_server=str(binary))["backend"]
    assert not backend.found and backend.missing.startswith("not an installed engine, and `--list-devices` failed")


def test_an_installed_engine_says_its_backend_as_recorded(paths, tmp_path: Path) -> None:  # noqa: ANN001
    engine = paths.data_dir / "engines" / "b6000-vulkan"
    llama_server(engine / "build" / "bin" / "llama-server", "Available devices:\n  Vulkan0: AMD Radeon (16368 MiB)")
    (engine / "engine.json").write_text(json.dumps({"binary": "build/bin/llama-server", "tag": "b6000",
                                                    "backend": "vulkan", "version": "6000 (abc1234)"}))
    (paths.data_dir / "engines" / "state.json").write_text(json.dumps({"active": "b6000-vulkan"}))
    found = items(paths)
    assert found["path"].value == str((engine / "build/bin/llama-server").resolve())
    assert found["path"].source.startswith("the active engine of `siesta engine install`")
    assert found["backend"].shown() == "vulkan (llama.cpp b6000, installed engine b6000-vulkan)"
    assert found["backend"].source.startswith(f"{engine / 'engine.json'} (recorded at install)")
    assert found["backend"].notes == ("device Vulkan0: AMD Radeon (16368 MiB)",)
    assert found["installed"].shown() == "b6000-vulkan (active): llama.cpp b6000, backend vulkan"


def test_none_found(paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "no-cache"))
    found = items(paths)
    assert not found["path"].found and found["path"].missing.startswith("none found")
    assert "version" not in found and "backend" not in found


def test_a_file_that_cannot_run(paths, tmp_path: Path) -> None:  # noqa: ANN001
    binary = tmp_path / "llama-server"
    binary.write_text("not a program")
    found = items(paths, llama_server=str(binary))
    assert found["path"].missing == f"{binary} is not an executable file"


def test_found_on_path(paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    llama_server(tmp_path / "bin" / "llama-server")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "no-cache"))
    assert items(paths)["path"].source == "PATH"


def test_found_in_the_build_cache(paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    llama_server(tmp_path / "cache" / "llama-cpp-python-0.3.36" / "llama-server")
    monkeypatch.setenv("SIESTA_ENGINE_CACHE", str(tmp_path / "cache"))
    assert items(paths)["path"].source == f"the build cache of scripts/build-llama-server.sh ({tmp_path / 'cache'})"


def test_the_source_build_in_the_data_dir(paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    llama_server(locate.source_build_binary(paths.data_dir))
    assert items(paths)["path"].source == f"the source build in Siesta's data dir ({paths.data_dir / 'engine'})"
