""""Install llama-server..." with a fake builder: GPU choice, progress, success, failure,
and Cancel or Quit stopping the build with everything it started; the keyboard, what
screen readers are told, a dark theme."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
import shiboken6
from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import QApplication

from app.core.models.backend import free_port
from app.ui.app import SiestaApp
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.engine import InstallEngineDialog
from app.ui.windows.models import ModelsWindow
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
from tests.ui.helpers import FAKE_VERSION, FakeShell, pid_alive, until

FAKE_BUILDER = Path(__file__).resolve().parents[2] / "fakes" / "engine_build.py"


def builder(mode: list[str]):
    """The dialog's ``command``: the fake builder, in the mode ``mode[0]`` says at start."""
    return lambda dest, gpu: [sys.executable, str(FAKE_BUILDER), "--dest", str(dest), "--gpu", gpu,
                              "--mode", mode[0]]


@pytest.fixture(autouse=True)
def _no_llama_server_anywhere(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty-bin'}:/usr/bin:/bin")
    monkeypatch.setattr(ManagerBridge, "build_tools_missing", staticmethod(lambda: []))


@pytest.fixture
def dialogs(qtbot):
    made: list[InstallEngineDialog] = []
    yield made
    for dialog in made:
        if shiboken6.isValid(dialog):
            dialog.close()


def child_pid(dialog: InstallEngineDialog) -> int | None:
    match = re.fullmatch(r"child (\d+)", dialog.status_label.text())
    return int(match[1]) if match else None


def test_builds_with_progress_and_then_models_can_use_it(loop, start_manager, dialogs, qtbot) -> None:
    manager = start_manager(llama_server=None)
    bridge = ManagerBridge(manager)
    window = ModelsWindow(bridge, FakeShell())
    qtbot.addWidget(window)
    window.show()
    assert window.engine_banner.isVisible()
    mode = ["fail"]
    dialog = InstallEngineDialog(bridge, command=builder(mode), toolkits=["vulkan"])
    dialogs.append(dialog)
    dialog.show()
    assert dialog.gpu == "cpu"
    assert dialog.gpu_buttons["vulkan"].isEnabled() and not dialog.gpu_buttons["cuda"].isEnabled()
    assert dialog.gpu_buttons["cuda"].text() == "C&UDA (NVIDIA): its toolkit (nvcc) is not installed"
    assert dialog.toolkits_label.text().startswith("GPU toolkits found: Vulkan.")
    assert f"<code>{bridge.engine_dir}</code>" in dialog.intro_label.text()
    seen: list[int] = []
    dialog.progress_bar.valueChanged.connect(seen.append)

    dialog.install_button.click()  # first the build fails
    assert dialog.running and not dialog.install_button.isEnabled()
    loop.run_until_complete(until(lambda: not dialog.running, 10, "the failed build"))
    assert dialog.status_label.text().startswith("The build failed: llama-server build failed: cmake configure failed")
    assert dialog.log_view.isVisible() and "CMake Error: no C++ compiler found" in dialog.log_view.toPlainText()
    assert dialog.install_button.text() == "&Try again" and dialog.install_button.isEnabled()
    assert window.engine_banner.isVisible()

    mode[0] = "ok"
    dialog.gpu_buttons["vulkan"].setChecked(True)
    seen.clear()
    dialog.install_button.click()
    loop.run_until_complete(until(lambda: not dialog.running, 10, "the build"))
    assert seen == [0, 10, 50, 90, 100]
    binary = bridge.engine_dir / "llama-server"
    assert dialog.installed == binary
    assert dialog.status_label.text() == (f"llama-server {FAKE_VERSION} is installed:<br><code>{binary}</code>"
                                          "<br>Models load with it from now on.")
    assert dialog.cancel_button.text() == "&Close" and not dialog.install_button.isVisible()
    assert bridge.engine_status().usable and manager.llama_server_path() == binary
    assert not window.engine_banner.isVisible()  # told through engineChanged
    dialog.cancel_button.click()
    assert not shiboken6.isValid(dialog) or not dialog.isVisible()


def test_cancel_stops_the_build_and_what_it_started(loop, start_manager, dialogs) -> None:
    bridge = ManagerBridge(start_manager(llama_server=None))
    dialog = InstallEngineDialog(bridge, command=builder(["hang"]), toolkits=[])
    dialogs.append(dialog)
    dialog.show()
    assert dialog.toolkits_label.text().startswith("No GPU toolkit found")
    dialog.install_button.click()
    child = loop.run_until_complete(until(lambda: child_pid(dialog), 10, "the builder's child"))
    builder_pid = dialog.build.pid
    assert pid_alive(builder_pid) and pid_alive(child)
    dialog.cancel_button.click()
    assert dialog.status_label.text() == "Stopping the build..."
    loop.run_until_complete(until(lambda: not shiboken6.isValid(dialog) or not dialog.isVisible(), 10,
                                  "the dialog to close"))
    assert not pid_alive(builder_pid) and not pid_alive(child)
    assert not (bridge.engine_dir / "llama-server").exists()


def test_quitting_siesta_stops_a_build(loop, paths, make_settings) -> None:
    siesta = SiestaApp(paths, make_settings(port=free_port(), llama_server=None), tray_available=lambda: False)

    async def body() -> tuple[int, int]:
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 10)
        assert siesta.window.engine_banner.isVisible()
        siesta.bridge.engine_build_command = builder(["hang"])
        siesta.show_install_engine()
        dialog = siesta.install_dialog
        dialog.install_button.click()
        child = await until(lambda: child_pid(dialog), 10, "the builder's child")
        pid = dialog.build.pid
        siesta.request_quit()
        assert await asyncio.wait_for(running, 15) == 0
        return pid, child

    builder_pid, child = loop.run_until_complete(body())
    assert not pid_alive(builder_pid) and not pid_alive(child)


# ----------------------------------------------------------------------------- keyboard, screen readers, dark theme


def test_keyboard_picks_a_target_builds_and_tab_follows_the_buttons(loop, start_manager, dialogs) -> None:
    bridge = ManagerBridge(start_manager(llama_server=None))
    dialog = InstallEngineDialog(bridge, command=builder(["fail"]), toolkits=["vulkan"])
    dialogs.append(dialog)
    activate(loop, dialog)
    gpu = dialog.gpu_buttons
    # Tab: the chosen target (arrows move between targets), then the buttons as they are seen, left to right
    buttons = sorted([dialog.download_button, dialog.install_button, dialog.cancel_button], key=lambda b: b.x())
    assert names(tab_walk(gpu["cpu"], 4)) == names([gpu["cpu"], *buttons, gpu["cpu"]])
    assert names(tab_walk(buttons[-1], 3, back=True)) == names([*buttons[::-1], gpu["cpu"]])
    assert buttons == [dialog.download_button, dialog.install_button, dialog.cancel_button]
    letters = assert_mnemonics(dialog, fields=[], buttons=[*gpu.values(), *buttons])
    assert [letters[k] for k in "PUVRDBC"] == [gpu["cpu"], gpu["cuda"], gpu["vulkan"], gpu["rocm"], *buttons]
    press_alt(dialog, "V")  # Vulkan (Qt clicks it a moment later)
    loop.run_until_complete(until(lambda: gpu["vulkan"].isChecked(), 5, "Vulkan to be chosen"))
    press_alt(dialog, "B")  # Build from source (Qt clicks it a moment later); the fake build fails
    loop.run_until_complete(until(lambda: dialog.task is not None and not dialog.running, 10, "the build"))
    assert dialog.install_button.text() == "&Try again"
    press_alt(dialog, "L")  # the build's log
    assert QApplication.focusWidget() is dialog.log_view
    assert names(tab_walk(gpu["vulkan"], 5)) == names([gpu["vulkan"], dialog.log_view, *buttons, gpu["vulkan"]])


def test_screen_readers_hear_the_progress_and_the_outcome(loop, start_manager, dialogs, announcements) -> None:
    bridge = ManagerBridge(start_manager(llama_server=None))
    mode = ["hang"]
    dialog = InstallEngineDialog(bridge, command=builder(mode), toolkits=["vulkan"])
    dialogs.append(dialog)
    dialog.show()
    assert accessible(dialog.gpu_buttons["vulkan"]) == "Vulkan (most GPUs): toolkit found"
    dialog.install_button.click()
    assert accessible(dialog.progress_bar) == "Progress of the llama-server build"
    child = loop.run_until_complete(until(lambda: child_pid(dialog), 10, "the builder's child"))
    # the step the build is at is the bar's description, as it changes
    assert accessible(dialog.progress_bar, QAccessible.Text.Description) == f"child {child}"
    dialog.cancel_button.click()
    assert accessible(dialog.progress_bar, QAccessible.Text.Description) == "Stopping the build..."
    loop.run_until_complete(until(lambda: not shiboken6.isValid(dialog) or not dialog.isVisible(), 10,
                                  "the dialog to close"))

    again = InstallEngineDialog(bridge, command=builder(["fail"]), toolkits=[])
    dialogs.append(again)
    again.show()
    again.install_button.click()
    loop.run_until_complete(until(lambda: not again.running, 10, "the build"))
    assert accessible(again.progress_bar, QAccessible.Text.Description).startswith("The build failed: ")
    assert accessible(again.log_view) == "Log of the failed llama-server build"
    assert announcements[-1].startswith("The build failed: llama-server build failed")


def test_warning_and_failure_are_readable_on_a_dark_theme(loop, start_manager, dialogs, monkeypatch,
                                                          dark_theme) -> None:
    monkeypatch.setattr(ManagerBridge, "build_tools_missing", staticmethod(lambda: ["cmake"]))
    bridge = ManagerBridge(start_manager(llama_server=None))
    dialog = InstallEngineDialog(bridge, command=builder(["fail"]), toolkits=[])
    dialogs.append(dialog)
    dialog.show()
    assert dialog.warning_label.isVisible() and "Not found on this computer: cmake" in dialog.warning_label.text()
    assert text_contrast(dialog.warning_label) >= 4.5
    dialog.install_button.click()
    loop.run_until_complete(until(lambda: not dialog.running, 10, "the build"))
    assert dialog.status_label.text().startswith("The build failed: ")
    assert text_contrast(dialog.status_label) >= 4.5
