"""Fakes of Windows' GPU memory APIs, DXGI and PDH (and NVML as it answers under WDDM), so
that app/core/memory/readers/windows.py runs here, on Linux, through the same calls it makes on
Windows. Unverified on real hardware: each fake follows Microsoft's (or NVIDIA's) page for the
call, cited below, and published samples of what the calls return; none was compared with a
real Windows PC.

**DXGI** (real COM objects in ctypes memory: a pointer to a vtable of C function pointers, so
the code's vtable walk is exercised, slot by slot):

* ``CreateDXGIFactory1(REFIID riid, void **ppFactory)``: ``riid`` must be IID_IDXGIFactory1,
  {770aae78-f26f-4dba-a829-253c83d1b387}, else E_NOINTERFACE.
  https://learn.microsoft.com/en-us/windows/win32/api/dxgi/nf-dxgi-createdxgifactory1
* ``IDXGIFactory1::EnumAdapters1(UINT Adapter, IDXGIAdapter1 **ppAdapter)``, vtable slot 12
  (IUnknown 0-2, IDXGIObject 3-6, IDXGIFactory 7-11: dxgi.h, as TerraFX.Interop.Windows ports it
  with ``[VtblIndex(12)]``): an adapter with one reference, or DXGI_ERROR_NOT_FOUND
  (0x887A0002) past the last one.
  https://learn.microsoft.com/en-us/windows/win32/api/dxgi/nf-dxgi-idxgifactory1-enumadapters1
* ``IDXGIAdapter1::GetDesc1(DXGI_ADAPTER_DESC1 *pDesc)``, slot 10 (IDXGIAdapter 7-9). The
  structure's bytes are written with :mod:`struct` from the documented field list, not through
  the code's ctypes structure: ``WCHAR Description[128]``, ``UINT VendorId, DeviceId,
  SubSysId, Revision``, ``SIZE_T DedicatedVideoMemory, DedicatedSystemMemory,
  SharedSystemMemory``, ``LUID AdapterLuid`` (``DWORD LowPart; LONG HighPart``), ``UINT
  Flags``: 312 bytes on 64-bit Windows.
  https://learn.microsoft.com/en-us/windows/win32/api/dxgi/nf-dxgi-idxgiadapter1-getdesc1
  https://learn.microsoft.com/en-us/windows/win32/api/dxgi/ns-dxgi-dxgi_adapter_desc1
  https://learn.microsoft.com/en-us/windows/win32/api/dxgi/ne-dxgi-dxgi_adapter_flag (SOFTWARE = 2)
* ``IUnknown::Release`` (slot 2): the fake counts references and records a release too many.

**PDH** (handles are plain numbers; every output goes through the pointer the code passes):

* ``PdhOpenQueryW(szDataSource, dwUserData, phQuery)``
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/nf-pdh-pdhopenqueryw
* ``PdhAddEnglishCounterW(hQuery, szFullCounterPath, dwUserData, phCounter)``: an object the
  machine does not have gives PDH_CSTATUS_NO_OBJECT (0xC0000BB8).
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/nf-pdh-pdhaddenglishcounterw
* ``PdhCollectQueryData(hQuery)``: takes the values now; PDH_NO_DATA (0x800007D5) when the
  query's counters have no instance.
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/nf-pdh-pdhcollectquerydata
* ``PdhGetFormattedCounterArrayW(hCounter, dwFormat, lpdwBufferSize, lpdwItemCount,
  ItemBuffer)``: called with a size of 0 it sets the size needed and returns PDH_MORE_DATA
  (0x800007D2); then it fills the caller's buffer with ``PDH_FMT_COUNTERVALUE_ITEM_W``
  items (``LPWSTR szName``; ``PDH_FMT_COUNTERVALUE FmtValue`` = ``DWORD CStatus`` and an
  8-byte union, ``LONGLONG largeValue`` for PDH_FMT_LARGE (0x400)): 24 bytes each on 64-bit,
  with the names (UTF-16, NUL-terminated) stored after the items in the same buffer.
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/nf-pdh-pdhgetformattedcounterarrayw
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/ns-pdh-pdh_fmt_countervalue_item_w
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/ns-pdh-pdh_fmt_countervalue
  https://learn.microsoft.com/en-us/windows/win32/perfctrs/pdh-error-codes
* ``PdhCloseQuery(hQuery)``.
  https://learn.microsoft.com/en-us/windows/win32/api/pdh/nf-pdh-pdhclosequery

**The GPU counters' instances**, as published samples name them: ``\\GPU Adapter
Memory(luid_0x00000000_0x0001136A_phys_0)`` (also with a ``_part_0`` suffix) and ``\\GPU
Process Memory(pid_10232_luid_0x00000000_0x0001136A_phys_0)`` (windows_exporter's instance
parser test, prometheus-community/windows_exporter
internal/collector/gpu/utils_internal_test.go; the counters themselves: "GPUs in the Task
Manager", https://devblogs.microsoft.com/directx/gpus-in-the-task-manager/). ``Dedicated
Usage`` is in bytes.

**NVML under WDDM** (:class:`WddmNvml`): totals, and per-process figures of
NVML_VALUE_NOT_AVAILABLE; ``nvmlDeviceGetPciInfo``'s ``pciDeviceId`` holds the device id in
its upper 16 bits and the vendor id in the lower 16 (``nvmlPciInfo_t``,
https://docs.nvidia.com/deploy/nvml-api/structnvmlPciInfo__t.html).
"""

from __future__ import annotations

import ctypes
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

assert ctypes.sizeof(ctypes.c_void_p) == 8, "the layouts below are 64-bit Windows'"

IID_IDXGIFactory1 = uuid.UUID("770aae78-f26f-4dba-a829-253c83d1b387").bytes_le
S_OK = 0
E_NOINTERFACE = 0x80004002
E_NOTIMPL = 0x80004001
DXGI_ERROR_NOT_FOUND = 0x887A0002
DXGI_ADAPTER_FLAG_SOFTWARE = 2
DESC1 = struct.Struct("<256s4I3QIiI4x")  # DXGI_ADAPTER_DESC1, field by field
assert DESC1.size == 312

PDH_MORE_DATA = 0x800007D2
PDH_NO_DATA = 0x800007D5
PDH_INVALID_HANDLE = 0xC0000BBC
PDH_CSTATUS_NO_OBJECT = 0xC0000BB8
PDH_CSTATUS_INVALID_DATA = 0xC0000BBA
PDH_INVALID_ARGUMENT = 0xC0000BBD
PDH_FMT_LARGE = 0x00000400
ITEM = struct.Struct("<QI4xq")  # PDH_FMT_COUNTERVALUE_ITEM_W with a largeValue
assert ITEM.size == 24
ADAPTER_COUNTER = r"\GPU Adapter Memory(*)\Dedicated Usage"
PROCESS_COUNTER = r"\GPU Process Memory(*)\Dedicated Usage"

NVML_VALUE_NOT_AVAILABLE = 2**64 - 1
GiB = 1 << 30
MiB = 1 << 20

_HRESULT_UINT_PTR = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
_HRESULT_PTR = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)
_ULONG = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p)
_UNUSED = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


def _signed(hresult: int) -> int:
    return ctypes.c_int32(hresult).value


def _out(pointer: Any) -> Any:
    """The ctypes object behind ``ctypes.byref(obj)`` (what the code passes for an out parameter)."""
    return pointer._obj if hasattr(pointer, "_obj") else pointer


@dataclass(frozen=True)
class FakeAdapter:
    """One adapter as GetDesc1 describes it."""

    description: str
    vendor_id: int
    device_id: int
    dedicated_video: int
    luid_low: int
    luid_high: int = 0
    dedicated_system: int = 0
    shared_system: int = 16 * GiB
    subsys_id: int = 0
    revision: int = 0
    flags: int = 0

    @property
    def luid(self) -> str:
        return f"0x{self.luid_high & 0xFFFFFFFF:08X}_0x{self.luid_low:08X}"

    def desc1(self) -> bytes:
        name = self.description.encode("utf-16-le")[:254]
        return DESC1.pack(name, self.vendor_id, self.device_id, self.subsys_id, self.revision, self.dedicated_video,
                          self.dedicated_system, self.shared_system, self.luid_low, self.luid_high, self.flags)


# Published adapters (the names and PCI ids as Windows lists them; the LUIDs in the form of the samples above).
RTX_4090 = FakeAdapter("NVIDIA GeForce RTX 4090", 0x10DE, 0x2684, 24 * GiB, luid_low=0x0000D1E5, subsys_id=0x889D1043)
RX_7900_XTX = FakeAdapter("AMD Radeon RX 7900 XTX", 0x1002, 0x744C, 24 * GiB, luid_low=0x0001136A)
UHD_770 = FakeAdapter("Intel(R) UHD Graphics 770", 0x8086, 0x4680, 128 * MiB, luid_low=0x0000C2F1)
BASIC_RENDER = FakeAdapter("Microsoft Basic Render Driver", 0x1414, 0x008C, 0, luid_low=0x0000B3A0,
                           flags=DXGI_ADAPTER_FLAG_SOFTWARE)


class FakeDxgi:
    """dxgi.dll's CreateDXGIFactory1 over a list of adapters, handing out COM objects."""

    def __init__(self, adapters: list[FakeAdapter], *, fail: int | None = None) -> None:
        self.adapters = adapters
        self.fail = fail  # an HRESULT CreateDXGIFactory1 returns instead
        self.calls: list[tuple[str, Any]] = []
        self.refs: dict[int, int] = {}  # object address -> references held
        self.misuse: list[str] = []
        self._keep: list[Any] = []

    def _object(self, methods: dict[int, Any]) -> int:
        callbacks = {2: _ULONG(self._release)} | methods
        unused = _UNUSED(lambda this: self._unused(this))
        vtable = (ctypes.c_void_p * 14)(*[ctypes.cast(callbacks.get(i, unused), ctypes.c_void_p).value
                                          for i in range(14)])
        obj = (ctypes.c_void_p * 1)(ctypes.addressof(vtable))  # the object: its first field is lpVtbl
        self._keep += [vtable, obj, unused, *callbacks.values()]
        address = ctypes.addressof(obj)
        self.refs[address] = 1
        return address

    def _unused(self, this: int) -> int:
        self.misuse.append("a vtable slot the reader should not call")
        return _signed(E_NOTIMPL)

    def _release(self, this: int) -> int:
        self.calls.append(("Release", this))
        if self.refs.get(this, 0) <= 0:
            self.misuse.append("Release of an object with no reference left")
            return 0
        self.refs[this] -= 1
        return self.refs[this]

    def live(self) -> int:
        """Objects still holding a reference (0 once the reader released what it got)."""
        return sum(1 for n in self.refs.values() if n > 0)

    def CreateDXGIFactory1(self, riid: Any, factory_out: Any) -> int:  # noqa: N802 - Windows' names
        iid = bytes(_out(riid))
        self.calls.append(("CreateDXGIFactory1", iid))
        if self.fail is not None:
            return _signed(self.fail)
        if iid != IID_IDXGIFactory1:
            return _signed(E_NOINTERFACE)
        _out(factory_out).value = self._object({12: _HRESULT_UINT_PTR(self._enum_adapters1)})
        return S_OK

    def _enum_adapters1(self, this: int, index: int, adapter_out: int) -> int:
        self.calls.append(("EnumAdapters1", index))
        if index >= len(self.adapters):
            ctypes.c_void_p.from_address(adapter_out).value = None
            return _signed(DXGI_ERROR_NOT_FOUND)
        adapter = self.adapters[index]

        def get_desc1(this: int, desc: int) -> int:
            self.calls.append(("GetDesc1", index))
            data = adapter.desc1()
            ctypes.memmove(desc, data, len(data))
            return S_OK

        ctypes.c_void_p.from_address(adapter_out).value = self._object({10: _HRESULT_PTR(get_desc1)})
        return S_OK


Listing = dict[str, int | None]  # instance name -> Dedicated Usage in bytes (None: not valid data)


class FakePdh:
    """pdh.dll's query functions over counters whose instances ``counters[path]()`` lists at
    each collection."""

    def __init__(self, counters: dict[str, Callable[[], Listing]]) -> None:
        self.counters = counters
        self.calls: list[str] = []
        self.misuse: list[str] = []
        self.queries: dict[int, bool] = {}  # handle -> open
        self._counter_of: dict[int, tuple[int, str]] = {}  # counter handle -> (query, path)
        self._collected: dict[int, Listing] = {}  # counter handle -> values at the last collection
        self._next = 0x1000

    def _handle(self) -> int:
        self._next += 8
        return self._next

    def open_queries(self) -> int:
        return sum(self.queries.values())

    def PdhOpenQueryW(self, source: Any, user: int, query_out: Any) -> int:  # noqa: N802
        self.calls.append("PdhOpenQueryW")
        if source is not None:
            self.misuse.append("a log file as the data source")
        handle = self._handle()
        self.queries[handle] = True
        _out(query_out).value = handle
        return 0

    def PdhAddEnglishCounterW(self, query: Any, path: str, user: int, counter_out: Any) -> int:  # noqa: N802
        self.calls.append(f"PdhAddEnglishCounterW {path}")
        handle = getattr(query, "value", query)
        if not self.queries.get(handle):
            return PDH_INVALID_HANDLE
        if path not in self.counters:
            return PDH_CSTATUS_NO_OBJECT
        counter = self._handle()
        self._counter_of[counter] = (handle, path)
        _out(counter_out).value = counter
        return 0

    def PdhCollectQueryData(self, query: Any) -> int:  # noqa: N802
        self.calls.append("PdhCollectQueryData")
        handle = getattr(query, "value", query)
        if not self.queries.get(handle):
            return PDH_INVALID_HANDLE
        mine = [c for c, (q, _) in self._counter_of.items() if q == handle]
        for counter in mine:
            self._collected[counter] = dict(self.counters[self._counter_of[counter][1]]())
        return PDH_NO_DATA if mine and not any(self._collected[c] for c in mine) else 0

    def PdhGetFormattedCounterArrayW(self, counter: Any, fmt: int, size_in: Any, count_out: Any,  # noqa: N802
                                     buffer: Any) -> int:
        self.calls.append("PdhGetFormattedCounterArrayW")
        handle = getattr(counter, "value", counter)
        if handle not in self._collected:
            return PDH_INVALID_HANDLE
        if not fmt & PDH_FMT_LARGE:
            self.misuse.append(f"format {fmt:#x}: Dedicated Usage is a count of bytes (PDH_FMT_LARGE)")
            return PDH_INVALID_ARGUMENT
        values = self._collected[handle]
        names = [name.encode("utf-16-le") + b"\0\0" for name in values]
        needed = ITEM.size * len(values) + sum(len(n) for n in names)
        size, count = _out(size_in), _out(count_out)
        if buffer is None or size.value < needed:
            if buffer is not None and size.value:
                self.misuse.append("a buffer smaller than the size asked for")
            size.value = needed
            count.value = 0
            return PDH_MORE_DATA
        base = ctypes.addressof(buffer)
        strings = base + ITEM.size * len(values)
        for index, (value, raw) in enumerate(zip(values.values(), names, strict=True)):
            status = 0 if value is not None else PDH_CSTATUS_INVALID_DATA
            item = ITEM.pack(strings, status, value if value is not None else 0)
            ctypes.memmove(base + ITEM.size * index, item, ITEM.size)
            ctypes.memmove(strings, raw, len(raw))
            strings += len(raw)
        size.value, count.value = needed, len(values)
        return 0

    def PdhCloseQuery(self, query: Any) -> int:  # noqa: N802
        self.calls.append("PdhCloseQuery")
        handle = getattr(query, "value", query)
        if not self.queries.get(handle):
            self.misuse.append("PdhCloseQuery of a query that is not open")
            return PDH_INVALID_HANDLE
        self.queries[handle] = False
        for counter in [c for c, (q, _) in self._counter_of.items() if q == handle]:
            del self._counter_of[counter]
            self._collected.pop(counter, None)
        return 0


def adapter_instance(adapter: FakeAdapter, phys: int = 0) -> str:
    return f"luid_{adapter.luid}_phys_{phys}"


def process_instance(pid: int, adapter: FakeAdapter, phys: int = 0) -> str:
    return f"pid_{pid}_luid_{adapter.luid}_phys_{phys}"


class NVMLError(Exception):
    pass


class WddmNvml:
    """pynvml on Windows: each GPU's (PCI device id, name, total, used); per-process lists
    whose figures are NVML_VALUE_NOT_AVAILABLE, as under WDDM."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[tuple[int, str, int, int]]) -> None:
        self.gpus = gpus
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        self.inits += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:  # noqa: N802
        return self.gpus[handle][1]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        _, _, total, used = self.gpus[handle]
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetPciInfo(self, handle: int) -> Any:  # noqa: N802
        return SimpleNamespace(pciDeviceId=(self.gpus[handle][0] << 16) | 0x10DE)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:  # noqa: N802
        return [SimpleNamespace(pid=4242, usedGpuMemory=NVML_VALUE_NOT_AVAILABLE)]
