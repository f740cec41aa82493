"""Linux: RAM through psutil, GPUs through NVML and the kernel's DRM accounting.

**RAM** (:meth:`LinuxReader.ram`): psutil's ``virtual_memory()``, which reads
``/proc/meminfo`` (``MemTotal``, and ``MemAvailable``: the kernel's own estimate of what can
be allocated without swapping). Measured here (Python 3.11, psutil 7.2, 2 cores, best of five
runs of 20,000 calls): psutil 31 us a call, Siesta's own parse of ``/proc/meminfo`` 39 us, with
the same figures; so there is no fast path of Siesta's own. :func:`meminfo` still reads a
given tree's ``proc/meminfo`` (``read_ram(root)``, for tests and ``siesta doctor``); there a
missing ``MemAvailable`` is ``None``, never guessed from ``MemFree``.

**A process's RAM**: its resident set size (psutil), as the base reader.

**GPUs** (:class:`LinuxGpus`), ids ``gpu0``, ``gpu1``, ... in a stable order: NVIDIA GPUs by
NVML index first, then DRM cards by card number.

* NVIDIA through NVML only (:mod:`.nvml`). Without NVML a DRM card driven by ``nvidia`` is
  listed with unknown figures (it exists, but cannot be read). With NVML, cards driven by
  ``nvidia`` are left out of the DRM list (NVML has them).
* Other GPUs through sysfs, ``/sys/class/drm/cardN`` (connectors such as ``card0-DP-1`` and
  ``renderD*`` nodes are not cards; a card with no render node is a display controller
  such as simpledrm, not a GPU, and is left out): the driver is the basename of
  ``device/driver``, the PCI address the basename of ``device``, the name ``device/product_name``
  where the driver gives one, else driver and address. Total and used are
  ``device/mem_info_vram_total`` and ``device/mem_info_vram_used`` (amdgpu); where a driver has
  no such files (i915, xe, ...) both are ``None``.

The set of devices is read once; the memory figures at every call.

**Per-process use**, only for the pids given (no /proc-wide scan):

* NVIDIA: ``nvmlDeviceGetComputeRunningProcesses`` and ``...GraphicsRunningProcesses`` give
  (pid, usedGpuMemory); a pid in both lists counts once. The figure of a GPU is unknown when
  those calls fail, under WSL (``microsoft`` in the kernel release: WDDM gives no per-process
  figures), when one of the pids is listed without a figure (``None`` or
  ``NVML_VALUE_NOT_AVAILABLE``), or when no listed pid is a process visible here (a container
  without the host's pid namespace: the driver gives host pids).
* DRM drivers (amdgpu, i915, xe, ...): the kernel's DRM fdinfo. For each pid, each fd in
  ``/proc/PID/fd`` whose link points under ``/dev/dri/`` is read in ``/proc/PID/fdinfo/FD``.
  ``drm-pdev`` maps the client to its card (else the device node the fd is open on). Several
  fds and processes can share one DRM client, so each (card, ``drm-client-id``) counts once.
  Per memory region, ``drm-resident-<region>`` is read, else ``drm-total-<region>``, else
  amdgpu's older ``drm-memory-<region>``; values are bytes, or carry ``KiB``/``MiB``.
  Only device-local regions count, by name: ``vram`` (amdgpu), ``vram0``/``vram1`` (xe),
  ``local0``... (i915 discrete). Not counted: ``gtt``, ``cpu``, ``system*``, ``memory`` (system
  RAM the GPU maps: an integrated GPU has only these, so its use is 0 here and shows in RAM
  where the kernel charges it to the process), and ``stolen*`` (a pool firmware set aside).
  An AMD APU's ``vram`` is its BIOS carve-out and counts, as ``mem_info_vram_*`` count it.
  A client whose fdinfo has no memory keys at all (older kernels, some drivers) makes its
  card's figure unknown; so does a pid whose fds cannot be listed for lack of permission.
  A vanished pid simply holds nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.memory.readers.base import DeviceFree, GpuDevice, GpuReader, Reader
from app.core.memory.readers.nvml import IMPORT, NVML_VALUE_NOT_AVAILABLE, NvidiaGpu, Nvml

log = logging.getLogger(__name__)

__all__ = ["LinuxGpus", "LinuxReader", "device_local_bytes", "meminfo", "parse_fdinfo"]

_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_DEVICE_LOCAL = re.compile(r"vram\d*|local\d+")
_STATS = ("resident", "total", "memory")  # per region, the first one present is read
_CARD = re.compile(r"card(\d+)")


def meminfo(root: Path) -> DeviceFree:
    """MemTotal and MemAvailable from ``<root>/proc/meminfo`` (kB -> bytes); where the file or a
    field is missing, that figure is ``None`` (nothing is guessed from ``MemFree``)."""
    total = free = None
    try:
        text = (root / "proc" / "meminfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return DeviceFree("ram", None, None)
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key not in ("MemTotal", "MemAvailable"):
            continue
        parts = rest.split()
        try:
            value = int(parts[0])
        except (IndexError, ValueError):
            continue
        unit = parts[1].lower() if len(parts) > 1 else ""
        value = value * 1024 if unit == "kb" else value
        if key == "MemTotal":
            total = value
        else:
            free = value
        if total is not None and free is not None:
            break
    return DeviceFree("ram", total, free)


@dataclass(frozen=True)
class _Nvidia:
    id: str
    gpu: NvidiaGpu


@dataclass(frozen=True)
class _Card:
    id: str
    name: str
    kind: str
    device: Path  # /sys/class/drm/cardN/device
    pdev: str  # PCI address (or platform device name)
    nodes: frozenset[str]  # its /dev/dri names: "card0", "renderD128"


def _size(value: str) -> int | None:
    match = _SIZE.fullmatch(value.strip())
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def parse_fdinfo(text: str) -> dict[str, str]:
    """An fdinfo file as key -> value (``drm-memory-gtt: \\t2048 KiB`` -> "2048 KiB")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def device_local_bytes(info: dict[str, str]) -> int | None:
    """Bytes a DRM client holds in device-local memory (see the module's docstring), or None
    when its fdinfo has no memory figures at all."""
    by_stat: dict[str, dict[str, int]] = {stat: {} for stat in _STATS}
    for key, value in info.items():
        for stat in _STATS:
            prefix = f"drm-{stat}-"
            region = key[len(prefix):] if key.startswith(prefix) else ""
            if region and not region.startswith("cycles-"):  # xe's drm-total-cycles-<engine>
                size = _size(value)
                if size is not None:
                    by_stat[stat][region] = size
    regions = {region for sizes in by_stat.values() for region in sizes}
    if not regions:
        return None
    total = 0
    for region in regions:
        if _DEVICE_LOCAL.fullmatch(region):
            total += next(by_stat[stat][region] for stat in _STATS if region in by_stat[stat])
    return total


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LinuxGpus:
    """NVML and DRM cards; ``root`` is where /proc and /sys are read (tests pass a temporary
    tree). Safe to call from several threads."""

    source = "NVML and /sys/class/drm (per process: NVML, DRM fdinfo)"

    def __init__(self, *, nvml: Any = IMPORT, root: Path = Path("/")) -> None:
        self._nvml = Nvml(nvml)
        self._root = Path(root)
        self._lock = threading.Lock()
        self._nvidia: list[_Nvidia] | None = None
        self._cards: list[_Card] = []
        self._wsl: bool | None = None

    @property
    def nvml_unavailable(self) -> str | None:
        return self._nvml.unavailable

    # ---- discovery (once) ---------------------------------------------------------------------

    def _discover(self) -> tuple[list[_Nvidia], list[_Card]]:
        with self._lock:
            if self._nvidia is None:
                self._nvidia = [_Nvidia(f"gpu{n}", gpu) for n, gpu in enumerate(self._nvml.open())]
                self._cards = self._discover_cards(first=len(self._nvidia), nvml=self._nvml.module is not None)
            return self._nvidia, self._cards

    def _discover_cards(self, first: int, nvml: bool) -> list[_Card]:
        drm = self._root / "sys/class/drm"
        try:
            entries = os.listdir(drm)
        except OSError:
            return []
        numbered = sorted((int(m.group(1)), e) for e in entries if (m := _CARD.fullmatch(e)))
        cards: list[_Card] = []
        for _, entry in numbered:
            device = drm / entry / "device"
            try:
                pdev = os.path.basename(os.readlink(device))
                kind = os.path.basename(os.readlink(device / "driver"))
                nodes = frozenset(os.listdir(device / "drm"))
            except OSError:
                continue
            if not any(n.startswith("renderD") for n in nodes):
                continue  # a display controller, not a GPU
            if kind.startswith("nvidia") and nvml:
                continue  # NVML has it
            try:
                product = (device / "product_name").read_text().strip()
            except (OSError, UnicodeDecodeError):
                product = ""
            cards.append(_Card(id=f"gpu{first + len(cards)}", name=product or f"{kind} {pdev}", kind=kind,
                               device=device, pdev=pdev, nodes=nodes))
        return cards

    # ---- devices -----------------------------------------------------------------------------------

    def devices(self) -> list[GpuDevice]:
        nvidia, cards = self._discover()
        out: list[GpuDevice] = []
        for gpu in nvidia:
            total, used = self._nvml.memory(gpu.gpu)
            out.append(GpuDevice(id=gpu.id, name=gpu.gpu.name, kind="nvidia", total=total, used=used, via="NVML"))
        for card in cards:
            if card.kind.startswith("nvidia"):
                total = used = None
            else:
                total = _read_int(card.device / "mem_info_vram_total")
                used = _read_int(card.device / "mem_info_vram_used")
            out.append(GpuDevice(id=card.id, name=card.name, kind=card.kind, total=total, used=used, via="sysfs"))
        return out

    # ---- per-process use -------------------------------------------------------------------------

    def usage_by_device(self, pids: list[int]) -> dict[str, int | None]:
        nvidia, cards = self._discover()
        out: dict[str, int | None] = {gpu.id: 0 for gpu in nvidia}
        out.update((card.id, 0) for card in cards)
        if not pids:
            return out
        if nvidia:
            out.update(self._nvidia_usage(nvidia, pids))
        if cards:
            out.update(self._drm_usage(cards, pids))
        return out

    def _under_wsl(self) -> bool:
        if self._wsl is None:
            try:
                release = (self._root / "proc/sys/kernel/osrelease").read_text()
            except OSError:
                release = ""
            self._wsl = "microsoft" in release.lower()
        return self._wsl

    def _nvidia_usage(self, nvidia: list[_Nvidia], pids: list[int]) -> dict[str, int | None]:
        error = self._nvml.error()
        wanted = set(pids)
        out: dict[str, int | None] = {}
        for gpu in nvidia:
            if self._under_wsl():  # WDDM: no per-process figures
                out[gpu.id] = None
                continue
            try:
                listed = self._nvml.processes(gpu.gpu)
            except error as exc:
                log.debug("NVML processes of %s: %s", gpu.id, exc)
                out[gpu.id] = None
                continue
            if listed and not any(p.pid in wanted or self._visible(p.pid) for p in listed):
                out[gpu.id] = None  # another pid namespace: these pids cannot be matched
                continue
            per_pid: dict[int, int | None] = {}
            for process in listed:
                if process.pid not in wanted:
                    continue
                used = process.usedGpuMemory
                known = None if used is None or used == NVML_VALUE_NOT_AVAILABLE else int(used)
                before = per_pid.get(process.pid, 0)
                # The same process in both lists is one figure, not two.
                per_pid[process.pid] = None if known is None or before is None else max(before, known)
            values = list(per_pid.values())
            out[gpu.id] = None if None in values else sum(v for v in values if v is not None)
        return out

    def _visible(self, pid: int) -> bool:
        return pid > 0 and (self._root / "proc" / str(pid)).exists()

    def _drm_usage(self, cards: list[_Card], pids: list[int]) -> dict[str, int | None]:
        by_pdev = {card.pdev: card for card in cards}
        by_node = {node: card for card in cards for node in card.nodes}
        # A card driven by nvidia: its memory is NVML's to tell, and NVML is not here.
        out: dict[str, int | None] = {card.id: None if card.kind.startswith("nvidia") else 0 for card in cards}
        seen: set[tuple[str, str]] = set()
        proc = self._root / "proc"
        for pid in pids:
            fd_dir = proc / str(pid) / "fd"
            try:
                fds = os.listdir(fd_dir)
            except PermissionError:
                log.debug("cannot list the fds of pid %d", pid)
                for card in cards:
                    out[card.id] = None
                continue
            except OSError:
                continue  # the process is gone
            for fd in fds:
                try:
                    target = os.readlink(fd_dir / fd)
                    if not target.startswith("/dev/dri/"):
                        continue
                    text = (proc / str(pid) / "fdinfo" / fd).read_text(errors="replace")
                except OSError:
                    continue  # closed meanwhile, or the process is gone
                info = parse_fdinfo(text)
                card = by_pdev.get(info.get("drm-pdev", "")) or by_node.get(os.path.basename(target))
                if card is None or card.kind.startswith("nvidia"):
                    continue
                key = (card.id, info.get("drm-client-id") or f"fd {pid}/{fd}")
                if key in seen:
                    continue
                seen.add(key)
                held = device_local_bytes(info)
                before = out[card.id]
                out[card.id] = None if held is None or before is None else before + held
        return out

    # ---- the end -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Shuts NVML down if it was initialised; a later call starts afresh."""
        with self._lock:
            self._nvml.close()
            self._nvidia, self._cards = None, []


def per_cpu_free(root: Path = Path("/")) -> int:
    """Bytes of free pages held in the kernel's per-CPU lists (the ``count:`` lines of each
    zone's ``pagesets`` in ``<root>/proc/zoneinfo``); 0 when that cannot be read.

    ``MemAvailable`` leaves these pages out. Since Linux 6.7 the lists grow when much memory is
    freed at once, so the memory of a process that has just exited sits there and comes back
    to ``MemAvailable`` over 10-20 s: measured here (Linux 6.18, 2 cores) after a 700 MiB
    server exited, AnonPages fell by 707-719 MiB while MemAvailable rose by 118-326 MiB; the
    lists held the rest, to within 1 MiB. Reading the file costs about 70 us."""
    try:
        text = (root / "proc" / "zoneinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    pages = 0
    for line in text.splitlines():
        key, _, rest = line.strip().partition(":")
        if key == "count":
            try:
                pages += int(rest)
            except ValueError:
                continue
    return pages * _PAGE_SIZE


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class LinuxReader(Reader):
    """Linux: psutil for RAM and a process's RSS; NVML and DRM for the GPUs; pressure from PSI
    (registered by :class:`app.core.memory.pressure.PressureWatch` itself, so no signal here).

    RAM's free figure is ``MemAvailable`` plus the free pages in the per-CPU lists
    (:func:`per_cpu_free`): without them, memory an unloaded model gave back stays unseen for
    seconds, and the policy unloads more for a shortfall that is already covered."""

    name = "linux"
    ram_source = ("psutil.virtual_memory() (/proc/meminfo: MemTotal, MemAvailable) "
                  "plus the per-CPU free lists (/proc/zoneinfo)")

    def ram(self) -> DeviceFree:
        ram = super().ram()
        if self._virtual_memory is not None or ram.free is None:
            return ram  # an injected reading (tests) is taken as it is
        return dataclasses.replace(ram, free=ram.free + per_cpu_free())

    def gpus(self, nvml: Any) -> GpuReader:
        return LinuxGpus(nvml=nvml)
