"""The Settings dialog's model list shows every row whole: it is measured again once the
dialog is shown (styled), and whenever a row's name gains or loses its "needs ~6.0 GB" line."""

from __future__ import annotations

import asyncio

from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from app.ui.dialogs.timeout_rows import MAX_MODELS_AREA
from tests.ui.helpers import until, watcher_ready


def settle(loop) -> None:
    """Lets Qt lay the dialog out, on the running qasync loop (not qtbot's nested loop)."""
    loop.run_until_complete(asyncio.sleep(0.2))


def models_area_fits(dialog: SettingsDialog) -> bool:
    """Every row is whole: the scroll area's viewport is as tall as the rows want, or (past the
    area's limit) the rows scroll."""
    wanted = dialog.models_box.sizeHint().height()
    viewport = dialog.models_scroll.viewport().height()
    if wanted + 2 > MAX_MODELS_AREA:
        return dialog.models_scroll.verticalScrollBar().isVisible()
    return viewport >= wanted


def test_every_model_row_is_whole_once_shown(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("big", fake=[], memory_estimate="6GB")
    write_recipe("coder", fake=[])
    write_recipe("tiny", fake=[])
    manager = start_manager()
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    dialog.show()
    settle(loop)
    assert dialog.rows["big"].name_label.text() == "big<br><small>needs ~6.0 GB</small>"
    assert models_area_fits(dialog)
    assert not dialog.models_scroll.verticalScrollBar().isVisible()
    last = dialog.rows["tiny"].name_label
    bottom = last.mapTo(dialog.models_scroll.viewport(), last.rect().bottomLeft()).y()
    assert bottom < dialog.models_scroll.viewport().height()  # the last row is inside the visible area


def test_measured_again_when_shown(loop, start_manager, write_recipe, qtbot) -> None:
    """What changes the rows' height between building the dialog and showing it (here a
    bigger font, which reaches the rows when they are shown, as a desktop's style does) is
    measured too."""
    write_recipe("big", fake=[], memory_estimate="6GB")
    write_recipe("coder", fake=[])
    write_recipe("tiny", fake=[])
    manager = start_manager()
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    font = dialog.font()
    font.setPointSizeF(font.pointSizeF() * 1.5)
    dialog.setFont(font)
    dialog.show()
    settle(loop)
    assert models_area_fits(dialog)
    assert not dialog.models_scroll.verticalScrollBar().isVisible()


def test_a_second_line_under_a_name_grows_the_area(loop, start_manager, write_recipe, qtbot) -> None:
    """Recipes given a memory_estimate while the dialog is open: each name gains its "needs"
    line (TimeoutRow.sync), and the area grows to keep every row whole."""
    for name in ("alpha", "beta", "gamma"):
        write_recipe(name, fake=[])
    manager = start_manager(watch_files=True)
    loop.run_until_complete(watcher_ready(manager))
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    dialog.show()
    settle(loop)
    assert models_area_fits(dialog)
    before = dialog.models_scroll.viewport().height()
    for name in ("alpha", "beta", "gamma"):
        write_recipe(name, fake=[], memory_estimate="6GB")
    loop.run_until_complete(until(
        lambda: all("needs ~6.0 GB" in row.name_label.text() for row in dialog.rows.values()), 10,
        "the estimates under the names"))
    settle(loop)
    assert models_area_fits(dialog)
    assert dialog.models_scroll.viewport().height() > before
