"""The Settings dialog's memory fields: the budget and the free memory floor with the
devices' totals beside them, the memory notification checkbox, errors that name the field,
saving through the manager (settings.toml keeps its comments), pinned fields, and a focus
order that follows the visual order.

RAM is the real machine's; the GPU is :class:`FakeGpus` (one 24 GB device), given to the
manager at its boundary (``ModelManager(gpus_factory=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
import shiboken6
from PySide6.QtWidgets import QDialogButtonBox

from app.core.config.clock import Clock
from app.core.config.memory_limits import parse_memory_limit
from app.core.config.sizes import format_bytes
from app.core.manager import ModelManager
from app.core.memory.gpus import GpuDevice
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from tests.ui.helpers import until

GB = 1024 ** 3
OK = QDialogButtonBox.StandardButton.Ok
APPLY = QDialogButtonBox.StandardButton.Apply


class FakeGpus:
    """Stands in for app.core.memory.gpus.GpuMemory: one 24 GB GPU with 10 GB in use."""

    def devices(self) -> list[GpuDevice]:
        return [GpuDevice(id="gpu0", name="Fake GPU", kind="nvidia", total=24 * GB, used=10 * GB)]

    def usage_of(self, pids: Any) -> dict[str, int] | None:
        return {"gpu0": 0}

    def close(self) -> None:
        pass


@pytest.fixture
def start_gpu_manager(loop, paths, make_settings) -> Iterator[Callable[..., ModelManager]]:
    """Like conftest's ``start_manager``, with the fake GPU; always closes them."""
    managers: list[ModelManager] = []

    def start(**flags: Any) -> ModelManager:
        gpus = FakeGpus()
        manager = ModelManager(paths, make_settings(**flags), clock=Clock(max_slice=0.2), watch_files=False,
                               gpus_factory=lambda: gpus)
        loop.run_until_complete(manager.start())
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        loop.run_until_complete(manager.close())


def open_dialog(loop, manager: ModelManager, qtbot) -> SettingsDialog:
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)  # it deletes itself on close; see conftest's _close_dialogs
    dialog.show()
    loop.run_until_complete(until(lambda: "GPU 0" in dialog.memory_box.totals_label.text(), 10,
                                  "the device totals to show"))
    return dialog


def type_into(qtbot, edit, text: str) -> None:
    edit.selectAll()
    qtbot.keyClicks(edit, text)  # as the user types: textEdited is emitted


def click(dialog: SettingsDialog, which) -> None:
    dialog.buttons.button(which).click()


def finish_saving(loop, dialog: SettingsDialog) -> None:
    loop.run_until_complete(until(lambda: not dialog.saving, 10, "the dialog to finish saving"))


def files(paths) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(paths.config_dir.rglob("*")) if p.is_file()}


def ram_share(percent: float) -> str:
    return format_bytes(round(psutil.virtual_memory().total * percent / 100))


def test_memory_fields_show_the_settings_with_the_device_totals_beside_them(loop, start_gpu_manager,
                                                                            qtbot) -> None:
    manager = start_gpu_manager()
    dialog = open_dialog(loop, manager, qtbot)
    assert dialog.budget_edit.text() == "90%"
    assert dialog.floor_edit.text() == "5%"
    assert dialog.notify_pressure_check.isChecked()
    assert dialog.notify_pressure_check.text().replace("&", "") == "When memory is given back to other programs"
    ram_total = format_bytes(psutil.virtual_memory().total)
    assert dialog.memory_box.totals_label.text() == f"RAM {ram_total} · GPU 0 24.0 GB"
    # beside each field: what it comes to on each device (90% of 24 GB, 5% of 24 GB)
    assert dialog.memory_box.amount_labels["memory_budget"].text() == f"RAM {ram_share(90)} · GPU 0 21.6 GB"
    assert dialog.memory_box.amount_labels["free_memory_floor"].text() == f"RAM {ram_share(5)} · GPU 0 1.2 GB"
    assert not dialog.buttons.button(APPLY).isEnabled()

    type_into(qtbot, dialog.budget_edit, "ram: 16GB, gpu0: 50%")  # follows the typing
    assert dialog.memory_box.amount_labels["memory_budget"].text() == "RAM 16.0 GB · GPU 0 12.0 GB"
    type_into(qtbot, dialog.budget_edit, "gpu0: 20GB")
    assert dialog.memory_box.amount_labels["memory_budget"].text() == "RAM off · GPU 0 20.0 GB"
    type_into(qtbot, dialog.budget_edit, "off")
    assert dialog.memory_box.amount_labels["memory_budget"].text() == "off"
    assert dialog.buttons.button(APPLY).isEnabled()


def test_a_bad_memory_value_names_its_field_and_saves_nothing(loop, start_gpu_manager, qtbot, paths) -> None:
    paths.settings_file.write_text('# mine\nmemory_budget = "80%"\n')
    manager = start_gpu_manager()
    before = files(paths)
    dialog = open_dialog(loop, manager, qtbot)
    assert dialog.budget_edit.text() == "80%"
    type_into(qtbot, dialog.budget_edit, "12 GBs")
    assert "border" in dialog.budget_edit.styleSheet()
    assert dialog.memory_box.amount_labels["memory_budget"].text() == ""
    dialog.notify_pressure_check.setChecked(False)  # a good change beside it is not saved either
    click(dialog, OK)
    assert dialog.isVisible()
    message = dialog.error_label.text()
    assert message.startswith("Memory budget: invalid memory limit '12 GBs'")
    assert '"85%"' in message and '"off"' in message  # the forms it takes
    assert dialog.budget_edit.hasFocus()

    type_into(qtbot, dialog.budget_edit, "70%")
    assert dialog.budget_edit.styleSheet() == ""
    type_into(qtbot, dialog.floor_edit, "150%")
    click(dialog, APPLY)
    assert dialog.error_label.text().startswith(
        "Keep free for other programs: invalid memory limit '150%': a share is between 0% and 100%")
    type_into(qtbot, dialog.floor_edit, "vram: 2GB")
    click(dialog, APPLY)
    assert "unknown device 'vram'" in dialog.error_label.text()
    assert dialog.error_label.text().startswith("Keep free for other programs: ")

    assert files(paths) == before
    assert manager.settings.memory_budget == parse_memory_limit("80%")
    assert manager.settings.notify_memory_pressure is True


def test_good_memory_values_are_saved_and_applied(loop, start_gpu_manager, qtbot, paths) -> None:
    paths.settings_file.write_text('# my settings\nmax_loaded_models = 2  # two at most\n')
    manager = start_gpu_manager()
    dialog = open_dialog(loop, manager, qtbot)
    type_into(qtbot, dialog.budget_edit, "RAM: 16 GB, GPU0: 80%")
    type_into(qtbot, dialog.floor_edit, "2048MB")
    dialog.notify_pressure_check.setChecked(False)
    click(dialog, APPLY)
    finish_saving(loop, dialog)
    assert dialog.error_label.isHidden()
    assert manager.settings.memory_budget == parse_memory_limit({"ram": "16GB", "gpu0": "80%"})
    assert manager.settings.free_memory_floor.for_device("gpu0", 24 * GB) == 2 * GB
    assert manager.settings.notify_memory_pressure is False
    content = paths.settings_file.read_text()
    assert content.startswith("# my settings\nmax_loaded_models = 2  # two at most\n")
    assert 'free_memory_floor = "2GB"' in content  # the canonical form
    assert 'notify_memory_pressure = false' in content
    assert content.endswith('[memory_budget]\nram = "16GB"\ngpu0 = "80%"\n')  # a table, as a table
    assert manager.loaded_settings.sources["memory_budget"] == "file settings.toml"
    assert not dialog.buttons.button(APPLY).isEnabled()  # what is saved is the new baseline

    click(dialog, OK)  # nothing changed: closes without writing
    loop.run_until_complete(until(lambda: not shiboken6.isValid(dialog) or not dialog.isVisible(), 5))
    dialog = open_dialog(loop, manager, qtbot)  # opened again: the saved values, in the one-line form
    assert dialog.budget_edit.text() == "ram: 16GB, gpu0: 80%"
    assert dialog.floor_edit.text() == "2GB"
    assert not dialog.notify_pressure_check.isChecked()
    assert dialog.memory_box.amount_labels["memory_budget"].text() == "RAM 16.0 GB · GPU 0 19.2 GB"


def test_memory_fields_pinned_by_the_environment_are_read_only(loop, start_gpu_manager, qtbot,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("SIESTA_MEMORY_BUDGET", '{"gpu0": "75%"}')
    manager = start_gpu_manager(free_memory_floor="1GB")
    dialog = open_dialog(loop, manager, qtbot)
    assert not dialog.budget_edit.isEnabled()
    assert dialog.budget_edit.toolTip() == "Fixed by SIESTA_MEMORY_BUDGET for this run"
    assert dialog.budget_edit.text() == "gpu0: 75%"
    assert dialog.memory_box.amount_labels["memory_budget"].text() == "RAM off · GPU 0 18.0 GB"
    assert not dialog.floor_edit.isEnabled()
    assert dialog.floor_edit.toolTip() == "Fixed by --free-memory-floor for this run"
    assert dialog.notify_pressure_check.isEnabled()


def test_focus_order_follows_the_visual_order(loop, start_gpu_manager, write_recipe, qtbot) -> None:
    write_recipe("beta", fake=[])
    write_recipe("alpha", fake=[])
    manager = start_gpu_manager()
    dialog = open_dialog(loop, manager, qtbot)
    expected = dialog.focus_chain()
    assert expected[:6] == [dialog.global_slider.slider, dialog.global_edit,
                            dialog.rows["alpha"].slider.slider, dialog.rows["alpha"].use_global,
                            dialog.rows["beta"].slider.slider, dialog.rows["beta"].use_global]
    server_to_memory = [dialog.host_edit, dialog.port_spin, dialog.max_spin, dialog.notify_idle_check,
                        dialog.notify_crash_check, dialog.notify_pressure_check, dialog.autostart_check,
                        dialog.budget_edit, dialog.floor_edit]
    assert expected[6:15] == server_to_memory

    def tab_order(start) -> list:
        wanted = set(expected)
        seen, widget = [], start
        for _ in range(500):
            if widget in wanted and widget not in seen:
                seen.append(widget)
            widget = widget.nextInFocusChain()
            if widget is start:
                break
        return seen

    assert tab_order(dialog.global_slider.slider) == expected

    write_recipe("gamma", fake=[])  # a row added while it is open joins the chain in its place
    manager.reload_recipes()
    loop.run_until_complete(until(lambda: "gamma" in dialog.rows, 5))
    expected = dialog.focus_chain()
    assert expected.index(dialog.rows["gamma"].use_global) < expected.index(dialog.host_edit)
    assert tab_order(dialog.global_slider.slider) == expected
