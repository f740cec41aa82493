"""macOS: unified memory is one device, RAM, with the models' share capped where Metal caps it.

**RAM** (:meth:`MacReader.ram`): psutil's ``virtual_memory()`` (``hw.memsize``, and available:
free plus inactive pages). On Apple Silicon (``hw.optional.arm64`` is 1, also under Rosetta)
the GPU allocates from the same RAM, and llama.cpp's Metal backend keeps its buffers under
Metal's ``recommendedMaxWorkingSetSize``. So RAM's ``total`` there is that cap, the first of:

1. ``MTLCreateSystemDefaultDevice().recommendedMaxWorkingSetSize`` through pyobjc's ``Metal``
   module (``pyobjc-framework-Metal``, a macOS-only dependency);
2. ``iogpu.wired_limit_mb`` (sysctl, macOS 14 and later) when it is not 0 (0: the default);
3. two thirds of RAM (about what macOS gives the GPU by default on the smaller Macs).

It is never above the RAM installed. :class:`~.base.DeviceFree` says which one was used
(``limit``) and the RAM installed (``physical``). So ``memory_budget = "90%"`` (and a floor in
%) is a share of the cap, and a model larger than the cap is refused at once, as one larger
than a GPU is. ``free`` stays what RAM has available, which can be more than the cap: it is
what other programs can still have (the floor), and it must rise by what an unloaded model
held (admission waits for that); what Siesta's models may take together is the budget's to
bound. Metal's answer is read once and again only
when ``iogpu.wired_limit_mb`` changes (``sudo sysctl iogpu.wired_limit_mb=...`` raises the cap
for Metal devices made afterwards); whether an already running process's device then reports
the new value is unverified. An Intel Mac's RAM is RAM: no cap.

**A process's RAM** (:meth:`MacReader.process_ram`): ``proc_pid_rusage(pid, RUSAGE_INFO_V2,
&info)`` from libproc and its ``ri_phys_footprint``, the figure Activity Monitor shows as
"Memory": the memory the process owns, resident or compressed, with what the graphics driver
allocated for it (xnu's task ledger: internal, compressed, IOKit-mapped, ...), where RSS counts
shared pages and misses compressed and GPU ones. Clean pages of a mapped file are not in it:
whether the Metal buffers llama.cpp makes over a memory-mapped model (its default) count is
unverified, and with ``--no-mmap`` they are the process's own. ``ESRCH`` is psutil's
``NoSuchProcess``, any other error (``EPERM``) its ``AccessDenied``. Layout (xnu ``bsd/sys/resource.h``):
``ri_uuid[16]`` then eighteen ``uint64_t``, ``ri_phys_footprint`` the eighth, at offset 72;
160 bytes.

**GPUs**: none of their own (:class:`~.base.NoGpus`): the Metal device's memory is RAM.

**Pressure** (:class:`DispatchPressureSignal`): the kernel's level,
``kern.memorystatus_vm_pressure_level`` read with ``sysctlbyname`` (1 normal, 2 warning, 4
critical: xnu ``bsd/kern/kern_memorystatus_notify.c`` returns
``convert_internal_pressure_level_to_dispatch_level()``, whose values are
``NOTE_MEMORYSTATUS_PRESSURE_NORMAL/WARN/CRITICAL`` in ``bsd/sys/event_private.h``, the same as
``DISPATCH_MEMORYPRESSURE_*``). It is read when libdispatch's
``DISPATCH_SOURCE_TYPE_MEMORYPRESSURE`` source fires for WARN or CRITICAL, not on the
watch's poll ticks: every tick already runs the relief check, so reading the level there
would add nothing; only an event between ticks makes the check run *at once*, as a PSI
trigger does on Linux. The source is made with ``dispatch_source_create`` on a global queue
and a plain C handler (``dispatch_source_set_event_handler_f``: ctypes cannot make a block),
which runs on a libdispatch thread and hands the level to the watch. No thread of Siesta's
own, and no wake-up while nothing is loaded (the watch ignores the handler then).

Every OS call goes through ctypes on ``/usr/lib/libSystem.B.dylib`` (``libproc.dylib`` for
``proc_pid_rusage``), loaded on first use; tests pass fakes built from Apple's headers.
Unverified on real hardware.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import threading
from collections.abc import Callable
from typing import Any

import psutil

from app.core.memory.readers.base import (
    PRESSURE_CRITICAL,
    PRESSURE_NORMAL,
    PRESSURE_WARNING,
    DeviceFree,
    GpuReader,
    NoGpus,
    PressureSignal,
    Reader,
)

log = logging.getLogger(__name__)

__all__ = ["DispatchPressureSignal", "MacReader", "RUSAGE_INFO_V2", "RusageInfoV2", "metal_working_set",
           "sysctl_int"]

LIBSYSTEM = "/usr/lib/libSystem.B.dylib"
RUSAGE_INFO_V2 = 2  # the flavor (bsd/sys/resource.h)
DISPATCH_MEMORYPRESSURE_WARN = 0x02
DISPATCH_MEMORYPRESSURE_CRITICAL = 0x04
_IMPORT: Any = object()  # the default ``metal``: import pyobjc's Metal on first use
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # dispatch_function_t: void (*)(void *context)
_KEPT: list[Any] = []  # handlers libdispatch may still call after a cancel: never freed


class RusageInfoV2(ctypes.Structure):
    """``struct rusage_info_v2`` (xnu ``bsd/sys/resource.h``)."""

    _fields_ = [("ri_uuid", ctypes.c_uint8 * 16)] + [(name, ctypes.c_uint64) for name in (
        "ri_user_time", "ri_system_time", "ri_pkg_idle_wkups", "ri_interrupt_wkups", "ri_pageins",
        "ri_wired_size", "ri_resident_size", "ri_phys_footprint", "ri_proc_start_abstime", "ri_proc_exit_abstime",
        "ri_child_user_time", "ri_child_system_time", "ri_child_pkg_idle_wkups", "ri_child_interrupt_wkups",
        "ri_child_pageins", "ri_child_elapsed_abstime", "ri_diskio_bytesread", "ri_diskio_byteswritten")]


def load_sysctlbyname() -> Callable[..., int]:
    """``int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)``."""
    function = ctypes.CDLL(LIBSYSTEM, use_errno=True).sysctlbyname
    function.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def load_proc_pid_rusage() -> Callable[..., int]:
    """``int proc_pid_rusage(int pid, int flavor, rusage_info_t *buffer)`` (libproc.h; the
    buffer is the structure itself: the kernel copies out to that address)."""
    for path in ("/usr/lib/libproc.dylib", LIBSYSTEM):
        try:
            function = ctypes.CDLL(path, use_errno=True).proc_pid_rusage
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        function.restype = ctypes.c_int
        return function
    raise OSError("no proc_pid_rusage in libproc or libSystem")


def load_libdispatch() -> Any:
    """libSystem's libdispatch functions used here, and the memory-pressure source type
    (``DISPATCH_SOURCE_TYPE_MEMORYPRESSURE`` is ``&_dispatch_source_type_memorypressure``)."""
    lib = ctypes.CDLL(LIBSYSTEM)
    pointer, size = ctypes.c_void_p, ctypes.c_size_t
    prototypes = {
        "dispatch_get_global_queue": (pointer, [ctypes.c_long, ctypes.c_ulong]),
        "dispatch_source_create": (pointer, [pointer, size, size, pointer]),
        "dispatch_source_set_event_handler_f": (None, [pointer, _HANDLER]),
        "dispatch_source_get_data": (size, [pointer]),
        "dispatch_resume": (None, [pointer]),
        "dispatch_source_cancel": (None, [pointer]),
        "dispatch_release": (None, [pointer]),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes

    class Api:
        DISPATCH_SOURCE_TYPE_MEMORYPRESSURE = ctypes.addressof(
            ctypes.c_char.in_dll(lib, "_dispatch_source_type_memorypressure"))

        def __getattr__(self, name: str) -> Any:
            return getattr(lib, name)

    return Api()


def sysctl_int(sysctlbyname: Callable[..., int], name: str) -> int | None:
    """An integer sysctl (4 or 8 bytes, little-endian on both Apple CPUs); None when it does
    not exist here or cannot be read."""
    value = ctypes.c_uint64(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    try:
        if sysctlbyname(name.encode("ascii"), ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return None
    except (OSError, ctypes.ArgumentError):
        return None
    if size.value == 4:
        return ctypes.c_int32(value.value & 0xFFFFFFFF).value
    return int(value.value) if size.value == 8 else None


def metal_working_set(metal: Any) -> int | None:
    """``recommendedMaxWorkingSetSize`` of the system's default Metal device, in bytes; None
    without pyobjc's Metal module, without a device, or when it says 0."""
    try:
        device = metal.MTLCreateSystemDefaultDevice()
        size = int(device.recommendedMaxWorkingSetSize()) if device is not None else 0
    except Exception as exc:  # noqa: BLE001 - an Objective-C bridge can raise anything
        log.debug("Metal's recommendedMaxWorkingSetSize: %s", exc)
        return None
    return size or None


class DispatchPressureSignal:
    """macOS's memory-pressure notification (see the module): ``libdispatch`` and
    ``sysctlbyname`` are the real ones (loaded on first use) or fakes."""

    name = "macOS memory pressure notifications (DISPATCH_SOURCE_TYPE_MEMORYPRESSURE, kern.memorystatus_vm_pressure_level)"

    def __init__(self, *, libdispatch: Any = None, sysctlbyname: Callable[..., int] | None = None) -> None:
        self._lib = libdispatch
        self._sysctl = sysctlbyname
        self._source: Any = None
        self._notify: Callable[[int], None] | None = None
        self._lock = threading.Lock()

    def level(self) -> int | None:
        try:
            sysctl = self._sysctl or load_sysctlbyname()
        except (OSError, AttributeError):
            return None
        self._sysctl = sysctl
        level = sysctl_int(sysctl, "kern.memorystatus_vm_pressure_level")
        return level if level in (PRESSURE_NORMAL, PRESSURE_WARNING, PRESSURE_CRITICAL) else None

    def start(self, notify: Callable[[int], None]) -> None:
        with self._lock:
            if self._source is not None:
                self._notify = notify
                return
            try:
                lib = self._lib if self._lib is not None else load_libdispatch()
            except (OSError, AttributeError, ValueError) as exc:
                raise OSError(f"libdispatch is not available: {exc}") from exc
            self._lib = lib
            queue = lib.dispatch_get_global_queue(0, 0)
            source = lib.dispatch_source_create(lib.DISPATCH_SOURCE_TYPE_MEMORYPRESSURE, 0,
                                                DISPATCH_MEMORYPRESSURE_WARN | DISPATCH_MEMORYPRESSURE_CRITICAL, queue)
            if not source:
                raise OSError("dispatch_source_create(DISPATCH_SOURCE_TYPE_MEMORYPRESSURE) gave no source")
            handler = _HANDLER(self._fired)
            _KEPT.append(handler)
            self._notify = notify
            self._source = source
            lib.dispatch_source_set_event_handler_f(source, handler)
            lib.dispatch_resume(source)

    def _fired(self, _context: Any) -> None:
        """On a libdispatch thread: the level now, to the watch. Never raises (ctypes would
        only print it)."""
        try:
            notify, source = self._notify, self._source
            if notify is None or source is None:
                return
            level = self.level()
            if level is None:
                data = int(self._lib.dispatch_source_get_data(source))
                level = (PRESSURE_CRITICAL if data & DISPATCH_MEMORYPRESSURE_CRITICAL
                         else PRESSURE_WARNING if data & DISPATCH_MEMORYPRESSURE_WARN else PRESSURE_NORMAL)
            notify(level)
        except Exception:  # noqa: BLE001
            log.exception("the memory pressure notification failed")

    def stop(self) -> None:
        with self._lock:
            source, self._source, self._notify = self._source, None, None
            if source is not None:
                self._lib.dispatch_source_cancel(source)
                self._lib.dispatch_release(source)


class MacReader(Reader):
    """macOS (see the module). Every argument is the real thing when not given (loaded on
    first use): ``sysctlbyname`` and ``proc_pid_rusage`` (ctypes functions), ``metal``
    (pyobjc's ``Metal`` module; None: not used), ``libdispatch``, ``virtual_memory`` (psutil's)."""

    name = "macos"
    ram_source = "psutil.virtual_memory() (hw.memsize; available: free and inactive pages)"
    process_ram_source = "proc_pid_rusage(RUSAGE_INFO_V2): ri_phys_footprint"

    def __init__(self, *, sysctlbyname: Callable[..., int] | None = None,
                 proc_pid_rusage: Callable[..., int] | None = None, metal: Any = _IMPORT,
                 libdispatch: Any = None, virtual_memory: Callable[[], Any] | None = None) -> None:
        super().__init__(virtual_memory=virtual_memory)
        self._sysctl = sysctlbyname
        self._rusage = proc_pid_rusage
        self._metal_arg = metal
        self._libdispatch = libdispatch
        self._lock = threading.Lock()
        self._apple_silicon: bool | None = None
        self._metal: tuple[int | None, int | None] | None = None  # (iogpu.wired_limit_mb, Metal's cap) as read
        self._rusage_missing = False

    # ---- sysctl and Metal ------------------------------------------------------------------

    def _sysctl_int(self, name: str) -> int | None:
        if self._sysctl is None:
            try:
                self._sysctl = load_sysctlbyname()
            except (OSError, AttributeError) as exc:
                log.debug("no sysctlbyname: %s", exc)
                return None
        return sysctl_int(self._sysctl, name)

    def _metal_cap(self, wired_mb: int | None) -> int | None:
        with self._lock:
            if self._metal is not None and self._metal[0] == wired_mb:
                return self._metal[1]
            metal = self._metal_arg
            if metal is _IMPORT:
                try:
                    import Metal as metal  # type: ignore[import-not-found, no-redef]  # pyobjc-framework-Metal
                except ImportError:
                    log.debug("no pyobjc Metal module: the GPU's share of RAM comes from sysctl")
                    metal = None
                self._metal_arg = metal
            cap = metal_working_set(metal) if metal is not None else None
            self._metal = (wired_mb, cap)
            return cap

    def unified_cap(self, physical: int) -> tuple[int, str] | None:
        """On Apple Silicon, the models' share of RAM and which cap gave it; None elsewhere."""
        if self._apple_silicon is None:
            self._apple_silicon = self._sysctl_int("hw.optional.arm64") == 1
        if not self._apple_silicon:
            return None
        wired_mb = self._sysctl_int("iogpu.wired_limit_mb")
        metal = self._metal_cap(wired_mb)
        if metal:
            cap, how = metal, "Metal's recommendedMaxWorkingSetSize"
        elif wired_mb and wired_mb > 0:
            cap, how = wired_mb << 20, "iogpu.wired_limit_mb"
        else:
            cap, how = physical * 2 // 3, "two thirds of RAM (no Metal figure, iogpu.wired_limit_mb is 0)"
        return min(cap, physical), how

    # ---- the reader ----------------------------------------------------------------------------

    def ram(self) -> DeviceFree:
        plain = super().ram()
        if plain.total is None:
            return plain
        capped = self.unified_cap(plain.total)
        if capped is None:
            return plain
        cap, how = capped
        return DeviceFree("ram", cap, plain.free, physical=plain.total, limit=how)

    def process_ram(self, pid: int) -> int:
        if self._rusage is None and not self._rusage_missing:
            try:
                self._rusage = load_proc_pid_rusage()
            except OSError as exc:
                log.warning("%s: a model's RAM is its RSS instead of its footprint", exc)
                self._rusage_missing = True
        if self._rusage is None:
            return super().process_ram(pid)
        info = RusageInfoV2()
        if self._rusage(pid, RUSAGE_INFO_V2, ctypes.byref(info)) != 0:
            code = ctypes.get_errno()
            if code == errno.ESRCH:
                raise psutil.NoSuchProcess(pid)
            raise psutil.AccessDenied(pid, msg=f"proc_pid_rusage: {errno.errorcode.get(code, code)}")
        return int(info.ri_phys_footprint)

    def gpus(self, nvml: Any) -> GpuReader:
        return NoGpus("unified memory: the GPU's memory is RAM, read as RAM")

    def pressure_signal(self) -> PressureSignal | None:
        return DispatchPressureSignal(libdispatch=self._libdispatch, sysctlbyname=self._sysctl)
