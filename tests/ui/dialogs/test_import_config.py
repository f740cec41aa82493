""""Import configuration...": a file picker pre-pointed at a configuration found in its
usual place, then the import, its recipes and what could not be mapped; the keyboard,
what screen readers are told, a dark theme."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtWidgets import QPushButton

from app.core.config.recipes import read_recipe
from app.ui.app import SiestaApp
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.import_config import ImportDialog
from app.ui.platform import desktop
from tests.ui.access import (  # noqa: F401 - fixtures
    accessible,
    activate,
    announcements,
    assert_mnemonics,
    dark_theme,
    names,
    press_alt,
    tab_walk,
    text_contrast,
)
from tests.ui.helpers import until

LLAMA_SWAP = f"""\
models:
  small:
    cmd: {sys.executable} -m http.server ${{PORT}}
    ttl: 120
  remote:
    cmd: some-server --port 9000
    proxy: http://10.1.2.3:9000
"""


@pytest.fixture
def siesta(loop, start_manager, paths, make_settings) -> SiestaApp:
    """The app's own glue (show_import and its dialogs) over a started manager."""
    app = SiestaApp(paths, make_settings(), tray_available=lambda: False)
    app.bridge = ManagerBridge(start_manager())
    yield app
    for dialog in (app.import_dialog,):
        if dialog is not None and shiboken6.isValid(dialog):
            dialog.close()


def test_import_a_llama_swap_config_from_its_usual_place(loop, siesta, isolated_home, paths, monkeypatch) -> None:
    config = isolated_home / ".config/llama-swap/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(LLAMA_SWAP, encoding="utf-8")
    picked: list[tuple[Path, list[Path]]] = []

    def choose_file(parent, title, start, filters, on_chosen, *, places=()):
        picked.append((start, list(places)))
        on_chosen(start)  # the user opens the file the picker starts at

    monkeypatch.setattr(desktop, "choose_file", choose_file)
    siesta.show_import()
    assert picked == [(config, [config.parent])]
    dialog = siesta.import_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.headline.text().startswith("Importing ")
    loop.run_until_complete(until(lambda: not dialog.importing, 10, "the import"))

    assert dialog.headline.text() == ("<b>Imported from llama-swap: 1 recipe created, 1 model left out.</b>"
                                      f"<br>from {config}")
    recipe = read_recipe(paths.recipe_file("small"))
    assert recipe.backend == "command" and recipe.command[-1] == "{port}"
    assert recipe.unload_timeout == 120.0
    details = dialog.details.toPlainText()
    assert f"small — {paths.recipe_file('small')}" in details
    assert "Left out (could not be mapped):\nremote: not imported: " in details
    assert "10.1.2.3" in details
    assert "small" in siesta.bridge.models  # listed at once

    # The same file again: nothing is overwritten, and the dialog says so.
    siesta.show_import()
    again = siesta.import_dialog
    assert again is not dialog
    loop.run_until_complete(until(lambda: not again.importing, 10, "the second import"))
    assert again.headline.text().startswith("<b>Imported from llama-swap: no recipe created, 2 models left out.</b>")
    assert "small: not imported: recipes/small.toml already exists (left unchanged)" in again.details.toPlainText()


def test_a_file_that_is_no_configuration_is_reported(loop, siesta, tmp_path, monkeypatch) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just: words\n")
    picked: list[Path] = []

    def choose_file(parent, title, start, filters, on_chosen, *, places=()):
        picked.append(start)
        on_chosen(notes)

    monkeypatch.setattr(desktop, "choose_file", choose_file)
    siesta.show_import()
    assert picked == [Path.home()]  # no configuration in its usual place: start at home
    dialog = siesta.import_dialog
    loop.run_until_complete(until(lambda: not dialog.importing, 10, "the import"))
    assert dialog.error is not None and "not a llama-swap config.yaml or a Lemonade" in dialog.error
    assert dialog.headline.text().startswith(f"Could not import {notes}:")
    assert not dialog.details.isVisible()


def test_the_file_picker_stays_open_without_a_parent_and_hands_back_the_file(loop, tmp_path, qtbot) -> None:
    """A parentless QFileDialog lives only as long as Python holds it: the picker must
    keep itself alive until the user answers (it once vanished as soon as it opened)."""
    import gc

    from PySide6.QtWidgets import QApplication, QFileDialog

    config = tmp_path / "llama-swap/config.yaml"
    config.parent.mkdir()
    config.write_text(LLAMA_SWAP)
    chosen: list[Path] = []
    desktop.choose_file(None, "Import", config, ["YAML (*.yaml)"], chosen.append, places=[config.parent])
    gc.collect()
    pickers = [w for w in QApplication.topLevelWidgets() if isinstance(w, QFileDialog) and w.isVisible()]
    assert len(pickers) == 1
    picker = pickers[0]
    assert picker.selectedFiles() == [str(config)]
    assert picker.directory().absolutePath() == str(config.parent)
    assert any(url.toLocalFile().rstrip("/") == str(config.parent) for url in picker.sidebarUrls())
    picker.accept()
    assert chosen == [config]
    assert not desktop._open_pickers


def import_dialog(loop, start_manager, path: Path, home: Path, qtbot) -> ImportDialog:
    dialog = ImportDialog(ManagerBridge(start_manager()), path, home=home, env={})
    qtbot.dialogs.append(dialog)
    dialog.show()
    return dialog


def test_import_dialog_keyboard(loop, start_manager, isolated_home, tmp_path, qtbot) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(LLAMA_SWAP, encoding="utf-8")
    dialog = import_dialog(loop, start_manager, config, isolated_home, qtbot)
    activate(loop, dialog)
    loop.run_until_complete(until(lambda: not dialog.importing, 10, "the import"))
    close = next(b for b in dialog.findChildren(QPushButton) if b.text().replace("&", "") == "Close")
    assert_mnemonics(dialog, fields=[dialog.details], buttons=[close])
    assert names(tab_walk(dialog.details, 2)) == names([dialog.details, close, dialog.details])
    finished: list[int] = []
    dialog.finished.connect(finished.append)
    press_alt(dialog, "C")  # Close (Qt clicks it a moment later)
    loop.run_until_complete(until(lambda: finished, 5, "the dialog to close"))


def test_import_dialog_tells_screen_readers_the_outcome(loop, start_manager, isolated_home, tmp_path, qtbot,
                                                        announcements) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(LLAMA_SWAP, encoding="utf-8")
    dialog = import_dialog(loop, start_manager, config, isolated_home, qtbot)
    assert accessible(dialog.busy_bar) == "Importing config.yaml"
    loop.run_until_complete(until(lambda: not dialog.importing, 10, "the import"))
    assert accessible(dialog.details) == "What the import of config.yaml did"
    headline = "Imported from llama-swap: 1 recipe created, 1 model left out."
    assert accessible(dialog.headline) == f"{headline}\nfrom {config}"
    assert announcements == [headline]


def test_import_error_is_readable_on_a_dark_theme(loop, start_manager, isolated_home, tmp_path, qtbot,
                                                  dark_theme, announcements) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just: words\n")
    dialog = import_dialog(loop, start_manager, notes, isolated_home, qtbot)
    loop.run_until_complete(until(lambda: not dialog.importing, 10, "the import"))
    assert dialog.headline.text().startswith(f"Could not import {notes}:")
    assert text_contrast(dialog.headline) >= 4.5
    assert announcements[-1].startswith(f"Could not import {notes}:")
