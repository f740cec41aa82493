"""The Settings dialog: sliders persist through the manager, Cancel writes nothing,
errors name the field, and hand edits of recipe files show up while it is open."""

from __future__ import annotations

import tomllib
from pathlib import Path

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from app.core.manager import ModelManager
from app.ui import timeout_scale
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from app.ui.platform import autostart
from tests.ui.helpers import until, watcher_ready

OK = QDialogButtonBox.StandardButton.Ok
APPLY = QDialogButtonBox.StandardButton.Apply
CANCEL = QDialogButtonBox.StandardButton.Cancel


def open_dialog(manager, qtbot) -> SettingsDialog:
    dialog = SettingsDialog(ManagerBridge(manager))
    # Not qtbot.addWidget: the dialog deletes itself on close, and qtbot would close it again.
    qtbot.dialogs.append(dialog)
    dialog.show()
    return dialog



def click(dialog: SettingsDialog, which) -> None:
    dialog.buttons.button(which).click()


def finish_saving(loop, dialog: SettingsDialog) -> None:
    loop.run_until_complete(until(lambda: not dialog.saving, 10, "the dialog to finish saving"))


def is_closed(dialog: SettingsDialog) -> bool:
    return not shiboken6.isValid(dialog) or not dialog.isVisible()


def files(paths) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(paths.config_dir.rglob("*")) if p.is_file()}


def test_slider_and_apply_persist_to_the_recipe_keeping_comments(loop, start_manager, write_recipe, qtbot) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("qwen", fake=[])
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    row = dialog.rows["tiny"]
    assert row.slider.value() == 300.0 and row.slider.label.text() == "5 min"
    assert not row.use_global.isChecked()
    assert dialog.rows["qwen"].use_global.isChecked()
    assert not dialog.rows["qwen"].slider.isEnabled()
    assert not dialog.buttons.button(APPLY).isEnabled()

    row.slider.slider.setValue(timeout_scale.nearest_index(3600.0))  # as a drag or key press would
    assert row.slider.label.text() == "1 h"
    assert dialog.buttons.button(APPLY).isEnabled()
    assert 'unload_timeout = "5m"' in recipe.read_text()  # nothing written before Apply

    click(dialog, APPLY)
    finish_saving(loop, dialog)
    content = recipe.read_text()
    assert content.startswith("# recipe tiny written by a test\n")
    assert 'unload_timeout = "1h"' in content
    assert manager.get("tiny").recipe_timeout == 3600.0
    assert dialog.isVisible()
    assert not dialog.buttons.button(APPLY).isEnabled()
    assert dialog.error_label.isHidden()


def test_cancel_changes_nothing_on_disk(loop, start_manager, write_recipe, qtbot, paths) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("qwen", fake=[])
    manager = start_manager()
    before = files(paths)
    assert not paths.settings_file.exists()
    dialog = open_dialog(manager, qtbot)
    dialog.rows["tiny"].slider.slider.setValue(0)
    dialog.rows["qwen"].use_global.setChecked(False)
    dialog.global_edit.setText("2h")
    dialog.global_edit.textEdited.emit("2h")
    dialog.max_spin.setValue(7)
    dialog.notify_idle_check.setChecked(True)
    dialog.autostart_check.setChecked(True)
    assert dialog.dirty
    click(dialog, CANCEL)
    assert is_closed(dialog)
    assert files(paths) == before
    assert not paths.settings_file.exists()
    assert not autostart.entry_path().exists()
    assert manager.settings.global_unload_timeout == 300.0
    assert manager.settings.max_loaded_models == 3


def test_escape_cancels_too(loop, start_manager, write_recipe, qtbot, paths) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    before = files(paths)
    dialog = open_dialog(manager, qtbot)
    dialog.rows["tiny"].slider.slider.setValue(1)
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert is_closed(dialog)
    assert files(paths) == before


def test_an_invalid_value_names_its_field_and_saves_nothing(loop, start_manager, write_recipe, qtbot, paths) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    before = files(paths)
    dialog = open_dialog(manager, qtbot)
    dialog.rows["tiny"].slider.slider.setValue(1)
    qtbot.keyClicks(dialog.global_edit, "x")  # "5mx"
    assert "border" in dialog.global_edit.styleSheet()
    click(dialog, OK)
    assert dialog.isVisible()
    assert dialog.error_label.isVisible()
    assert dialog.error_label.text().startswith("Global timeout: invalid duration '5mx'")
    dialog.host_edit.setText("  ")
    dialog.host_edit.textEdited.emit("  ")
    dialog.global_edit.setText("5m")
    dialog.global_edit.textEdited.emit("5m")
    click(dialog, APPLY)
    assert dialog.error_label.text() == "Host: must not be empty (got '')"
    assert files(paths) == before


def test_typed_global_timeout_and_server_settings_are_saved_with_ok(loop, start_manager, write_recipe, qtbot,
                                                                   paths) -> None:
    write_recipe("qwen", fake=[])
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    dialog.global_edit.setText("")
    qtbot.keyClicks(dialog.global_edit, "7m")
    assert dialog.global_slider.label.text() == "7 min"
    assert dialog.global_slider.slider.value() == timeout_scale.nearest_index(300.0)
    assert dialog.rows["qwen"].slider.value() == 420.0  # rows on the global follow it
    dialog.max_spin.setValue(1)
    dialog.port_spin.setValue(9123)
    dialog.notify_idle_check.setChecked(True)
    dialog.notify_crash_check.setChecked(False)
    click(dialog, OK)
    finish_saving(loop, dialog)
    assert is_closed(dialog)
    saved = tomllib.loads(paths.settings_file.read_text())
    assert saved == {"global_unload_timeout": "7m", "port": 9123, "max_loaded_models": 1,
                     "notify_idle_unload": True, "notify_crash": False}
    assert manager.settings.global_unload_timeout == 420.0
    assert manager.settings.max_loaded_models == 1


def test_use_global_greys_the_slider_and_removes_the_recipe_key(loop, start_manager, write_recipe, qtbot) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="15m")
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    row = dialog.rows["tiny"]
    assert row.slider.isEnabled()
    row.use_global.setChecked(True)
    assert not row.slider.isEnabled()
    assert row.slider.value() == 300.0  # shows the global value
    row.use_global.setChecked(False)
    assert row.slider.isEnabled() and row.slider.value() == 900.0  # back to its own
    row.use_global.setChecked(True)
    click(dialog, APPLY)
    finish_saving(loop, dialog)
    assert "unload_timeout" not in recipe.read_text()
    assert recipe.read_text().startswith("# recipe tiny")
    assert manager.snapshots()[0]["timeout_source"] == "global"


def test_hand_edits_show_up_without_clobbering_a_row_being_edited(loop, paths, make_settings, write_recipe,
                                                                  qtbot) -> None:
    tiny = write_recipe("tiny", fake=[], unload_timeout="5m")
    qwen = write_recipe("qwen", fake=[], unload_timeout="5m")

    # One coroutine from start to close: qasync runs pending callbacks once more after
    # each run_until_complete, outside the loop, which the file watcher's thread hand-offs
    # do not survive. (The app itself never leaves its loop.)
    async def body() -> None:
        manager = ModelManager(paths, make_settings(), watch_files=True)
        await manager.start()
        try:
            await watcher_ready(manager)
            dialog = open_dialog(manager, qtbot)
            dialog.rows["qwen"].slider.slider.setValue(timeout_scale.nearest_index(60.0))  # the user edits qwen

            tiny.write_text(tiny.read_text().replace('"5m"', '"2h"'))
            qwen.write_text(qwen.read_text().replace('"5m"', '"8h"'))
            await until(lambda: manager.get("tiny").recipe_timeout == 7200.0, 10, "the manager to see it")
            await until(lambda: dialog.rows["tiny"].slider.value() == 7200.0, 10, "the hand edit to show")
            await until(lambda: manager.get("qwen").recipe_timeout == 28800.0, 10)
            assert dialog.rows["tiny"].slider.label.text() == "2 h"
            assert dialog.rows["qwen"].slider.value() == 60.0  # the user's edit stands

            write_recipe("new", fake=[])
            await until(lambda: "new" in dialog.rows, 10, "a new recipe's row")
            assert dialog.rows["new"].use_global.isChecked()
            Path(tiny).unlink()
            await until(lambda: "tiny" not in dialog.rows, 10, "a deleted recipe's row to go")

            click(dialog, OK)
            await until(lambda: is_closed(dialog), 10, "the dialog to save and close")
            assert 'unload_timeout = "1m"' in qwen.read_text()
        finally:
            await manager.close()

    loop.run_until_complete(body())


def test_countdown_and_state_of_loaded_models(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("idle", fake=[])
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    loop.run_until_complete(manager.load("tiny"))
    loop.run_until_complete(until(lambda: dialog.rows["tiny"].countdown_label.text().startswith("4:5"), 3))
    assert dialog.rows["tiny"].state_label.text() == "idle"
    assert dialog.rows["idle"].state_label.text() == "not loaded"
    assert dialog.rows["idle"].countdown_label.text() == ""
    assert dialog.ticker.active
    dialog.close()
    assert not dialog.ticker.active


def test_fields_pinned_by_a_flag_are_read_only(loop, start_manager, write_recipe, qtbot) -> None:
    manager = start_manager(port=9999, global_unload_timeout="1m")
    dialog = open_dialog(manager, qtbot)
    assert not dialog.port_spin.isEnabled()
    assert dialog.port_spin.toolTip() == "Fixed by --port for this run"
    assert not dialog.global_edit.isEnabled() and not dialog.global_slider.isEnabled()
    assert dialog.max_spin.isEnabled()


def test_start_at_login_writes_the_autostart_entry(loop, start_manager, qtbot) -> None:
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    assert not dialog.autostart_check.isChecked()
    dialog.autostart_check.setChecked(True)
    click(dialog, OK)
    finish_saving(loop, dialog)
    assert autostart.is_enabled()
    assert "Exec=" in autostart.entry_path().read_text()

    dialog = open_dialog(manager, qtbot)
    assert dialog.autostart_check.isChecked()
    dialog.autostart_check.setChecked(False)
    click(dialog, APPLY)
    finish_saving(loop, dialog)
    assert not autostart.entry_path().exists()


def test_a_write_failure_names_the_field(loop, start_manager, write_recipe, qtbot) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    recipe.write_text("this is = = not toml\n")  # broken behind the dialog's back (no watcher here)
    dialog.rows["tiny"].slider.slider.setValue(1)
    click(dialog, OK)
    finish_saving(loop, dialog)
    assert dialog.isVisible()
    assert dialog.error_label.text().startswith("Timeout of tiny: ")
    assert "not valid TOML" in dialog.error_label.text()
    assert recipe.read_text() == "this is = = not toml\n"
