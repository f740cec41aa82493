"""Memory as the GUI shows it: the tray's RAM and GPU lines, a model's RAM and VRAM in its
menu entry, the estimate in the Settings dialog and the Models window, and the words for all
of these.

RAM is the real machine's; every GPU figure comes from :class:`FakeGpus` at the boundary
(``ModelManager(gpus_factory=...)``), so each GPU number asserted here was put in by the test.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from PySide6.QtCore import QPoint

from app.core.config.clock import Clock
from app.core.manager import ModelManager
from app.core.memory.gpus import GpuDevice
from app.ui import text
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from app.ui.tray.menu import TrayMenu
from app.ui.windows.models import COL_MEMORY, ModelsWindow
from tests.ui.helpers import FakeShell, next_event, plain, until

GB = 1024 ** 3
MB = 1024 ** 2
SIZE = r"\d+(\.\d)? (B|KB|MB|GB)"


class FakeGpus:
    """Stands in for app.core.memory.gpus.GpuMemory: one 24 GB GPU with 10 GB in use; each
    model's server uses ``per_process`` bytes on it."""

    def __init__(self, per_process: int = 3 * GB) -> None:
        self.per_process = per_process
        self.closed = False

    def devices(self) -> list[GpuDevice]:
        return [GpuDevice(id="gpu0", name="Fake GPU", kind="nvidia", total=24 * GB, used=10 * GB)]

    def usage_of(self, pids: Any) -> dict[str, int] | None:
        return {"gpu0": self.per_process}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def start_gpu_manager(loop, paths, make_settings) -> Iterator[Callable[..., ModelManager]]:
    """Like conftest's ``start_manager``, with the fake GPU reader; always closes them."""
    managers: list[ModelManager] = []

    def start(gpus: FakeGpus | None = None, **flags: Any) -> ModelManager:
        gpus = gpus or FakeGpus()
        manager = ModelManager(paths, make_settings(**flags), clock=Clock(max_slice=0.2), watch_files=False,
                               gpus_factory=lambda: gpus)
        loop.run_until_complete(manager.start())
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        loop.run_until_complete(manager.close())


def make_tray(manager: ModelManager, shell: FakeShell) -> tuple[ManagerBridge, TrayMenu]:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    return bridge, TrayMenu(bridge, shell)


def memory_lines(tray: TrayMenu) -> list[str]:
    return [a.text() for a in tray.memory_actions]


def visible_layout(tray: TrayMenu) -> list[str]:
    """The menu's visible entries in order, a separator as ``"---"``."""
    return ["---" if a.isSeparator() else plain(a.text()) for a in tray.menu.actions() if a.isVisible()]


# ---- the tray ------------------------------------------------------------------------------------

def test_the_menu_shows_ram_and_a_line_per_gpu_when_it_opens(loop, start_gpu_manager, write_recipe, shell) -> None:
    write_recipe("tiny", fake=[])
    manager = start_gpu_manager()
    bridge, tray = make_tray(manager, shell)
    assert memory_lines(tray) == []  # nothing read before the menu opens
    assert not tray.memory_separator.isVisible()

    tray.menu.popup(QPoint(0, 0))
    lines = loop.run_until_complete(until(lambda: memory_lines(tray), 5, "the memory lines"))
    total = text.format_bytes(psutil.virtual_memory().total)
    assert re.fullmatch(rf"RAM: {SIZE} of {re.escape(total)} used", lines[0]), lines
    assert lines[1:] == ["GPU 0: 10.0 GB of 24.0 GB used"]  # no model loaded: nothing "by Siesta"
    for action in tray.memory_actions:
        assert not action.isEnabled()  # information, not something to click
    # Between the models and "Load model", each block between single separators.
    layout = visible_layout(tray)
    at = layout.index(lines[0])
    assert layout[at - 2:at + 4] == ["No models loaded", "---", lines[0], lines[1], "---", "Load model"], layout
    assert "---\n---" not in "\n".join(layout) and layout[0] != "---" and layout[-1] != "---"
    tray.menu.hide()


def test_a_loaded_model_shows_ram_and_vram_in_its_entry_and_the_gpu_line(loop, start_gpu_manager, write_recipe,
                                                                         shell) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_gpu_manager()
    bridge, tray = make_tray(manager, shell)
    tray.menu.popup(QPoint(0, 0))

    async def load_from_the_menu() -> dict[str, Any]:
        measured = asyncio.ensure_future(next_event(manager, "tiny", "measured"))
        await asyncio.sleep(0)  # subscribed before the load starts
        next(a for a in tray.load_menu.actions() if a.text() == "tiny").trigger()
        return await measured

    event = loop.run_until_complete(load_from_the_menu())
    assert event["model"]["vram"] == 3 * GB and event["model"]["memory"]
    label = tray.entries["tiny"].action.text()
    ram = text.format_bytes(event["model"]["memory"])
    assert re.fullmatch(rf"tiny \({re.escape(ram)} \+ 3\.0 GB VRAM\): idle, unloads in (5:00|4:5\d)", label), label

    # The next reading (every second while the menu is open) counts the model on the GPU.
    gpu = "GPU 0: 10.0 GB of 24.0 GB used, 3.0 GB by Siesta"
    loop.run_until_complete(until(lambda: gpu in memory_lines(tray), 5, "the GPU line to count the model"))
    ram_line = memory_lines(tray)[0]
    assert re.fullmatch(rf"RAM: {SIZE} of {SIZE} used, {SIZE} by Siesta", ram_line), ram_line
    assert len(memory_lines(tray)) == 2  # refreshed in place, never piled up
    tray.menu.hide()


def test_the_open_menu_stays_on_screen_when_the_lines_arrive(loop, start_gpu_manager, write_recipe,
                                                             shell) -> None:
    """The figures are read after the menu opens; a menu opened against the screen's right
    edge (a tray in the top right corner) must not grow past it when they arrive."""
    class LongNamedGpu(FakeGpus):  # a line longer than any other entry of the menu
        def devices(self) -> list[GpuDevice]:
            return [GpuDevice(id="gpu0", name="Intel Corporation Meteor Lake-P [Intel Arc Graphics] (rev 08)",
                              kind="i915", total=None, used=None)]

    write_recipe("tiny", fake=[])
    manager = start_gpu_manager(LongNamedGpu())
    bridge, tray = make_tray(manager, shell)
    tray.refresh()
    screen = tray.menu.screen().availableGeometry()
    narrow = tray.menu.sizeHint().width()
    tray.menu.popup(QPoint(screen.right() + 1 - narrow, screen.top()))
    assert tray.menu.geometry().right() == screen.right()  # flush with the edge, as a tray menu opens
    loop.run_until_complete(until(lambda: memory_lines(tray), 5, "the memory lines"))
    geometry = tray.menu.geometry()
    assert geometry.width() > narrow  # the lines made it wider...
    assert screen.contains(geometry), (geometry, screen)  # ...and it moved left to stay whole
    assert geometry.right() == screen.right()
    tray.menu.hide()


def test_no_gpu_means_only_the_ram_line(loop, start_gpu_manager, write_recipe, shell) -> None:
    class NoGpus(FakeGpus):
        def devices(self) -> list[GpuDevice]:
            return []

    write_recipe("tiny", fake=[])
    manager = start_gpu_manager(NoGpus())
    bridge, tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    lines = loop.run_until_complete(until(lambda: memory_lines(tray), 5, "the memory lines"))
    assert len(lines) == 1 and lines[0].startswith("RAM: ")
    assert re.fullmatch(rf"tiny \({SIZE}\): idle, unloads in (5:00|4:5\d)", tray.entries["tiny"].action.text())
    tray.menu.hide()


# ---- the estimate: Settings and the Models window -----------------------------------------------

def test_settings_shows_what_a_model_needs_under_its_name(loop, start_gpu_manager, write_recipe, qtbot) -> None:
    write_recipe("big", fake=[], memory_estimate="6GB")
    write_recipe("plain", fake=[])
    manager = start_gpu_manager()
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    dialog.show()
    assert dialog.rows["big"].name_label.text() == "big<br><small>needs ~6.0 GB</small>"
    assert dialog.rows["plain"].name_label.text() == "plain"  # a command recipe without one: nothing said


def test_the_models_window_shows_the_estimate_until_a_load_measures(loop, start_gpu_manager, write_recipe,
                                                                    qtbot) -> None:
    write_recipe("big", fake=[], memory_estimate="6GB")
    manager = start_gpu_manager()
    window = ModelsWindow(ManagerBridge(manager), FakeShell(has_tray=False))
    qtbot.addWidget(window)
    window.show()

    def memory_cell() -> str:
        return window.table.item(list(window.rows).index("big"), COL_MEMORY).text()

    assert memory_cell() == "needs ~6.0 GB"
    loop.run_until_complete(manager.load("big"))
    loop.run_until_complete(until(lambda: "VRAM" in memory_cell(), 5, "the measured memory"))
    assert re.fullmatch(rf"{SIZE} \+ 3\.0 GB VRAM", memory_cell()), memory_cell()
    loop.run_until_complete(manager.unload("big"))
    # The recipe's own figure still wins over what was measured.
    loop.run_until_complete(until(lambda: memory_cell().startswith("needs"), 5, "the estimate again"))
    assert memory_cell() == "needs ~6.0 GB"


# ---- the words -------------------------------------------------------------------------------------

def test_memory_text_without_vram() -> None:
    assert text.memory_text({"memory": int(1.2 * GB), "vram": None}) == "1.2 GB"
    assert text.memory_text({"memory": 230 * MB}) == "230 MB"
    assert text.memory_text({"memory": None, "vram": None}) == ""


def test_memory_text_with_vram() -> None:
    assert text.memory_text({"memory": 410 * MB, "vram": int(6.1 * GB)}) == "410 MB + 6.1 GB VRAM"
    assert text.memory_text({"memory": None, "vram": 2 * GB}) == "2.0 GB VRAM"


def test_estimate_text_by_source() -> None:
    assert text.estimate_text({"memory_estimate": int(6.2 * GB), "memory_estimate_source": "measured"}) \
        == "needs 6.2 GB"
    assert text.estimate_text({"memory_estimate": int(6.2 * GB), "memory_estimate_source": "gguf"}) \
        == "needs ~6.2 GB"
    assert text.estimate_text({"memory_estimate": 6 * GB, "memory_estimate_source": "recipe"}) == "needs ~6.0 GB"
    assert text.estimate_text({"memory_estimate": None, "memory_estimate_source": None}) == ""
    assert text.estimate_text({}) == ""


def test_device_line() -> None:
    device = {"id": "gpu0", "name": "Fake GPU", "kind": "nvidia", "total": 24 * GB, "used": 10 * GB,
              "free": 14 * GB, "models": 3 * GB}
    assert text.device_line(device) == "GPU 0: 10.0 GB of 24.0 GB used, 3.0 GB by Siesta"
    assert text.device_line({**device, "id": "gpu1", "models": 0}) == "GPU 1: 10.0 GB of 24.0 GB used"


def test_device_line_with_unknown_totals() -> None:
    device = {"id": "gpu1", "name": "Radeon RX 7900", "kind": "amdgpu", "total": None, "used": None,
              "free": None, "models": 2 * GB}
    assert text.device_line(device) == "GPU 1 (Radeon RX 7900): size not known, 2.0 GB by Siesta"
    assert text.device_line({**device, "name": None, "models": None}) == "GPU 1 (amdgpu): size not known"


def test_ram_line() -> None:
    ram = {"total": 32 * GB, "available": 20 * GB, "models": 717 * MB}
    assert text.ram_line(ram) == "RAM: 12.0 GB of 32.0 GB used, 717 MB by Siesta"
    assert text.ram_line({**ram, "models": 0}) == "RAM: 12.0 GB of 32.0 GB used"
    assert text.ram_line({}) == ""
    assert text.ram_line({"total": 32 * GB, "available": None}) == ""
