"""GPU memory readings against fakes at their boundary: a fake NVML module with pynvml's
function names, and /proc and /sys files in a temporary tree. No GPU is needed, and every
figure asserted here comes from the fake inputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.core.memory.readers import linux as gpu_memory  # the DRM reader (moved from gpus.py)
from app.core.memory.gpus import NVML_VALUE_NOT_AVAILABLE, GpuDevice, GpuMemory, device_local_bytes, parse_fdinfo

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10


# ---- a fake NVML ------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml:
    """pynvml's functions over a list of devices: dicts with name, total, used, compute and
    graphics (lists of (pid, usedGpuMemory)); a value that is an exception is raised."""

    NVMLError = NVMLError

    def __init__(self, devices: list[dict[str, Any]], init_error: Exception | None = None) -> None:
        self.gpus = devices
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ("handle", index)

    def _gpu(self, handle: Any) -> dict[str, Any]:
        return self.gpus[handle[1]]

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle)["name"]

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle)
        return SimpleNamespace(total=gpu["total"], used=gpu["used"], free=gpu["total"] - gpu["used"])

    def _processes(self, handle: Any, key: str) -> list[Any]:
        value = self._gpu(handle).get(key, [])
        if isinstance(value, Exception):
            raise value
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in value]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(handle, "graphics")


def two_gpus() -> list[dict[str, Any]]:
    return [
        {"name": "NVIDIA GeForce RTX 4090", "total": 24 * GiB, "used": 14 * GiB,
         "compute": [(4242, 9 * GiB), (500, 3 * GiB)], "graphics": [(4242, 9 * GiB), (600, 300 * MiB)]},
        {"name": "NVIDIA GeForce RTX 3060", "total": 12 * GiB, "used": 2 * GiB,
         "compute": [(4243, 1536 * MiB)], "graphics": []},
    ]


def proc_pids(root: Path, *pids: int) -> None:
    """Processes visible in the tree's /proc (as other processes on the machine are)."""
    for pid in pids:
        (root / "proc" / str(pid)).mkdir(parents=True, exist_ok=True)


# ---- NVIDIA --------------------------------------------------------------------------------------


def test_nvml_devices_and_per_process_use(tmp_path: Path) -> None:
    nvml = FakeNvml(two_gpus())
    proc_pids(tmp_path, 4242, 4243, 500, 600)
    gpus = GpuMemory(nvml=nvml, root=tmp_path)

    assert gpus.devices() == [
        GpuDevice("gpu0", "NVIDIA GeForce RTX 4090", "nvidia", 24 * GiB, 14 * GiB),
        GpuDevice("gpu1", "NVIDIA GeForce RTX 3060", "nvidia", 12 * GiB, 2 * GiB),
    ]
    assert gpus.devices()[0].free == 10 * GiB
    # 4242 is in the compute and the graphics list of gpu0: one figure, not two.
    assert gpus.usage_of([4242, 4243]) == {"gpu0": 9 * GiB, "gpu1": 1536 * MiB}
    assert gpus.usage_of([4243]) == {"gpu1": 1536 * MiB}
    assert gpus.usage_of([4242, 4242]) == {"gpu0": 9 * GiB}
    assert gpus.usage_of([]) == {}
    # A process on none of the GPUs (a CPU-only server) holds nothing there.
    proc_pids(tmp_path, 7777)
    assert gpus.usage_of([7777]) == {}
    assert gpus.usage_by_device([7777]) == {"gpu0": 0, "gpu1": 0}

    assert nvml.inits == 1  # once, lazily, for all those calls
    gpus.close()
    assert nvml.shutdowns == 1
    gpus.close()
    assert nvml.shutdowns == 1


def test_nvml_is_initialised_lazily(tmp_path: Path) -> None:
    nvml = FakeNvml(two_gpus())
    gpus = GpuMemory(nvml=nvml, root=tmp_path)
    assert nvml.inits == 0
    gpus.close()
    assert nvml.shutdowns == 0
    gpus.devices()
    assert nvml.inits == 1


def test_no_pynvml_installed_means_no_nvidia(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    gpus = GpuMemory(root=tmp_path)
    assert gpus.devices() == []
    assert gpus.usage_of([1234]) == {}
    gpus.close()


def test_nvml_init_failing_means_no_nvidia_and_is_not_retried(tmp_path: Path) -> None:
    nvml = FakeNvml(two_gpus(), init_error=NVMLError("Driver Not Loaded"))
    gpus = GpuMemory(nvml=nvml, root=tmp_path)
    assert gpus.devices() == []
    assert gpus.devices() == []
    assert gpus.usage_of([4242]) == {}
    assert nvml.inits == 1
    gpus.close()
    assert nvml.shutdowns == 0


def test_nvml_none_means_no_nvidia(tmp_path: Path) -> None:
    assert GpuMemory(nvml=None, root=tmp_path).devices() == []


@pytest.mark.parametrize("used", [None, NVML_VALUE_NOT_AVAILABLE])
def test_nvml_without_per_process_figures(tmp_path: Path, used: int | None) -> None:
    """WDDM style: the pid is listed, its memory is not."""
    gpus_in = two_gpus()
    gpus_in[0]["compute"] = [(4242, used)]
    gpus_in[0]["graphics"] = []
    proc_pids(tmp_path, 4242, 4243)
    gpus = GpuMemory(nvml=FakeNvml(gpus_in), root=tmp_path)
    assert gpus.usage_of([4242]) is None
    assert gpus.usage_by_device([4242]) == {"gpu0": None, "gpu1": 0}
    # The totals are there all the same.
    assert [(d.total, d.used) for d in gpus.devices()] == [(24 * GiB, 14 * GiB), (12 * GiB, 2 * GiB)]


def test_nvml_pids_from_another_pid_namespace(tmp_path: Path) -> None:
    """In a container without the host's pid namespace NVML lists host pids, none of which is a
    process here: whether ours is among them cannot be told."""
    proc_pids(tmp_path, 17)  # the server, as the container sees it
    gpus = GpuMemory(nvml=FakeNvml(two_gpus()), root=tmp_path)  # lists 4242, 500, 600, 4243
    assert gpus.usage_of([17]) is None
    assert gpus.usage_by_device([17]) == {"gpu0": None, "gpu1": None}
    assert [d.total for d in gpus.devices()] == [24 * GiB, 12 * GiB]


def test_nvml_process_listing_not_supported(tmp_path: Path) -> None:
    gpus_in = two_gpus()
    gpus_in[1]["compute"] = NVMLError("Not Supported")
    proc_pids(tmp_path, 4242, 4243, 500, 600)
    gpus = GpuMemory(nvml=FakeNvml(gpus_in), root=tmp_path)
    assert gpus.usage_by_device([4242]) == {"gpu0": 9 * GiB, "gpu1": None}
    assert gpus.usage_of([4242]) is None


def test_nvml_under_wsl_has_no_per_process_figures(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("5.15.153.1-microsoft-standard-WSL2\n")
    proc_pids(tmp_path, 4242, 4243, 500, 600)
    gpus = GpuMemory(nvml=FakeNvml(two_gpus()), root=tmp_path)
    assert gpus.usage_of([4242]) is None
    assert gpus.devices()[0].total == 24 * GiB


def test_nvml_figures_that_fail_are_unknown(tmp_path: Path) -> None:
    nvml = FakeNvml(two_gpus())

    def broken(handle: Any) -> Any:
        raise NVMLError("GPU is lost")

    nvml.nvmlDeviceGetMemoryInfo = broken  # type: ignore[method-assign]
    devices = GpuMemory(nvml=nvml, root=tmp_path).devices()
    assert [(d.id, d.total, d.used, d.free) for d in devices] == [("gpu0", None, None, None), ("gpu1", None, None, None)]


def test_nvml_bytes_names_are_decoded(tmp_path: Path) -> None:
    nvml = FakeNvml(two_gpus())
    nvml.gpus[0]["name"] = b"Tesla T4"
    assert GpuMemory(nvml=nvml, root=tmp_path).devices()[0].name == "Tesla T4"


# ---- DRM: a sysfs and procfs tree -------------------------------------------------------------------

AMD_NEW = """pos:\t0
flags:\t02100002
mnt_id:\t24
ino:\t1053
drm-driver:\tamdgpu
drm-client-id:\t7
drm-pdev:\t0000:03:00.0
drm-engine-gfx:\t12345 ns
drm-total-vram:\t2097152 KiB
drm-shared-vram:\t0
drm-resident-vram:\t1048576 KiB
drm-total-gtt:\t2 MiB
drm-resident-gtt:\t2 MiB
drm-memory-vram:\t1048576 KiB
drm-memory-gtt: \t2048 KiB
drm-memory-cpu: \t0 KiB
amd-memory-visible-vram:\t1048576 KiB
"""

AMD_OLD = """pos:\t0
drm-driver:\tamdgpu
drm-pdev:\t0000:03:00.0
drm-client-id:\t8
drm-memory-vram:\t1024 MiB
drm-memory-gtt: \t2048 KiB
drm-memory-cpu: \t0 KiB
"""

I915_DISCRETE = """pos:\t0
drm-driver:\ti915
drm-pdev:\t0000:00:02.0
drm-client-id:\t9
drm-engine-render:\t9876543 ns
drm-engine-capacity-video:\t2
drm-total-system0:\t64 MiB
drm-resident-system0:\t64 MiB
drm-total-local0:\t256 MiB
drm-resident-local0:\t131072 KiB
drm-resident-stolen-local0:\t4096
"""

I915_INTEGRATED = """drm-driver:\ti915
drm-pdev:\t0000:00:02.0
drm-client-id:\t10
drm-total-system0:\t512 MiB
drm-resident-system0:\t512 MiB
drm-total-stolen-system0:\t0
"""

I915_NO_MEMORY_KEYS = """drm-driver:\ti915
drm-pdev:\t0000:00:02.0
drm-client-id:\t11
drm-engine-render:\t100 ns
"""


def pci_card(root: Path, card: int, pdev: str, driver: str, render: int, **files: str) -> None:
    """A card as sysfs shows it: /sys/class/drm/cardN/device -> the device's directory, whose
    driver links to the driver and whose drm/ lists the card and its render node."""
    device = root / "sys/devices/pci0000:00" / pdev
    (device / "drm" / f"card{card}").mkdir(parents=True)
    (device / "drm" / f"renderD{render}").mkdir()
    os.symlink(f"../../../../bus/pci/drivers/{driver}", device / "driver")
    for name, text in files.items():
        (device / name).write_text(text)
    for node in (f"card{card}", f"renderD{render}"):
        entry = root / "sys/class/drm" / node
        entry.mkdir(parents=True)
        os.symlink(f"../../../devices/pci0000:00/{pdev}", entry / "device")


def drm_machine(root: Path) -> None:
    """card0 amdgpu with VRAM totals, card1 i915 without, card2 a display-only simpledrm, a
    connector card0-DP-1 and the render nodes."""
    pci_card(root, 0, "0000:03:00.0", "amdgpu", 128,
             mem_info_vram_total=f"{16 * GiB}\n", mem_info_vram_used=f"{5 * GiB}\n")
    pci_card(root, 1, "0000:00:02.0", "i915", 129)
    simple = root / "sys/devices/platform/simple-framebuffer.0"
    (simple / "drm/card2").mkdir(parents=True)
    os.symlink("../../../bus/platform/drivers/simple-framebuffer", simple / "driver")
    (root / "sys/class/drm/card2").mkdir()
    os.symlink("../../../devices/platform/simple-framebuffer.0", root / "sys/class/drm/card2/device")
    (root / "sys/class/drm/card0-DP-1").mkdir()
    (root / "sys/class/drm/card0-DP-1/status").write_text("connected\n")
    (root / "sys/class/drm/version").write_text("drm 1.1.0 20060810\n")


def process(root: Path, pid: int, fds: dict[int, tuple[str, str | None]]) -> None:
    """/proc/PID/fd/N -> target, and /proc/PID/fdinfo/N (when text is given)."""
    (root / "proc" / str(pid) / "fd").mkdir(parents=True)
    (root / "proc" / str(pid) / "fdinfo").mkdir()
    for fd, (target, text) in fds.items():
        os.symlink(target, root / "proc" / str(pid) / "fd" / str(fd))
        if text is not None:
            (root / "proc" / str(pid) / "fdinfo" / str(fd)).write_text(text)


def test_drm_devices_from_sysfs(tmp_path: Path) -> None:
    drm_machine(tmp_path)
    gpus = GpuMemory(nvml=None, root=tmp_path)
    assert gpus.devices() == [
        GpuDevice("gpu0", "amdgpu 0000:03:00.0", "amdgpu", 16 * GiB, 5 * GiB),
        GpuDevice("gpu1", "i915 0000:00:02.0", "i915", None, None),
    ]
    assert [d.free for d in gpus.devices()] == [11 * GiB, None]


def test_drm_device_product_name(tmp_path: Path) -> None:
    pci_card(tmp_path, 0, "0000:03:00.0", "amdgpu", 128, product_name="Radeon Pro W7900\n")
    assert GpuMemory(nvml=None, root=tmp_path).devices()[0].name == "Radeon Pro W7900"


def test_drm_per_process_use_counts_each_client_once(tmp_path: Path) -> None:
    drm_machine(tmp_path)
    process(tmp_path, 100, {
        0: ("/dev/null", None),
        1: ("socket:[4711]", None),
        3: ("/dev/dri/renderD128", AMD_NEW),
        4: ("/dev/dri/renderD128", AMD_NEW),  # a dup of fd 3: the same client
        5: ("/dev/dri/renderD129", I915_DISCRETE),
        6: ("/dev/dri/renderD128", None),  # closed between listing and reading
    })
    process(tmp_path, 101, {
        3: ("/dev/dri/renderD128", AMD_NEW),  # inherited from 100: still the same client
        7: ("/dev/dri/renderD128", AMD_OLD),  # a client of its own, older kernel's keys
    })
    gpus = GpuMemory(nvml=None, root=tmp_path)
    # amdgpu: client 7 resident vram 1048576 KiB (not its total, nor gtt), client 8 1024 MiB.
    # i915: local0 resident 131072 KiB; system0 and stolen-local0 are not VRAM.
    assert gpus.usage_of([100, 101]) == {"gpu0": 1048576 * KiB + 1024 * MiB, "gpu1": 131072 * KiB}
    assert gpus.usage_of([101]) == {"gpu0": 1048576 * KiB + 1024 * MiB}
    assert gpus.usage_of([100]) == {"gpu0": 1048576 * KiB, "gpu1": 131072 * KiB}
    # A vanished pid holds nothing, and spoils nothing.
    assert gpus.usage_of([100, 99999]) == {"gpu0": 1048576 * KiB, "gpu1": 131072 * KiB}
    assert gpus.usage_of([99999]) == {}


def test_drm_client_mapped_by_device_node_without_pdev(tmp_path: Path) -> None:
    drm_machine(tmp_path)
    text = "drm-driver:\tamdgpu\ndrm-client-id:\t3\ndrm-resident-vram:\t4096\n"
    process(tmp_path, 200, {3: ("/dev/dri/renderD128", text), 4: ("/dev/dri/card0", text)})
    assert GpuMemory(nvml=None, root=tmp_path).usage_of([200]) == {"gpu0": 4096}


def test_drm_integrated_gpu_holds_no_vram(tmp_path: Path) -> None:
    drm_machine(tmp_path)
    process(tmp_path, 300, {3: ("/dev/dri/renderD129", I915_INTEGRATED)})
    gpus = GpuMemory(nvml=None, root=tmp_path)
    assert gpus.usage_of([300]) == {}
    assert gpus.usage_by_device([300]) == {"gpu0": 0, "gpu1": 0}


def test_drm_client_without_memory_figures_is_unknown(tmp_path: Path) -> None:
    drm_machine(tmp_path)
    process(tmp_path, 400, {3: ("/dev/dri/renderD129", I915_NO_MEMORY_KEYS), 4: ("/dev/dri/renderD128", AMD_OLD)})
    gpus = GpuMemory(nvml=None, root=tmp_path)
    assert gpus.usage_by_device([400]) == {"gpu0": 1024 * MiB, "gpu1": None}
    assert gpus.usage_of([400]) is None


def test_drm_fds_that_cannot_be_listed_are_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drm_machine(tmp_path)
    process(tmp_path, 500, {3: ("/dev/dri/renderD128", AMD_OLD)})
    real = os.listdir

    def listdir(path: Any) -> list[str]:
        if str(path).endswith("/proc/500/fd"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(gpu_memory.os, "listdir", listdir)
    gpus = GpuMemory(nvml=None, root=tmp_path)
    assert gpus.usage_of([500]) is None


def test_no_gpu_at_all(tmp_path: Path) -> None:
    (tmp_path / "sys/class/drm").mkdir(parents=True)
    (tmp_path / "sys/class/drm/version").write_text("drm 1.1.0 20060810\n")
    gpus = GpuMemory(nvml=None, root=tmp_path)
    assert gpus.devices() == []
    assert gpus.usage_of([1]) == {}


# ---- NVIDIA and AMD in one machine ------------------------------------------------------------------


def test_mixed_machine_orders_nvidia_first_then_cards_by_number(tmp_path: Path) -> None:
    pci_card(tmp_path, 0, "0000:01:00.0", "nvidia", 128)  # NVML's; not listed twice
    pci_card(tmp_path, 10, "0000:0a:00.0", "amdgpu", 138,
             mem_info_vram_total=f"{8 * GiB}\n", mem_info_vram_used=f"{1 * GiB}\n")
    pci_card(tmp_path, 2, "0000:03:00.0", "amdgpu", 130,
             mem_info_vram_total=f"{16 * GiB}\n", mem_info_vram_used=f"{5 * GiB}\n")
    proc_pids(tmp_path, 500, 600, 4243)
    process(tmp_path, 4242, {3: ("/dev/dri/renderD130", AMD_OLD)})
    gpus = GpuMemory(nvml=FakeNvml(two_gpus()), root=tmp_path)
    assert [(d.id, d.kind, d.total) for d in gpus.devices()] == [
        ("gpu0", "nvidia", 24 * GiB), ("gpu1", "nvidia", 12 * GiB),
        ("gpu2", "amdgpu", 16 * GiB), ("gpu3", "amdgpu", 8 * GiB),
    ]
    assert gpus.usage_of([4242]) == {"gpu0": 9 * GiB, "gpu2": 1024 * MiB}
    assert gpus.usage_by_device([4242]) == {"gpu0": 9 * GiB, "gpu1": 0, "gpu2": 1024 * MiB, "gpu3": 0}


def test_nvidia_card_without_nvml_is_listed_but_unknown(tmp_path: Path) -> None:
    pci_card(tmp_path, 0, "0000:01:00.0", "nvidia", 128)
    pci_card(tmp_path, 1, "0000:03:00.0", "amdgpu", 129, mem_info_vram_total=f"{16 * GiB}\n")
    gpus = GpuMemory(nvml=None, root=tmp_path)
    assert gpus.devices() == [
        GpuDevice("gpu0", "nvidia 0000:01:00.0", "nvidia", None, None),
        GpuDevice("gpu1", "amdgpu 0000:03:00.0", "amdgpu", 16 * GiB, None),
    ]
    proc_pids(tmp_path, 42)
    assert gpus.usage_of([42]) is None
    assert gpus.usage_by_device([42]) == {"gpu0": None, "gpu1": 0}


# ---- the fdinfo format ----------------------------------------------------------------------------


def test_fdinfo_sizes_and_regions() -> None:
    info = parse_fdinfo(AMD_NEW)
    assert info["drm-memory-gtt"] == "2048 KiB"
    assert info["drm-driver"] == "amdgpu"
    assert device_local_bytes(info) == 1048576 * KiB
    assert device_local_bytes(parse_fdinfo("drm-total-vram0:\t3 MiB\ndrm-resident-vram1:\t5\n")) == 3 * MiB + 5
    assert device_local_bytes(parse_fdinfo("drm-total-local0:\t7 KiB\ndrm-total-local1:\t1 MiB\n")) == 7 * KiB + MiB
    assert device_local_bytes(parse_fdinfo("drm-resident-memory:\t9 MiB\n")) == 0  # system RAM (ARM drivers)
    # xe's engine counters are not memory regions.
    assert device_local_bytes(parse_fdinfo("drm-cycles-rcs:\t500\ndrm-total-cycles-rcs:\t1000\n")) is None
    # A value in no unit this reader knows is not read as some other size.
    assert device_local_bytes(parse_fdinfo("drm-resident-vram:\t12 TiB\n")) is None
    assert device_local_bytes(parse_fdinfo("drm-resident-vram:\t12 TiB\ndrm-total-vram:\t1 MiB\n")) == MiB
