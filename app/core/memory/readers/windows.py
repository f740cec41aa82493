"""Windows: RAM through psutil, and every GPU, of any vendor, through DXGI and PDH.

**RAM** and a process's RAM: psutil, as the base reader (``GlobalMemoryStatusEx``'s total and
available physical memory; a process's working set).

**GPUs** (:class:`WindowsGpus`): WDDM's own accounting, the figures Task Manager shows, the same
for NVIDIA, AMD and Intel and whatever API the server uses (CUDA, Vulkan, HIP, ...):

* **Adapters** from DXGI: ``CreateDXGIFactory1`` for an ``IDXGIFactory1``, then
  ``EnumAdapters1(i)`` until ``DXGI_ERROR_NOT_FOUND``, and each ``IDXGIAdapter1::GetDesc1``'s
  ``DXGI_ADAPTER_DESC1``: ``Description`` (the name), ``VendorId`` (0x10DE NVIDIA, 0x1002 AMD,
  0x8086 Intel: the device's ``kind``), ``DedicatedVideoMemory`` (the total) and
  ``AdapterLuid`` (what the performance counters name it by). Software adapters
  (``DXGI_ADAPTER_FLAG_SOFTWARE``, and Microsoft's Basic Render Driver, vendor 0x1414) are
  left out. An adapter with less than 512 MiB of dedicated memory is an integrated GPU whose
  working memory is RAM it shares with the CPU (Intel's 128 MiB stolen pool): like i915 on
  Linux it is listed with unknown totals. Ids ``gpu0``, ``gpu1``, ...: NVIDIA adapters first
  (as on Linux), then the others by dedicated memory, largest first (llama.cpp's Vulkan
  build, too, prefers a discrete GPU), ties in DXGI's order. The adapters are read once.
* **NVIDIA totals** from NVML where it works (:mod:`.nvml`): the NVML GPU with the adapter's
  PCI device id, in order. NVML's per-process figures are "not available" under WDDM, so
  they are never used here.
* **Used, per adapter**: the performance counter ``\\GPU Adapter Memory(*)\\Dedicated Usage``,
  whose instances are named ``luid_0x<HIGH>_0x<LOW>_phys_<N>`` (summed over ``phys``; an
  instance with a ``_part_<N>`` suffix counts only where the adapter has no whole one).
* **Per process**: ``\\GPU Process Memory(*)\\Dedicated Usage``, instances
  ``pid_<PID>_luid_0x<HIGH>_0x<LOW>_phys_<N>``; a pid with no instance on an adapter holds
  nothing there.

Both counters go through PDH (``pdh.dll``): ``PdhOpenQueryW``, ``PdhAddEnglishCounterW`` (the
English path works on every display language), ``PdhCollectQueryData`` (``Dedicated Usage``
is a raw count of bytes: one collection gives it) and ``PdhGetFormattedCounterArrayW`` with
``PDH_FMT_LARGE`` (called once for the size, once for the items), then ``PdhCloseQuery``. A
query is opened for each reading, so the instance list is always the current one (whether a
long-lived wildcard query picks up processes started after it was opened is not documented).
Where PDH cannot read a counter (Windows before 10 1709, or performance counters turned off)
that figure is unknown, never guessed.

**ctypes, not pywin32 or comtypes.** Five PDH functions and three COM methods with documented
signatures are all this needs; ctypes is in the standard library. pywin32 (``win32pdh``) and
comtypes would be Windows-only dependencies with DLLs of their own for PyInstaller to bundle,
and a fake of them would test their wrappers; the fakes here (``tests/fakes/windows_gpu.py``)
follow Microsoft's pages and lay out the structures' bytes at the documented offsets. Strings
are read as UTF-16 by hand, so the same code runs against the fakes where ``wchar_t`` is not
two bytes. Unverified on real hardware.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.core.memory.readers.base import GpuDevice, GpuReader, Reader
from app.core.memory.readers.nvml import IMPORT, NvidiaGpu, Nvml

log = logging.getLogger(__name__)

__all__ = ["Adapter", "DXGI_ADAPTER_DESC1", "PDH_FMT_COUNTERVALUE_ITEM_W", "WindowsGpus", "WindowsReader",
           "enumerate_adapters", "parse_instance", "read_counter"]

# DXGI (https://learn.microsoft.com/en-us/windows/win32/api/dxgi/)
IID_IDXGIFactory1 = uuid.UUID("770aae78-f26f-4dba-a829-253c83d1b387")
DXGI_ERROR_NOT_FOUND = 0x887A0002
DXGI_ADAPTER_FLAG_SOFTWARE = 2
VENDOR_MICROSOFT = 0x1414  # the Basic Render Driver
VENDORS = {0x10DE: "nvidia", 0x1002: "amd", 0x8086: "intel"}
INTEGRATED_BELOW = 512 << 20  # dedicated memory under this: an integrated GPU (see the module)
# vtable slots: IUnknown 0-2, IDXGIObject 3-6, IDXGIFactory 7-11, IDXGIFactory1 12-13;
# IDXGIAdapter 7-9, IDXGIAdapter1 10
RELEASE, ENUM_ADAPTERS1, GET_DESC1 = 2, 12, 10

# PDH (https://learn.microsoft.com/en-us/windows/win32/api/pdh/)
PDH_FMT_LARGE = 0x00000400
PDH_MORE_DATA = 0x800007D2
PDH_NO_DATA = 0x800007D5
PDH_CSTATUS_VALID_DATA = 0x00000000
PDH_CSTATUS_NEW_DATA = 0x00000001
ADAPTER_COUNTER = r"\GPU Adapter Memory(*)\Dedicated Usage"
PROCESS_COUNTER = r"\GPU Process Memory(*)\Dedicated Usage"
_INSTANCE = re.compile(r"(?:pid_(\d+)_)?luid_(0x[0-9a-f]{8})_(0x[0-9a-f]{8})_phys_(\d+)(_part_\d+)?", re.IGNORECASE)

_FUNCTYPE = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)  # __stdcall on Windows


class LUID(ctypes.Structure):
    _fields_ = [("LowPart", ctypes.c_uint32), ("HighPart", ctypes.c_int32)]


class DXGI_ADAPTER_DESC1(ctypes.Structure):  # noqa: N801 - Windows' names
    _fields_ = [
        ("Description", ctypes.c_uint16 * 128),  # WCHAR[128], read as UTF-16 on every OS
        ("VendorId", ctypes.c_uint32),
        ("DeviceId", ctypes.c_uint32),
        ("SubSysId", ctypes.c_uint32),
        ("Revision", ctypes.c_uint32),
        ("DedicatedVideoMemory", ctypes.c_size_t),
        ("DedicatedSystemMemory", ctypes.c_size_t),
        ("SharedSystemMemory", ctypes.c_size_t),
        ("AdapterLuid", LUID),
        ("Flags", ctypes.c_uint32),
    ]


class _PdhValue(ctypes.Union):
    _fields_ = [("longValue", ctypes.c_int32), ("doubleValue", ctypes.c_double), ("largeValue", ctypes.c_int64),
                ("AnsiStringValue", ctypes.c_void_p), ("WideStringValue", ctypes.c_void_p)]


class PDH_FMT_COUNTERVALUE(ctypes.Structure):  # noqa: N801
    _fields_ = [("CStatus", ctypes.c_uint32), ("value", _PdhValue)]


class PDH_FMT_COUNTERVALUE_ITEM_W(ctypes.Structure):  # noqa: N801
    _fields_ = [("szName", ctypes.c_void_p), ("FmtValue", PDH_FMT_COUNTERVALUE)]


@dataclass(frozen=True)
class Adapter:
    """One DXGI adapter as ``GetDesc1`` describes it."""

    name: str
    vendor_id: int
    device_id: int
    dedicated: int  # DedicatedVideoMemory
    luid: str  # "0x00000000_0x0000D1E5": HighPart, LowPart, as the counters write it
    flags: int

    @property
    def kind(self) -> str:
        return VENDORS.get(self.vendor_id, "gpu")


def load_dxgi() -> Any:
    """dxgi.dll with ``CreateDXGIFactory1``'s prototype."""
    dll = ctypes.WinDLL("dxgi")  # type: ignore[attr-defined]
    dll.CreateDXGIFactory1.restype = ctypes.c_int32  # HRESULT
    dll.CreateDXGIFactory1.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return dll


def load_pdh() -> Any:
    """pdh.dll with the prototypes used here, in an instance of its own."""
    dll = ctypes.WinDLL("pdh")  # type: ignore[attr-defined]
    status, handle, dword = ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32
    prototypes = {
        "PdhOpenQueryW": [ctypes.c_wchar_p, ctypes.c_size_t, ctypes.c_void_p],
        "PdhAddEnglishCounterW": [handle, ctypes.c_wchar_p, ctypes.c_size_t, ctypes.c_void_p],
        "PdhCollectQueryData": [handle],
        "PdhGetFormattedCounterArrayW": [handle, dword, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
        "PdhCloseQuery": [handle],
    }
    for name, argtypes in prototypes.items():
        function = getattr(dll, name)
        function.restype, function.argtypes = status, argtypes
    return dll


def _utf16_at(address: int, limit: int = 1024) -> str:
    """The NUL-terminated UTF-16 string at ``address``."""
    units = []
    for index in range(limit):
        unit = ctypes.c_uint16.from_address(address + 2 * index).value
        if unit == 0:
            break
        units.append(unit)
    return b"".join(u.to_bytes(2, "little") for u in units).decode("utf-16-le", errors="replace")


def _method(obj: int, index: int, restype: Any, *argtypes: Any) -> Any:
    """The COM method in slot ``index`` of ``obj``'s vtable, callable with ``obj`` first."""
    vtable = ctypes.cast(obj, ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p)))[0]
    return _FUNCTYPE(restype, ctypes.c_void_p, *argtypes)(vtable[index])


def _failed(hr: int) -> bool:
    """An HRESULT's severity bit, whether it came back signed (ctypes' c_int32) or not."""
    return bool(hr & 0x80000000)


def _release(obj: int) -> None:
    _method(obj, RELEASE, ctypes.c_uint32)(obj)


def enumerate_adapters(dxgi: Any) -> list[Adapter]:
    """Every adapter DXGI lists, in its order (software ones included); raises OSError when
    DXGI cannot make a factory."""
    iid = (ctypes.c_ubyte * 16).from_buffer_copy(IID_IDXGIFactory1.bytes_le)
    factory = ctypes.c_void_p()
    hr = dxgi.CreateDXGIFactory1(ctypes.byref(iid), ctypes.byref(factory))
    if _failed(hr) or not factory.value:
        raise OSError(f"CreateDXGIFactory1 failed: HRESULT {hr & 0xFFFFFFFF:#010x}")
    out: list[Adapter] = []
    try:
        enum = _method(factory.value, ENUM_ADAPTERS1, ctypes.c_int32, ctypes.c_uint32, ctypes.c_void_p)
        for index in range(64):
            adapter = ctypes.c_void_p()
            hr = enum(factory.value, index, ctypes.byref(adapter))
            if hr & 0xFFFFFFFF == DXGI_ERROR_NOT_FOUND:
                break
            if _failed(hr) or not adapter.value:
                log.debug("EnumAdapters1(%d): HRESULT %#010x", index, hr & 0xFFFFFFFF)
                break
            try:
                desc = DXGI_ADAPTER_DESC1()
                hr = _method(adapter.value, GET_DESC1, ctypes.c_int32, ctypes.c_void_p)(adapter.value,
                                                                                        ctypes.byref(desc))
                if _failed(hr):
                    log.debug("GetDesc1 of adapter %d: HRESULT %#010x", index, hr & 0xFFFFFFFF)
                    continue
                name = _utf16_at(ctypes.addressof(desc), limit=128)
                luid = f"0x{desc.AdapterLuid.HighPart & 0xFFFFFFFF:08X}_0x{desc.AdapterLuid.LowPart:08X}"
                out.append(Adapter(name=name, vendor_id=desc.VendorId, device_id=desc.DeviceId,
                                   dedicated=int(desc.DedicatedVideoMemory), luid=luid, flags=desc.Flags))
            finally:
                _release(adapter.value)
    finally:
        _release(factory.value)
    return out


def read_counter(pdh: Any, path: str) -> dict[str, int | None]:
    """Every instance of a wildcard counter -> its value now (None where PDH marks it not
    valid); raises OSError when PDH cannot read the counter at all."""
    query, counter = ctypes.c_void_p(), ctypes.c_void_p()
    status = pdh.PdhOpenQueryW(None, 0, ctypes.byref(query))
    if status != 0:
        raise OSError(f"PdhOpenQueryW failed: {status:#010x}")
    try:
        status = pdh.PdhAddEnglishCounterW(query, path, 0, ctypes.byref(counter))
        if status != 0:
            raise OSError(f"PdhAddEnglishCounterW({path}) failed: {status:#010x}")
        status = pdh.PdhCollectQueryData(query)
        if status == PDH_NO_DATA:
            return {}  # no instance at all
        if status != 0:
            raise OSError(f"PdhCollectQueryData({path}) failed: {status:#010x}")
        size, count = ctypes.c_uint32(0), ctypes.c_uint32(0)
        status = pdh.PdhGetFormattedCounterArrayW(counter, PDH_FMT_LARGE, ctypes.byref(size), ctypes.byref(count),
                                                  None)
        if status == PDH_NO_DATA:
            return {}
        if status != PDH_MORE_DATA:
            raise OSError(f"PdhGetFormattedCounterArrayW({path}) failed: {status:#010x}")
        buffer = ctypes.create_string_buffer(max(size.value, 1))
        status = pdh.PdhGetFormattedCounterArrayW(counter, PDH_FMT_LARGE, ctypes.byref(size), ctypes.byref(count),
                                                  buffer)
        if status != 0:
            raise OSError(f"PdhGetFormattedCounterArrayW({path}) failed: {status:#010x}")
        if count.value * ctypes.sizeof(PDH_FMT_COUNTERVALUE_ITEM_W) > len(buffer):
            raise OSError(f"PdhGetFormattedCounterArrayW({path}): {count.value} items do not fit its buffer")
        items = (PDH_FMT_COUNTERVALUE_ITEM_W * count.value).from_buffer(buffer)
        out: dict[str, int | None] = {}
        for item in items:
            if not item.szName:
                continue
            valid = item.FmtValue.CStatus in (PDH_CSTATUS_VALID_DATA, PDH_CSTATUS_NEW_DATA)
            out[_utf16_at(item.szName)] = int(item.FmtValue.value.largeValue) if valid else None
        return out
    finally:
        pdh.PdhCloseQuery(query)


def parse_instance(name: str) -> tuple[int | None, str, int, bool] | None:
    """A GPU counter instance as (pid or None, LUID as "0x..._0x..." in upper case, phys,
    whether it is a ``_part_``); None for a name of another shape."""
    match = _INSTANCE.fullmatch(name)
    if match is None:
        return None
    pid, high, low, phys, part = match.groups()
    luid = f"0x{int(high, 16):08X}_0x{int(low, 16):08X}"
    return (int(pid) if pid else None), luid, int(phys), part is not None


def adapter_usage(values: dict[str, int | None]) -> dict[str, int | None]:
    """``\\GPU Adapter Memory`` instances -> used bytes per LUID (whole instances, else parts)."""
    whole: dict[str, int | None] = {}
    parts: dict[str, int | None] = {}
    for name, value in values.items():
        parsed = parse_instance(name)
        if parsed is None or parsed[0] is not None:
            continue
        _, luid, _, part = parsed
        target = parts if part else whole
        before = target.get(luid, 0)
        target[luid] = None if value is None or before is None else before + value
    return {**parts, **whole}


def process_usage(values: dict[str, int | None], pids: Iterable[int]) -> dict[str, int | None]:
    """``\\GPU Process Memory`` instances -> bytes these pids hold per LUID (only LUIDs where
    they hold something, or where their figure is not valid: None)."""
    wanted = set(pids)
    out: dict[str, int | None] = {}
    for name, value in values.items():
        parsed = parse_instance(name)
        if parsed is None or parsed[0] not in wanted:
            continue
        luid = parsed[1]
        before = out.get(luid, 0)
        out[luid] = None if value is None or before is None else before + value
    return out


@dataclass(frozen=True)
class _Gpu:
    id: str
    adapter: Adapter
    nvml: NvidiaGpu | None  # the NVML GPU for its total


class WindowsGpus:
    """DXGI's adapters with PDH's figures (and NVML's NVIDIA totals); ``dxgi`` and ``pdh`` are
    the DLLs with their prototypes (:func:`load_dxgi`, :func:`load_pdh`, loaded on first use)
    or fakes. Safe to call from several threads."""

    source = "DXGI adapters; use from PDH \\GPU Adapter Memory and \\GPU Process Memory (Dedicated Usage)"

    def __init__(self, *, nvml: Any = IMPORT, dxgi: Any = None, pdh: Any = None) -> None:
        self._nvml = Nvml(nvml)
        self._dxgi = dxgi
        self._pdh = pdh
        self._lock = threading.Lock()
        self._gpus: list[_Gpu] | None = None
        self._nvml_reason: str | None = None

    @property
    def nvml_unavailable(self) -> str | None:
        return self._nvml_reason or self._nvml.unavailable

    def _discover(self) -> list[_Gpu]:
        with self._lock:
            if self._gpus is None:
                self._gpus = self._discover_adapters()
            return self._gpus

    def _discover_adapters(self) -> list[_Gpu]:
        self._nvml_reason = None
        try:
            adapters = enumerate_adapters(self._dxgi if self._dxgi is not None else load_dxgi())
        except (OSError, AttributeError) as exc:
            log.warning("cannot list the GPUs through DXGI: %s", exc)
            self._nvml_reason = "DXGI lists no adapters"
            return []
        hardware = [a for a in adapters if not a.flags & DXGI_ADAPTER_FLAG_SOFTWARE and a.vendor_id != VENDOR_MICROSOFT]
        nvidia = [a for a in hardware if a.kind == "nvidia"]
        others = sorted((a for a in hardware if a.kind != "nvidia"), key=lambda a: -a.dedicated)  # stable
        matched: dict[int, NvidiaGpu] = {}
        if nvidia:
            unused = [(self._nvml.pci_device_id(g), g) for g in self._nvml.open()]
            for number, adapter in enumerate(nvidia):
                pick = next((pair for pair in unused if pair[0] == adapter.device_id), None)
                if pick is not None:
                    unused.remove(pick)
                    matched[number] = pick[1]
        else:
            self._nvml_reason = "no NVIDIA adapter"
        gpus = [_Gpu(f"gpu{n}", a, matched.get(n)) for n, a in enumerate(nvidia)]
        gpus += [_Gpu(f"gpu{len(nvidia) + n}", a, None) for n, a in enumerate(others)]
        return gpus

    def _pdh_dll(self) -> Any:
        if self._pdh is None:
            self._pdh = load_pdh()
        return self._pdh

    def _read(self, path: str) -> dict[str, int | None] | None:
        try:
            return read_counter(self._pdh_dll(), path)
        except (OSError, AttributeError, ValueError) as exc:
            log.debug("PDH %s: %s", path, exc)
            return None

    def devices(self) -> list[GpuDevice]:
        gpus = self._discover()
        if not gpus:
            return []
        counters = self._read(ADAPTER_COUNTER)
        used_by_luid = adapter_usage(counters) if counters is not None else {}
        out: list[GpuDevice] = []
        for gpu in gpus:
            adapter = gpu.adapter
            total: int | None = adapter.dedicated
            via = "DXGI"
            if gpu.nvml is not None:
                nvml_total, _ = self._nvml.memory(gpu.nvml)
                if nvml_total is not None:
                    total, via = nvml_total, "DXGI, NVML"
            used = used_by_luid.get(adapter.luid)
            if adapter.dedicated < INTEGRATED_BELOW:
                total = used = None
            out.append(GpuDevice(id=gpu.id, name=adapter.name, kind=adapter.kind, total=total, used=used, via=via))
        return out

    def usage_by_device(self, pids: list[int]) -> dict[str, int | None]:
        gpus = self._discover()
        out: dict[str, int | None] = {gpu.id: 0 for gpu in gpus}
        if not pids or not gpus:
            return out
        counters = self._read(PROCESS_COUNTER)
        if counters is None:
            return {gpu.id: None for gpu in gpus}
        held = process_usage(counters, pids)
        for gpu in gpus:
            out[gpu.id] = held.get(gpu.adapter.luid, 0)
        return out

    def close(self) -> None:
        """Shuts NVML down if it was initialised; a later call reads the adapters afresh."""
        with self._lock:
            self._nvml.close()
            self._gpus = None


class WindowsReader(Reader):
    """Windows: psutil for RAM and a process's working set; DXGI and PDH for the GPUs; no
    pressure notification (Siesta polls). ``dxgi`` and ``pdh``: fakes for tests."""

    name = "windows"
    ram_source = "psutil.virtual_memory() (GlobalMemoryStatusEx: total and available physical memory)"
    process_ram_source = "psutil: the working set"

    def __init__(self, *, dxgi: Any = None, pdh: Any = None, virtual_memory: Any = None) -> None:
        super().__init__(virtual_memory=virtual_memory)
        self._dxgi = dxgi
        self._pdh = pdh

    def gpus(self, nvml: Any) -> GpuReader:
        return WindowsGpus(nvml=nvml, dxgi=self._dxgi, pdh=self._pdh)
