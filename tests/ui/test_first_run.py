"""First run: what the tray menu, the Models window and the Settings dialog say with no
recipes yet, or with no llama-server that can run."""

from __future__ import annotations

from pathlib import Path

import shiboken6
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QPushButton

from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from app.ui.tray.menu import TrayMenu
from app.ui.windows.models import ModelsWindow
from tests.ui.helpers import FAKE_VERSION, FakeShell, fake_llama_server, gguf, plain, until


def visible_menu(tray: TrayMenu) -> list[str]:
    return [plain(a.text()) for a in tray.menu.actions() if not a.isSeparator() and a.isVisible()]


def make(manager, shell: FakeShell, qtbot) -> tuple[ManagerBridge, TrayMenu, ModelsWindow]:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    tray = TrayMenu(bridge, shell)
    window = ModelsWindow(bridge, shell)
    qtbot.addWidget(window)
    return bridge, tray, window


def test_with_no_recipes_menu_and_window_offer_to_find_and_import(loop, start_manager, write_recipe, tmp_path,
                                                                  shell, qtbot) -> None:
    engine = fake_llama_server(tmp_path / "bin/llama-server")
    manager = start_manager(llama_server=str(engine))
    bridge, tray, window = make(manager, shell, qtbot)
    tray.show()
    assert tray.last_message == ("Siesta is running",
                                 'No models yet: click the Siesta icon and choose "Find models on this computer".')
    tray.icon.messageClicked.emit()  # a click on the greeting opens "Find models"
    assert shell.calls == ["discover"]
    shell.calls.clear()
    tray.menu.popup(QPoint(0, 0))
    assert visible_menu(tray) == ["No models yet", "Find models on this computer...", "Download model...",
                                  "Import configuration...", "Models window...", "Settings...", "Open logs folder",
                                  "Copy API URL (http://127.0.0.1:8777/v1)", "Quit"]
    tray.discover_action.trigger()
    tray.import_action.trigger()
    tray.menu.hide()

    window.show()
    assert window.first_run.isVisible() and not window.table.isVisible()
    assert window.empty_label.text().startswith("<b>No models yet.</b>")
    assert not window.engine_banner.isVisible()  # a llama-server that runs is there
    assert not window.find_button.isVisible()  # the first-run panel has the big buttons
    window.findChild(QPushButton, "first-run-find").click()
    window.findChild(QPushButton, "first-run-import").click()
    assert shell.calls == ["discover", "import", "discover", "import"]

    # The first recipe: the menu and the window switch to their usual look.
    write_recipe("tiny", fake=[])
    manager.reload_recipes()
    tray.menu.popup(QPoint(0, 0))
    assert visible_menu(tray)[:6] == ["No models loaded", "Load model", "Unload all", "Find models...",
                                      "Download model...", "Import configuration..."]
    tray.menu.hide()
    assert window.table.isVisible() and not window.first_run.isVisible()
    assert window.find_button.isVisible() and window.import_button.isVisible()
    tray.hide()


def test_a_missing_llama_server_is_said_in_plain_words(loop, start_manager, write_recipe, shell, qtbot,
                                                       paths) -> None:
    manager = start_manager(llama_server="/nonexistent")
    bridge, tray, window = make(manager, shell, qtbot)
    status = bridge.engine_status()
    assert status.path == Path("/nonexistent") and not status.usable and status.configured_by == "--llama-server"
    assert status.problem == ("llama-server not found: Siesta is set to use /nonexistent (by --llama-server), "
                              "but that is not an executable file, so models cannot load.")

    tray.menu.popup(QPoint(0, 0))
    assert visible_menu(tray)[:4] == ["No models yet", "llama-server not found", "Install llama-server...",
                                      "Find models on this computer..."]
    assert tray.engine_action.toolTip() == status.problem
    tray.install_action.trigger()
    tray.menu.hide()
    window.show()
    assert window.engine_banner.isVisible()
    assert window.engine_label.text() == status.problem
    window.findChild(QPushButton, "install-engine").click()
    assert shell.calls == ["install", "install"]

    # Only command recipes: nothing needs llama-server, so nothing is said.
    write_recipe("tiny", fake=[])
    manager.reload_recipes()
    assert not window.engine_banner.isVisible()
    tray.menu.popup(QPoint(0, 0))
    assert "llama-server not found" not in visible_menu(tray)
    tray.menu.hide()
    # A GGUF recipe needs it again.
    write_recipe("qwen", model=str(gguf(paths.data_dir / "qwen.gguf")), backend="llamacpp")
    manager.reload_recipes()
    assert window.engine_banner.isVisible()


def test_none_found_and_not_executable(loop, start_manager, tmp_path, monkeypatch, shell, qtbot) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no llama-server on PATH either
    manager = start_manager(llama_server=None)
    bridge = ManagerBridge(manager)
    status = bridge.engine_status()
    assert status.path is None and not status.usable and status.configured_by is None
    assert status.problem.startswith("llama-server not found. Siesta runs GGUF models with llama.cpp's llama-server")

    not_executable = tmp_path / "llama-server"
    not_executable.write_text("#!/bin/sh\n")
    manager = start_manager(llama_server=str(not_executable))
    status = ManagerBridge(manager).engine_status()
    assert status.path == not_executable and not status.usable
    assert "is set to use" in status.problem and "not an executable file" in status.problem

    # One installed where Siesta looks (its data dir) is found and usable.
    fake_llama_server(manager.paths.data_dir / "engine/llama-server")
    manager = start_manager(llama_server=None)
    status = ManagerBridge(manager).engine_status()
    assert status.usable and status.path == manager.paths.data_dir / "engine/llama-server"
    assert status.problem is None


def test_settings_show_the_llama_server_and_its_version(loop, start_manager, tmp_path, shell, qtbot) -> None:
    calls = tmp_path / "version-calls"
    engine = fake_llama_server(tmp_path / "bin/llama-server", count_file=calls)
    manager = start_manager(llama_server=str(engine))
    bridge = ManagerBridge(manager)
    dialog = SettingsDialog(bridge, shell=shell)
    dialog.show()
    assert dialog.engine_path_label.text() == f"{engine} (set by --llama-server)"
    loop.run_until_complete(until(lambda: dialog.engine_version_label.text() == FAKE_VERSION, 5, "the version"))
    assert not dialog.install_engine_button.isVisible()
    dialog.close()

    again = SettingsDialog(bridge, shell=shell)  # the version is cached: --version ran once
    again.show()
    loop.run_until_complete(until(lambda: again.engine_version_label.text() == FAKE_VERSION, 5))
    assert calls.read_text().count("x") == 1
    again.close()

    missing = SettingsDialog(ManagerBridge(start_manager(llama_server="/nonexistent")), shell=shell)
    missing.show()
    assert missing.engine_path_label.text() == "/nonexistent (set by --llama-server): not found"
    assert missing.install_engine_button.isVisible()
    missing.install_engine_button.click()
    assert shell.calls == ["install"]
    missing.close()
    assert not shiboken6.isValid(missing) or not missing.isVisible()
