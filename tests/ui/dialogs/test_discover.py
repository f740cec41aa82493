"""The "Find models" dialog against a fake home: scanning off the GUI thread, ticking,
greyed-out models that have a recipe, adding a folder, creating recipes; the keyboard
(Space ticks), what a screen reader is told, and a dark theme."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.core.config.recipes import read_recipe
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.discover import COL_NAME, COL_SIZE, COL_WHERE, DiscoverDialog
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
from tests.ui.helpers import gguf, until

QWEN = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"


@pytest.fixture
def fake_home(tmp_path: Path) -> Path:
    """Three new models in three usual places, and one that a recipe already serves."""
    home = tmp_path / "fakehome"
    hub = home / ".cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B-Instruct-GGUF/snapshots/abc123"
    gguf(hub / "qwen2.5-0.5b-instruct-q4_k_m.gguf", 3 * 1024 * 1024)
    gguf(home / ".lmstudio/models/lmstudio-community/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
         2048)
    gguf(home / ".cache/llama.cpp/phi-2.Q4_0.gguf", 4096)
    gguf(home / ".cache/llama.cpp/served.gguf", 100)
    (home / ".cache/llama.cpp/notes.gguf").write_bytes(b"<html>not a model</html>")  # no GGUF magic
    return home


def open_dialog(bridge: ManagerBridge, home: Path, qtbot) -> DiscoverDialog:
    dialog = DiscoverDialog(bridge, home=home, env={})
    qtbot.dialogs.append(dialog)
    dialog.show()
    return dialog



def rows(dialog: DiscoverDialog) -> list[tuple[str, str, str, bool, bool]]:
    """(name, size, where, enabled, ticked) of every row."""
    out = []
    for i in range(dialog.tree.topLevelItemCount()):
        item = dialog.tree.topLevelItem(i)
        out.append((item.text(COL_NAME), item.text(COL_SIZE), item.text(COL_WHERE),
                    bool(item.flags() & Qt.ItemFlag.ItemIsEnabled),
                    item.checkState(COL_NAME) == Qt.CheckState.Checked))
    return out


def test_lists_found_models_and_creates_recipes_for_the_ticked_ones(loop, start_manager, write_recipe, fake_home,
                                                                    paths, qtbot) -> None:
    served = fake_home / ".cache/llama.cpp/served.gguf"
    write_recipe("mine", backend="llamacpp", model=str(served))
    manager = start_manager()
    bridge = ManagerBridge(manager)
    dialog = open_dialog(bridge, fake_home, qtbot)
    assert dialog.scanning and dialog.busy_bar.isVisible()  # the scan runs off the GUI thread
    assert dialog.summary_label.text().startswith("Looking for GGUF models in the usual places")
    assert not dialog.create_button.isEnabled()
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the scan"))
    assert not dialog.busy_bar.isVisible()
    assert rows(dialog) == [
        ("qwen2.5-0.5b-instruct-q4_k_m", "3.0 MB", f"Hugging Face: {QWEN}", True, True),
        ("llama-3.2-1b-instruct-q4_k_m", "2.0 KB", "LM Studio: lmstudio-community/Llama-3.2-1B-Instruct-GGUF",
         True, True),
        ("phi-2.q4_0", "4.0 KB", "llama.cpp cache: ~/.cache/llama.cpp", True, True),
        ("served — already has recipe mine", "100 B", "llama.cpp cache: ~/.cache/llama.cpp", False, False),
    ]
    assert dialog.summary_label.text() == ("Found 4 models in the usual places; 1 already has a recipe. "
                                           "Tick the ones to add.")
    first = dialog.tree.topLevelItem(0)
    assert first.toolTip(COL_WHERE).startswith(str(fake_home / ".cache/huggingface/hub"))

    dialog.set_ticked("llama-3.2-1b-instruct-q4_k_m", False)  # two of the three new ones
    assert [m.name for m in dialog.ticked()] == ["qwen2.5-0.5b-instruct-q4_k_m", "phi-2.q4_0"]
    assert dialog.create_button.isEnabled()
    dialog.create_button.click()
    loop.run_until_complete(until(lambda: not dialog.creating, 10, "the recipes"))

    qwen = read_recipe(paths.recipe_file("qwen2.5-0.5b-instruct-q4_k_m"))
    phi = read_recipe(paths.recipe_file("phi-2.q4_0"))
    assert qwen.backend == phi.backend == "llamacpp"
    assert os.path.realpath(qwen.model) == os.path.realpath(next(fake_home.rglob("qwen2.5-*.gguf")))
    assert phi.model == fake_home / ".cache/llama.cpp/phi-2.Q4_0.gguf"
    assert not paths.recipe_file("llama-3.2-1b-instruct-q4_k_m").exists()
    assert sorted(p.name for p in paths.recipes_dir.iterdir()) == ["mine.toml", "phi-2.q4_0.toml",
                                                                  "qwen2.5-0.5b-instruct-q4_k_m.toml"]
    # listed by the manager at once, and shown as served now
    assert {"qwen2.5-0.5b-instruct-q4_k_m", "phi-2.q4_0"} <= set(bridge.models)
    assert dialog.result_label.isVisible()
    assert dialog.result_label.text().startswith("Created 2 recipes: qwen2.5-0.5b-instruct-q4_k_m, phi-2.q4_0.")
    names = [r[0] for r in rows(dialog)]
    assert names[0] == "qwen2.5-0.5b-instruct-q4_k_m — already has recipe qwen2.5-0.5b-instruct-q4_k_m"
    assert rows(dialog)[1][3:] == (True, False)  # the unticked one stays offered, unticked
    assert dialog.close_button.text() == "&Close"
    dialog.close_button.click()
    assert not shiboken6.isValid(dialog) or not dialog.isVisible()


def test_add_folder_scans_it_too_and_keeps_the_ticks(loop, start_manager, fake_home, tmp_path, monkeypatch,
                                                     qtbot) -> None:
    folder = tmp_path / "my models"
    gguf(folder / "mistral/mistral-7b-instruct.Q5_K_M.gguf", 5000)
    asked: list[Path] = []

    def choose_folder(parent, title, start, on_chosen):  # the user picks the folder at once
        asked.append(start)
        on_chosen(folder)

    monkeypatch.setattr(desktop, "choose_folder", choose_folder)
    dialog = open_dialog(ManagerBridge(start_manager()), fake_home, qtbot)
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the scan"))
    dialog.set_ticked("phi-2.q4_0", False)
    dialog.add_folder_button.click()
    assert asked == [fake_home]
    assert dialog.scanning and not dialog.add_folder_button.isEnabled()
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the second scan"))
    found = {r[0]: r for r in rows(dialog)}
    assert found["mistral-7b-instruct.q5_k_m"][2] == f"Folder: {folder / 'mistral'}"
    assert found["mistral-7b-instruct.q5_k_m"][4] is True
    assert found["phi-2.q4_0"][4] is False  # the user's untick survives the new scan
    assert dialog.summary_label.text().startswith("Found 5 models in the usual places and 1 chosen folder.")


def test_nothing_found_says_where_it_looked(loop, start_manager, tmp_path, qtbot) -> None:
    dialog = open_dialog(ManagerBridge(start_manager()), tmp_path / "empty-home", qtbot)
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the scan"))
    assert dialog.tree.topLevelItemCount() == 0
    assert dialog.summary_label.text().startswith("No GGUF models found in the usual places.")
    assert not dialog.create_button.isEnabled() and dialog.add_folder_button.isEnabled()


# ----------------------------------------------------------------------------- keyboard, screen readers, dark theme


def ticks(dialog: DiscoverDialog) -> list[bool]:
    return [r[4] for r in rows(dialog)]


def test_keyboard_ticks_models_with_space_and_tab_follows_the_buttons(loop, start_manager, write_recipe, fake_home,
                                                                      paths, qtbot) -> None:
    write_recipe("mine", backend="llamacpp", model=str(fake_home / ".cache/llama.cpp/served.gguf"))
    dialog = DiscoverDialog(ManagerBridge(start_manager()), home=fake_home, env={})
    qtbot.dialogs.append(dialog)
    activate(loop, dialog)
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the scan"))
    tree = dialog.tree
    assert tab_walk(dialog.add_folder_button, 1, back=True)[-1] is tree  # Shift+Tab from "Add folder..."
    assert tree.currentItem() is tree.topLevelItem(0)
    assert ticks(dialog) == [True, True, True, False]
    QTest.keyClick(tree, Qt.Key.Key_Space)
    assert ticks(dialog) == [False, True, True, False]
    QTest.keyClick(tree, Qt.Key.Key_Down)
    QTest.keyClick(tree, Qt.Key.Key_Space)
    assert ticks(dialog) == [False, False, True, False]
    QTest.keyClick(tree, Qt.Key.Key_Down)
    QTest.keyClick(tree, Qt.Key.Key_Down)  # the last row has a recipe already: the cursor stays
    assert tree.currentItem() is tree.topLevelItem(2)
    QTest.keyClick(tree, Qt.Key.Key_Space)
    QTest.keyClick(tree, Qt.Key.Key_Space)  # unticked and ticked again
    assert ticks(dialog) == [False, False, True, False]
    QTest.keyClick(tree, Qt.Key.Key_Up)
    tree.setCurrentItem(tree.topLevelItem(1), COL_WHERE)  # a click on its "Where": Space still ticks the row
    QTest.keyClick(tree, Qt.Key.Key_Space)
    assert ticks(dialog) == [False, True, True, False]

    order = [tree, dialog.add_folder_button, dialog.create_button, dialog.close_button]
    assert names(tab_walk(tree, 4)) == names(order + [tree])
    assert names(tab_walk(dialog.close_button, 3, back=True)) == names(order[::-1])
    assert_mnemonics(dialog, fields=[tree], buttons=[dialog.add_folder_button, dialog.create_button,
                                                     dialog.close_button])
    press_alt(dialog, "M")  # "&Models:" reaches the list
    assert QApplication.focusWidget() is tree

    press_alt(dialog, "R")  # Create recipes (Qt clicks it a moment later)
    loop.run_until_complete(until(lambda: dialog.created, 10, "the recipes"))
    assert sorted(p.name for p in paths.recipes_dir.iterdir()) == ["llama-3.2-1b-instruct-q4_k_m.toml",
                                                                  "mine.toml", "phi-2.q4_0.toml"]


def test_screen_readers_are_told_what_the_list_and_the_bar_are(loop, start_manager, fake_home, qtbot,
                                                               announcements) -> None:
    dialog = open_dialog(ManagerBridge(start_manager()), fake_home, qtbot)
    assert accessible(dialog.busy_bar) == "Looking for models"
    assert accessible(dialog.summary_label).startswith("Looking for GGUF models in the usual places")
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the scan"))
    assert accessible(dialog.tree) == "Models found on this computer"
    assert "Space ticks or unticks" in accessible(dialog.tree, QAccessible.Text.Description)
    assert accessible(dialog.summary_label) == dialog.summary_label.text()  # the new text, as it changed
    assert announcements == [dialog.summary_label.text()]
    interface = QAccessible.queryAccessibleInterface(dialog.tree)
    cells = {interface.child(i).text(QAccessible.Text.Name): interface.child(i)
             for i in range(interface.childCount())}
    phi = cells["phi-2.q4_0"]
    assert phi.state().checkable and phi.state().checked
    assert phi.text(QAccessible.Text.Description) == "4.0 KB, llama.cpp cache: ~/.cache/llama.cpp"
    dialog.set_ticked("phi-2.q4_0", False)
    assert not phi.state().checked


def test_an_error_is_readable_on_a_dark_theme(loop, start_manager, fake_home, qtbot, dark_theme,
                                              announcements) -> None:
    bridge = ManagerBridge(start_manager())

    async def disk_full(_models):
        raise OSError(28, "No space left on device")

    bridge.create_recipes = disk_full  # type: ignore[method-assign]
    dialog = open_dialog(bridge, fake_home, qtbot)
    loop.run_until_complete(until(lambda: not dialog.scanning, 10, "the scan"))
    dialog.create_button.click()
    loop.run_until_complete(until(lambda: not dialog.creating, 10, "the failure"))
    assert dialog.result_label.text().startswith("Could not create the recipes: ")
    assert text_contrast(dialog.result_label) >= 4.5
    assert announcements[-1].startswith("Could not create the recipes: ")
