"""The Settings dialog over many recipes: only the rows in view (and a margin) are built,
Tab still walks every row in order (building each as focus reaches it), and Save writes
every row the user changed, built or let go since, and no other."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QSlider, QWidget

from app.ui import timeout_scale
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from tests.ui.helpers import until


def open_active(loop, manager, qtbot) -> SettingsDialog:
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    dialog.show()
    dialog.activateWindow()
    bar = dialog.models_scroll.verticalScrollBar()
    loop.run_until_complete(until(lambda: dialog.isActiveWindow() and bar.maximum(), 5,
                                  "the dialog to be shown, active and laid out"))
    return dialog


def rows_built(dialog: SettingsDialog) -> int:
    """Model rows with widgets now (a row let go is deleted once back in the event loop)."""
    return sum(1 for row in dialog.rows.values() if row.slider is not None)


def rows_in_view(dialog: SettingsDialog) -> int:
    first, second = (dialog.rows[n].slider for n in list(dialog.rows)[:2])
    pitch = second.mapTo(dialog, QPoint(0, 0)).y() - first.mapTo(dialog, QPoint(0, 0)).y()
    return dialog.models_scroll.viewport().height() // pitch + 1


def test_only_the_rows_in_view_are_built(loop, start_manager, write_recipe, qtbot) -> None:
    for i in range(400):
        write_recipe(f"m{i:03d}", fake=[], **({"unload_timeout": "5m"} if i % 3 == 0 else {}))
    dialog = open_active(loop, start_manager(), qtbot)
    in_view = rows_in_view(dialog)
    assert in_view <= rows_built(dialog) <= in_view + 12
    assert len(dialog.findChildren(QSlider)) == rows_built(dialog) + 1  # and the global one

    bar = dialog.models_scroll.verticalScrollBar()
    bar.setValue(bar.maximum())
    assert dialog.rows["m399"].slider is not None and dialog.rows["m399"].slider.isVisible()
    assert dialog.rows["m000"].slider is None  # let go, far out of view
    assert rows_built(dialog) <= 2 * (in_view + 12)
    bar.setValue(0)
    assert dialog.rows["m000"].slider.value() == 300.0 and not dialog.rows["m000"].use_global.isChecked()


def row_at(widget: QWidget | None) -> tuple[str, str] | None:
    """``(model, "slider" or "toggle")`` for a row's widget, by its object name."""
    for name, part in ((widget.objectName(), "toggle"), (widget.parent().objectName(), "slider")):
        if name.startswith(("global-", "slider-")) and name not in ("global-edit", "global-slider"):
            return name.split("-", 1)[1], part
    return None


def test_tab_walks_every_row_in_order_building_them(loop, start_manager, write_recipe, qtbot) -> None:
    names = [f"m{i:03d}" for i in range(120)]
    for i, name in enumerate(names):
        if 60 <= i < 75:  # a run of broken recipes, longer than the rows built ahead: Tab skips them
            write_recipe(name, "this is = = not toml\n")
        else:
            write_recipe(name, fake=[], **({"unload_timeout": "5m"} if i % 2 else {}))
    dialog = open_active(loop, start_manager(), qtbot)
    expected = [(n, part) for i, n in enumerate(names) if not 60 <= i < 75
                for part in (("slider", "toggle") if i % 2 else ("toggle",))]

    dialog.global_edit.setFocus(Qt.FocusReason.TabFocusReason)
    walked, most_built = [], 0
    for _ in range(len(expected) + 1):
        QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        most_built = max(most_built, rows_built(dialog))
        if QApplication.focusWidget() is dialog.host_edit:
            break
        walked.append(row_at(QApplication.focusWidget()))
    assert walked == expected
    assert most_built <= 60  # rows behind were let go as focus went down

    QTest.keyClick(dialog.host_edit, Qt.Key.Key_Tab, Qt.KeyboardModifier.ShiftModifier)
    assert row_at(QApplication.focusWidget()) == ("m119", "toggle")
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_M, Qt.KeyboardModifier.AltModifier)
    assert row_at(QApplication.focusWidget()) == ("m000", "toggle")  # m000 is on the global timeout


def test_save_writes_the_changed_rows_only_built_or_not(loop, start_manager, write_recipe, qtbot, paths) -> None:
    for i in range(300):
        write_recipe(f"m{i:03d}", fake=[], **({"unload_timeout": "5m"} if i % 3 == 0 else {}))
    manager = start_manager()
    before = {p.name: p.read_bytes() for p in paths.recipes_dir.glob("*.toml")}
    dialog = open_active(loop, manager, qtbot)

    bar = dialog.models_scroll.verticalScrollBar()
    bar.setValue(bar.maximum())
    last = dialog.rows["m299"]
    last.use_global.setChecked(False)
    last.slider.slider.setValue(timeout_scale.nearest_index(3600.0))
    bar.setValue(0)
    assert dialog.rows["m299"].slider is None  # let go; the choice stays with the row
    dialog.rows["m001"].use_global.setChecked(False)
    dialog.rows["m001"].slider.slider.setValue(timeout_scale.nearest_index(60.0))

    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    loop.run_until_complete(until(lambda: not dialog.saving, 10, "the dialog to save"))
    after = {p.name: p.read_bytes() for p in paths.recipes_dir.glob("*.toml")}
    assert sorted(n for n in after if after[n] != before[n]) == ["m001.toml", "m299.toml"]
    assert after["m299.toml"].decode().startswith("# recipe m299 written by a test\n")
    assert 'unload_timeout = "1h"' in after["m299.toml"].decode()
    assert 'unload_timeout = "1m"' in after["m001.toml"].decode()
    assert manager.get("m299").recipe_timeout == 3600.0
