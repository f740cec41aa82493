"""What each model's server uses, and what it is expected to use before it loads.

:class:`MemoryBook` is the manager's one owner of memory figures:

* **Measured use** of a loaded model: resident RAM of its server's process tree, and GPU
  memory per device (NVML for NVIDIA, the kernel's DRM fdinfo for AMD, Intel and others,
  see :mod:`app.core.memory.gpus`). The server's process tree is found once it is ready
  (listing every process in /proc, some milliseconds on a busy desktop) and kept: a reading
  reads only those pids, and the tree is found again only when one of them has gone, every
  :data:`TREE_KEPT_FOR` seconds (a server that starts workers later), or for a measurement
  asked for now. Every read runs in a worker thread, never on the event loop's thread, and
  a snapshot shows the last figures at once (a figure older than :data:`REFRESH_AFTER`
  seconds is refreshed in the background).
* **Estimates** before a load, in this order: the recipe's own ``memory_estimate``; what
  the same recipe (same backend, model file and arguments) used after an earlier load,
  remembered in the state dir; else the GGUF header (:mod:`app.core.memory.gguf_estimate`).
  After a load, what llama-server printed about its buffers (model, KV cache, compute, per
  device) replaces the estimate; when it printed nothing (this build prints them only at
  log verbosity 4), the measured use does, device by device: where a device could not be
  measured (a GPU whose per-process figure cannot be had), the estimate's figure stays.
* **What a model holds** on a device, for admission, pressure relief and whatever else
  weighs models against each other: :meth:`MemoryBook.held`, the one place that decides it
  (the measurement where there is one, else the estimate).

Where a measured figure cannot be had it is ``None``, never a guess (that is what the API
and the tray show); :meth:`MemoryBook.held` falls back to the estimate. Sizes are bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from app.core.config.atomic_write import FILES, write_text_atomic
from app.core.config.recipes import Recipe
from app.core.memory.fit import DeviceState, placed
from app.core.memory.gguf_estimate import MemoryEstimate, estimate_llamacpp, load_printed, parse_buffer_sizes
from app.core.memory.gpus import GpuDevice, GpuMemory
from app.core.memory.pressure import DeviceFree, read_ram
from app.core.memory.readers import process_ram
from app.core.memory.released import ReleasedMemory
from app.core.models.backend import BackendProcess
from app.core.models.model import ManagedModel

log = logging.getLogger(__name__)

REFRESH_AFTER = 2.0  # seconds a measured figure is shown before it is read again
TREE_KEPT_FOR = 60.0  # seconds a server's process tree is used before it is found again
# how long a load's measurement waits for llama-server's log thread to print the rest of its load
# (its buffer sizes), once health answered; a server that never says "listening on" costs this once
LOAD_OUTPUT_WAIT = 1.0


@dataclass(frozen=True)
class MemoryUse:
    """One model's measured memory: resident RAM, and GPU bytes per device id."""

    ram: int | None
    gpu: dict[str, int] | None  # None: GPU memory cannot be measured here (on one GPU or more)
    at: float = 0.0
    # Each GPU's figure as read, None where it could not be had; None: the reader gives only
    # the whole figure (``gpu``).
    gpu_read: dict[str, int | None] | None = None

    @property
    def vram(self) -> int | None:
        return sum(self.gpu.values()) if self.gpu is not None else None

    def by_device(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.ram is not None:
            out["ram"] = self.ram
        out.update(self.gpu or {})
        return out

    def on(self, device: str) -> int | None:
        """Measured bytes on one device (``"ram"``, ``"gpu0"``, ...), 0 where the reading found
        none; None where the device could not be measured."""
        if device == "ram":
            return self.ram
        if self.gpu_read is not None and device in self.gpu_read:
            return self.gpu_read[device]
        return self.gpu.get(device, 0) if self.gpu is not None else None


@dataclass(frozen=True)
class HeldBytes:
    """What a model holds on one device (:meth:`MemoryBook.held`): ``bytes``, and where the
    figure comes from: ``"measured"`` (its server's last reading there), ``"estimate"`` (no
    reading there, or none yet: its estimate, placed on the devices), ``"none"`` (0: no server
    and no admitted load, or nothing says what it holds)."""

    bytes: int
    source: Literal["measured", "estimate", "none"]


def recipe_fingerprint(recipe: Recipe) -> str | None:
    """What makes two loads use the same memory: backend, model file (and its size and
    time), arguments, command. None when the model file cannot be read."""
    stat: tuple[int, int] | None = None
    if recipe.model is not None:
        try:
            st = recipe.model.stat()
            stat = (st.st_size, st.st_mtime_ns)
        except OSError:
            return None
    key = json.dumps([recipe.backend, str(recipe.model), stat, list(recipe.args), list(recipe.command)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _gpu_reading(gpus: GpuMemory, pids: list[int]) -> tuple[dict[str, int] | None, dict[str, int | None] | None]:
    """(the whole figure as ``usage_of`` gives it, each device's figure or None); the second is
    None for a reader that gives only the whole figure."""
    by_device = getattr(gpus, "usage_by_device", None)
    if by_device is None:
        return gpus.usage_of(pids), None
    read: dict[str, int | None] = by_device(pids)
    whole = None if any(b is None for b in read.values()) else {d: b for d, b in read.items() if b}
    return whole, read


def _rss_of(pids: Iterable[int]) -> tuple[int | None, bool]:
    """Resident bytes of these processes (None: none could be read), and whether any has gone."""
    total, seen, gone = 0, False, False
    for pid in pids:
        try:
            total += process_ram(pid)  # RSS; on a Mac the physical footprint (readers/macos.py)
            seen = True
        except psutil.ZombieProcess:
            pass  # ended, not yet reaped: still in the tree that would be found again
        except psutil.NoSuchProcess:
            gone = True
        except psutil.Error:
            pass
    return (total if seen else None), gone


@dataclass(frozen=True)
class _Tree:
    """A loaded server's process tree as last found: the pids a reading reads."""

    process: BackendProcess
    pids: list[int]
    found_at: float


class MemoryBook:
    """Measured use of loaded models and estimates of every recipe; one per manager."""

    def __init__(self, state_file: Path, gpus_factory: Callable[[], GpuMemory | None] = GpuMemory,
                 on_measured: Callable[[str], None] = lambda name: None) -> None:
        self.state_file = state_file
        self._on_measured = on_measured  # told when a load's first measurement is in
        self._gpus_factory = gpus_factory
        self._gpus: GpuMemory | None = None
        self._gpus_ready = False
        self._gpu_count: int | None = None
        self._use: dict[str, MemoryUse] = {}
        self._trees: dict[str, _Tree] = {}
        self._estimates: dict[str, MemoryEstimate | None] = {}  # recipe name -> estimate
        self._estimate_keys: dict[str, tuple[Any, ...]] = {}
        self._states: dict[str, DeviceState] = {}  # the devices as last read by device_states()
        self._measured: dict[str, dict[str, int]] = self._read_state()
        self._refreshing: set[str] = set()
        self._measuring: dict[str, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.released = ReleasedMemory()  # bytes of exited victims a device does not show yet

    # ---- GPUs -------------------------------------------------------------------------------

    def _gpu_memory(self) -> GpuMemory | None:
        """Created on first use, in a worker thread (NVML's init can take a moment)."""
        if not self._gpus_ready:
            self._gpus_ready = True
            try:
                self._gpus = self._gpus_factory()
            except Exception:  # noqa: BLE001 - no GPU figures then, never a crash
                log.exception("reading GPU memory is not available")
                self._gpus = None
        return self._gpus

    def _devices(self) -> list[GpuDevice]:
        gpus = self._gpu_memory()
        if gpus is None:
            return []
        try:
            return gpus.devices()
        except Exception:  # noqa: BLE001
            log.exception("reading the GPU devices failed")
            return []

    # ---- measuring ------------------------------------------------------------------------------

    def _measure(self, pids: list[int]) -> tuple[MemoryUse, bool]:
        """What these pids use now, and whether one of them has gone (in a worker thread)."""
        gpus = self._gpu_memory()
        gpu: dict[str, int] | None = None
        gpu_read: dict[str, int | None] | None = None
        if gpus is not None and self._has_gpus():
            try:
                gpu, gpu_read = _gpu_reading(gpus, pids)
            except Exception:  # noqa: BLE001
                log.exception("reading GPU memory of %s failed", pids)
        ram, gone = _rss_of(pids)
        return MemoryUse(ram=ram, gpu=gpu, at=time.monotonic(), gpu_read=gpu_read), gone

    def _read(self, tree: _Tree, find_again: bool) -> tuple[_Tree, MemoryUse]:
        """One reading of a server's memory, in a worker thread: the kept tree's pids, after
        finding the tree again when asked, when it is old, or when one of its pids has gone."""
        if find_again or time.monotonic() - tree.found_at > TREE_KEPT_FOR:
            tree = _Tree(tree.process, tree.process.process_tree(), time.monotonic())
        use, gone = self._measure(tree.pids)
        if gone:
            tree = _Tree(tree.process, tree.process.process_tree(), time.monotonic())
            use, _ = self._measure(tree.pids)
        return tree, use

    async def _read_now(self, name: str, find_again: bool = False) -> MemoryUse | None:
        """Reads a loaded model's memory off the loop and keeps the figures (and the tree, as
        found) unless it was unloaded meanwhile."""
        tree = self._trees.get(name)
        if tree is None:
            return None
        tree, use = await asyncio.to_thread(self._read, tree, find_again)
        if self._trees.get(name) is not None and self._trees[name].process is tree.process:
            self._trees[name] = tree
            self._use[name] = use
        return use

    def _has_gpus(self) -> bool:
        """Whether this machine has GPUs to measure (asked once: a GPU is not added at run time
        often enough to pay for asking at every reading)."""
        if self._gpu_count is None:
            self._gpu_count = len(self._devices())
        return self._gpu_count > 0

    async def loaded(self, name: str, recipe: Recipe, process: BackendProcess) -> None:
        """A model became ready: finds its process tree (kept for the readings after), measures
        it, and records what this recipe uses (what llama-server printed, else the measurement)."""
        await process.output_caught_up()
        if recipe.backend == "llamacpp":
            await process.load_output_until(load_printed, LOAD_OUTPUT_WAIT)
        lines = process.end_load_output()
        self._trees[name] = _Tree(process, [process.pid], time.monotonic())
        use = await self._read_now(name, find_again=True)
        assert use is not None  # its tree is kept just above
        printed = parse_buffer_sizes(lines) if recipe.backend == "llamacpp" else None
        self._remember(recipe, printed or self._measured_figures(recipe, use))
        self._on_measured(name)

    def _measured_figures(self, recipe: Recipe, use: MemoryUse) -> dict[str, int]:
        """What a load measured per device and, where a device could not be measured, what
        :meth:`_held` counts there (the estimate): a RAM-only measurement never replaces a GPU
        estimate, and one GPU that cannot be measured does not drop another one's figure."""
        figures = use.by_device()  # as shown: every GPU's figure only when all could be read
        for device in sorted({*(use.gpu_read or {}), *(self._placed_estimate(recipe) or {})} - set(figures)):
            held = self._held(use, recipe, device)
            if held.bytes:
                figures[device] = held.bytes
        return figures

    def measure_load(self, name: str, recipe: Recipe, process: BackendProcess) -> None:
        """Starts :meth:`loaded` in the background; :meth:`measured` waits for it."""
        task = self._spawn(self.loaded(name, recipe, process))
        if task is not None:
            self._measuring[name] = task
            task.add_done_callback(lambda t: self._measuring.get(name) is t and self._measuring.pop(name))

    async def measured(self, name: str) -> None:
        """Waits until the first measurement of a model that just loaded is in."""
        task = self._measuring.get(name)
        if task is not None:
            await asyncio.wait({task})

    def held(self, model: ManagedModel, device: str) -> HeldBytes:
        """What ``model`` holds on ``device`` (``"ram"``, ``"gpu0"``, ...) now: the one figure
        admission, pressure relief and anything else that weighs models by memory go by.

        * nothing (``"none"``, 0) while it has no server and no admitted load;
        * its server's last measurement there (``"measured"``, 0 included: measured as none),
          when that device could be measured;
        * else its estimate placed on the devices (``"estimate"``, 0 where the estimate puts
          nothing): a model not measured yet (admitted, starting), or a device whose
          per-process figure cannot be had (NVIDIA under WSL or Windows, a container without
          the host's pids, a GPU with no per-process reader). A measurement of other devices
          (RAM) never stands in for it;
        * ``"none"`` (0) when there is neither.

        A total-only estimate (a recipe's ``memory_estimate``) is placed on the devices last
        read by :meth:`device_states`, as admission places a new load."""
        if model.process is None and not model.occupies_slot:
            return HeldBytes(0, "none")
        return self._held(self.use_of(model.name), model.recipe, device)

    def _held(self, use: MemoryUse | None, recipe: Recipe | None, device: str) -> HeldBytes:
        measured = use.on(device) if use is not None else None
        if measured is not None:
            return HeldBytes(measured, "measured")
        estimate = self._placed_estimate(recipe)
        if estimate is not None:
            return HeldBytes(estimate.get(device, 0), "estimate")
        return HeldBytes(0, "none")

    def _placed_estimate(self, recipe: Recipe | None) -> dict[str, int] | None:
        estimate = self.estimate_of(recipe)
        return placed(estimate, self._states) if estimate is not None else None

    def unloaded(self, name: str) -> None:
        self._use.pop(name, None)
        self._trees.pop(name, None)

    def use_of(self, name: str) -> MemoryUse | None:
        """The last measured use of a loaded model (refreshed in the background when old)."""
        use = self._use.get(name)
        if use is not None and time.monotonic() - use.at > REFRESH_AFTER and name in self._trees:
            self._refresh(name)
        return use

    def _refresh(self, name: str) -> None:
        if name in self._refreshing or self.closed:
            return
        self._refreshing.add(name)

        async def refresh() -> None:
            try:
                await self._read_now(name)
            finally:
                self._refreshing.discard(name)

        if self._spawn(refresh()) is None:
            self._refreshing.discard(name)

    async def measure_now(self, name: str) -> MemoryUse | None:
        """A loaded model's memory read now, its process tree found again first."""
        return await self._read_now(name, find_again=True)

    # ---- estimates ----------------------------------------------------------------------------

    def estimate_of(self, recipe: Recipe | None) -> MemoryEstimate | None:
        """The estimate of a recipe now (None until computed, or when unknown)."""
        if recipe is None:
            return None
        if recipe.memory_estimate is not None:
            return MemoryEstimate(total=recipe.memory_estimate, by_device={}, source="recipe")
        key = (recipe.launch_key,)
        if self._estimate_keys.get(recipe.name) != key:
            self._estimates.pop(recipe.name, None)
            if self._spawn(self._estimate(recipe, key)) is not None:
                self._estimate_keys[recipe.name] = key  # else asked again next time
        return self._estimates.get(recipe.name)

    async def _estimate(self, recipe: Recipe, key: tuple[Any, ...]) -> None:
        estimate = await asyncio.to_thread(self._compute_estimate, recipe)
        if self._estimate_keys.get(recipe.name) == key:
            self._estimates[recipe.name] = estimate

    def _compute_estimate(self, recipe: Recipe) -> MemoryEstimate | None:
        fingerprint = recipe_fingerprint(recipe)
        measured = self._measured.get(fingerprint) if fingerprint else None
        if measured:
            return MemoryEstimate(total=sum(measured.values()), by_device=dict(measured), source="measured")
        if recipe.backend != "llamacpp" or recipe.model is None:
            return None
        free = {d.id: d.free for d in self._devices()}
        try:
            return estimate_llamacpp(recipe.model, recipe.args, free)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be read has no estimate
            log.info("no memory estimate for %s: %s", recipe.name, exc)
            return None

    def _remember(self, recipe: Recipe, by_device: dict[str, int]) -> None:
        fingerprint = recipe_fingerprint(recipe)
        if not fingerprint or not by_device:
            return
        self._measured[fingerprint] = dict(by_device)
        if recipe.memory_estimate is None:
            self._estimate_keys[recipe.name] = (recipe.launch_key,)
            self._estimates[recipe.name] = MemoryEstimate(total=sum(by_device.values()),
                                                          by_device=dict(by_device), source="measured")
        self._save_state()

    async def estimate_now(self, recipe: Recipe | None) -> MemoryEstimate | None:
        """The estimate of a recipe, computed now if it is not known yet (admission needs it)."""
        estimate = self.estimate_of(recipe)
        if estimate is not None or recipe is None:
            return estimate
        key = (recipe.launch_key,)
        estimate = await asyncio.to_thread(self._compute_estimate, recipe)
        if self._estimate_keys.get(recipe.name) == key:
            self._estimates[recipe.name] = estimate
        return estimate

    async def device_states(self) -> dict[str, DeviceState]:
        """Every device's total and free memory now: RAM (what the kernel says is available
        without swapping) and each GPU, the free figure including what unloads have just
        released and the device does not show yet (:attr:`released`)."""

        def read() -> dict[str, DeviceState]:
            ram = read_ram()
            states = {"ram": DeviceState(total=ram.total, free=ram.free)}
            devices = self._devices() if self._gpu_count != 0 else []
            if self._gpu_count is None:
                self._gpu_count = len(devices)
            for device in devices:
                states[device.id] = DeviceState(total=device.total, free=device.free)
            return states

        if self._gpu_count == 0:
            # No GPU: /proc/meminfo alone is a 30 us read, far cheaper than a thread hop
            # (this runs every 1.5 s while models are loaded, for memory pressure).
            states = read()
        else:
            states = await asyncio.to_thread(read)
        self._states = states
        return self.released.adjust(states)

    @property
    def last_read(self) -> dict[str, DeviceState]:
        """The devices as :meth:`device_states` last read them, without :attr:`released`'s credit."""
        return dict(self._states)

    # ---- the state file ------------------------------------------------------------------------

    def _read_state(self) -> dict[str, dict[str, int]]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot read the remembered memory figures (%s); starting afresh", self.state_file, exc)
            return {}
        measured = data.get("measured") if isinstance(data, dict) else None
        if not isinstance(measured, dict):
            return {}
        return {k: {d: int(b) for d, b in v.items() if isinstance(b, int)}
                for k, v in measured.items() if isinstance(v, dict)}

    def _save_state(self) -> None:
        """Writes what loads measured to the state file, off the loop and after the writes
        asked before (a copy: the loop goes on changing the figures meanwhile)."""
        FILES.submit(self._write_state, dict(self._measured))

    def _write_state(self, measured: dict[str, dict[str, int]]) -> None:
        try:
            write_text_atomic(self.state_file, json.dumps({"measured": measured}, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("cannot remember the measured memory in %s: %s", self.state_file, exc)

    # ---- the machine ----------------------------------------------------------------------------

    async def system(self, models_use: dict[str, MemoryUse]) -> dict[str, Any]:
        """RAM and every GPU: total, used, free, and what Siesta's models use there."""

        def read() -> tuple[DeviceFree, list[GpuDevice]]:
            return read_ram(), self._devices()  # on a Mac, RAM's total is Metal's share, as admission sees it

        ram, devices = await asyncio.to_thread(read)
        ram_models = sum(u.ram or 0 for u in models_use.values())
        out_devices = []
        for device in devices:
            known = [u.gpu for u in models_use.values() if u.gpu is not None]
            models = sum(g.get(device.id, 0) for g in known) if known or not models_use else None
            out_devices.append({"id": device.id, "name": device.name, "kind": device.kind, "total": device.total,
                                "used": device.used, "free": device.free, "models": models})
        return {"memory": {"ram": {"total": ram.total, "available": ram.free, "models": ram_models},
                           "devices": out_devices}}

    # ---- tasks -------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        """Runs ``coro`` in the background; nothing (None) when closed or when no event loop
        runs (a snapshot read from a Qt callback while the loop is stopped, at shutdown)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self.closed or loop is None:
            coro.close()
            return None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a memory reading failed", exc_info=task.exception())

    async def close(self) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        gpus = self._gpus
        if gpus is not None:
            await asyncio.to_thread(gpus.close)
