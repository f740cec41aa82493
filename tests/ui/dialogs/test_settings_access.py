"""The Settings dialog through a screen reader's eyes (Qt's QAccessible interface): every
slider, toggle and field says which model or setting it is, and a slider's description
says its value in words (its value as such is only a position, 0 to 12)."""

from __future__ import annotations

from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import QWidget

from app.ui import timeout_scale
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from tests.ui.helpers import until


def name_of(widget: QWidget) -> str:
    return QAccessible.queryAccessibleInterface(widget).text(QAccessible.Text.Name)


def description_of(widget: QWidget) -> str:
    return QAccessible.queryAccessibleInterface(widget).text(QAccessible.Text.Description)


def test_every_control_is_named_for_what_it_sets(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("qwen", fake=[], unload_timeout="15m")
    write_recipe("tiny", fake=[])
    dialog = SettingsDialog(ManagerBridge(start_manager()))
    qtbot.dialogs.append(dialog)
    dialog.show()
    qwen, tiny = dialog.rows["qwen"], dialog.rows["tiny"]

    assert name_of(dialog.global_slider.slider) == "Global idle timeout"
    assert description_of(dialog.global_slider.slider) == "5 minutes"
    assert name_of(dialog.global_edit) == "Global idle timeout, typed"
    assert name_of(qwen.slider.slider) == "Unload qwen when idle for"
    assert description_of(qwen.slider.slider) == "15 minutes"
    assert name_of(qwen.use_global) == "Use the global timeout for qwen"
    assert name_of(tiny.slider.slider) == "Unload tiny when idle for"
    assert description_of(tiny.slider.slider) == "5 minutes, the global timeout"
    named = {dialog.host_edit: "Host", dialog.port_spin: "Port", dialog.max_spin: "Max loaded models",
             dialog.notify_idle_check: "Notify when a model is unloaded for being idle",
             dialog.notify_crash_check: "Notify when a model crashes",
             dialog.notify_pressure_check: "Notify when memory is given back to other programs",
             dialog.autostart_check: "Start Siesta when I log in",
             dialog.budget_edit: "Memory budget", dialog.floor_edit: "Keep free for other programs",
             dialog.engine_box.update_button: "Update llama-server"}
    assert {w: name_of(w) for w in named} == named
    loop.run_until_complete(until(lambda: description_of(dialog.budget_edit).startswith("RAM "), 10,
                                  "the budget's description to say what 90% comes to"))

    names = [name_of(w) for w in dialog.focus_chain()]
    assert all(names), names
    assert len(set(names)) == len(names), names

    # The descriptions follow the values.
    qwen.slider.slider.setValue(timeout_scale.NEVER_INDEX)
    assert description_of(qwen.slider.slider) == "never (kept loaded)"
    dialog.global_slider.slider.setValue(timeout_scale.nearest_index(3600.0))
    assert description_of(dialog.global_slider.slider) == "1 hour"
    assert description_of(tiny.slider.slider) == "1 hour, the global timeout"
    tiny.use_global.setChecked(False)
    assert description_of(tiny.slider.slider) == "1 hour"
    dialog.budget_edit.setText("nonsense")
    dialog.budget_edit.textEdited.emit("nonsense")
    assert "nonsense" in description_of(dialog.budget_edit)  # why it is refused


def test_spoken_timeouts() -> None:
    assert [timeout_scale.spoken_label(v) for v in (None, 0.0, 30.0, 60.0, 5400.0, 28800.0)] == [
        "never (kept loaded)", "at once", "30 seconds", "1 minute", "1 hour 30 minutes", "8 hours"]
