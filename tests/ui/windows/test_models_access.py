"""The Models window from the keyboard, through a screen reader and on a dark theme: Tab
goes as the window is seen (each model's row left to right, headings skipped), every button
and field has its own Alt+letter, each row's controls say which model they act on, the
countdown is read out as it ticks, and its hint, error and banner colours follow the theme."""

from __future__ import annotations

import re

from PySide6.QtGui import QAccessible, QColor, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QPushButton

from app.core.models.backend import free_port
from app.ui import theme
from app.ui.bridge import ManagerBridge
from app.ui.windows.models import COL_STATE, ModelsWindow
from tests.fakes.ollama import FakeOllama
from tests.ui.access import (  # noqa: F401 - fixtures
    accessible,
    activate,
    assert_mnemonics,
    contrast,
    dark_palette,
    dark_theme,
    labelled_by,
    mnemonic,
    names,
    press_alt,
    tab_walk,
    text_contrast,
)
from tests.ui.helpers import FakeShell, gguf, plain, until

COUNTDOWN = re.compile(r"idle, unloads in (5:00|4:5\d)")


def open_window(start_manager, qtbot, shell: FakeShell | None = None, **flags) -> ModelsWindow:
    bridge = ManagerBridge(start_manager(**flags))
    bridge.api_url = f"http://127.0.0.1:{free_port()}"  # nothing answers there
    window = ModelsWindow(bridge, shell or FakeShell(has_tray=False))
    qtbot.addWidget(window)
    return window


def button(window: ModelsWindow, words: str) -> QPushButton:
    """The window's button (not a row's) that reads ``words`` (its letter's ``&`` left out)."""
    found = [b for b in window.findChildren(QPushButton)
             if plain(b.text()) == words and not window.table.isAncestorOf(b)]
    assert len(found) == 1, (words, [b.text() for b in window.findChildren(QPushButton)])
    return found[0]


def row_controls(window: ModelsWindow, name: str) -> list:
    row = window.rows[name]
    return [row.timeout_combo, row.action_button, row.log_button, row.settings_button]


def test_tab_follows_the_rows_and_every_button_has_its_own_letter(loop, start_manager, write_recipe, qtbot,
                                                                  opened) -> None:
    for name in ("qwen", "tiny"):
        write_recipe(name, fake=[], unload_timeout="5m")
    shell = FakeShell(has_tray=False)
    window = open_window(start_manager, qtbot, shell)
    loop.run_until_complete(window.bridge.manager.load("tiny"))  # its Log button and Unload all take the focus
    activate(loop, window)
    panel = window.try_it
    bottom = [button(window, words) for words in ("Copy API URL", "Unload all", "Find models...", "Download model...",
                                                  "Import...", "Settings...", "Open logs folder", "Quit")]
    qwen, tiny = row_controls(window, "qwen"), row_controls(window, "tiny")
    # qwen has no log yet (its Log button is greyed out), nor has Try it's Stop while nothing runs
    order = ([qwen[0], qwen[1], qwen[3], *tiny] + [panel.model_combo, panel.prompt, panel.send_button, panel.answer]
             + bottom)
    assert names(tab_walk(qwen[0], len(order))) == names(order + [qwen[0]])
    assert names(tab_walk(bottom[-1], len(order), back=True)) == names(order[::-1] + [bottom[-1]])
    assert QApplication.focusWidget() is bottom[-1]

    fields = [panel.model_combo, panel.prompt, panel.answer]
    letters = assert_mnemonics(window, fields, [panel.send_button, panel.stop_button, *bottom])
    assert "".join(sorted(letters)) == "ACDEFIMOPQSTU"  # Try it keeps its M, P, S, T and A
    for words, done in (("Settings...", "settings"), ("Find models...", "discover"), ("Download model...", "download"),
                        ("Import...", "import"), ("Quit", "quit")):
        press_alt(window, mnemonic(button(window, words).text()))
        loop.run_until_complete(until(lambda: done in shell.calls, 5, f"Alt+letter to click {words}"))
    press_alt(window, mnemonic(button(window, "Copy API URL").text()))
    loop.run_until_complete(until(lambda: ("copy", f"{window.bridge.api_url}/v1") in opened, 5, "the URL copied"))
    press_alt(window, mnemonic(button(window, "Unload all").text()))
    loop.run_until_complete(until(lambda: window.bridge.manager.get("tiny").pid is None, 10, "tiny to be unloaded"))


def test_first_run_and_the_llama_server_banner_have_letters_too(loop, start_manager, write_recipe, qtbot, paths,
                                                                tmp_path) -> None:
    shell = FakeShell(has_tray=False)
    window = open_window(start_manager, qtbot, shell, llama_server=str(tmp_path / "nothing-here"))
    activate(loop, window)
    # No recipe yet and no llama-server: the banner above the first-run panel.
    assert window.first_run.isVisible() and window.engine_banner.isVisible()
    install = button(window, "Install llama-server...")
    first = [button(window, words) for words in ("Find models on this computer...", "Download a model...",
                                                 "Import configuration...")]
    rest = [button(window, words) for words in ("Copy API URL", "Settings...", "Open logs folder", "Quit")]
    order = [install, *first, *rest]
    assert names(tab_walk(install, len(order))) == names(order + [install])
    letters = assert_mnemonics(window, [], order)
    assert "".join(sorted(letters)) == "CDEFINOQ"  # Find, Download and Import: the letters of the usual buttons
    for letter, done in (("F", "discover"), (mnemonic(install.text()), "install")):
        press_alt(window, letter)
        loop.run_until_complete(until(lambda: done in shell.calls, 5, f"Alt+{letter}"))

    # The first recipe (a GGUF one: it needs llama-server): Install, then the model's row.
    write_recipe("qwen", model=str(gguf(paths.data_dir / "qwen.gguf")), backend="llamacpp")
    window.bridge.manager.reload_recipes()
    loop.run_until_complete(until(lambda: "qwen" in window.rows and window.table.isVisible(), 5, "qwen's row"))
    assert window.engine_banner.isVisible()
    assert names(tab_walk(install, 1)) == names([install, window.rows["qwen"].timeout_combo])
    assert_mnemonics(window, [window.try_it.model_combo], [install])


def test_group_headings_are_not_tab_stops(loop, start_manager, write_recipe, paths, qtbot) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    ollama = FakeOllama({"qwen3:8b": 5_225_000_000})
    loop.run_until_complete(ollama.start())
    try:
        paths.settings_file.write_text(f'[remotes.ol]\nkind = "ollama"\nurl = "{ollama.url}"\n', encoding="utf-8")
        window = open_window(start_manager, qtbot)
        activate(loop, window)
        # the remote's model comes once it has answered: the rows are built anew, Tab still goes row by row
        loop.run_until_complete(until(lambda: "ol/qwen3:8b" in window.rows, 10, "the Ollama model's row"))
        assert len(window.group_items) == 2
        tiny, remote = window.rows["tiny"], window.rows["ol/qwen3:8b"]
        order = [tiny.timeout_combo, tiny.action_button, tiny.settings_button,
                 remote.timeout_combo, remote.action_button, window.try_it.model_combo]
        assert names(tab_walk(order[0], len(order) - 1)) == names(order)
        assert accessible(remote.action_button) == "Load ol/qwen3:8b"
    finally:
        loop.run_until_complete(ollama.stop())


def state_cell(window: ModelsWindow, name: str) -> str:
    """What a screen reader reads in ``name``'s state cell (through the table's accessible cells)."""
    table = QAccessible.queryAccessibleInterface(window.table)
    row = window.rows[name].state_item.row()
    for index in range(table.childCount()):
        cell = table.child(index).tableCellInterface()
        if cell is not None and (cell.rowIndex(), cell.columnIndex()) == (row, COL_STATE):
            return table.child(index).text(QAccessible.Text.Name)
    raise AssertionError(f"no accessible state cell for {name}")


def test_each_rows_controls_name_their_model_and_the_countdown_is_read_as_it_ticks(loop, start_manager,
                                                                                 write_recipe, qtbot) -> None:
    for name in ("qwen", "tiny"):
        write_recipe(name, fake=[], unload_timeout="5m")
    window = open_window(start_manager, qtbot)
    loop.run_until_complete(window.bridge.manager.load("tiny"))
    window.show()
    for name, action in (("qwen", "Load qwen"), ("tiny", "Unload tiny")):
        row = window.rows[name]
        # a combo box is named by its label on Linux (its own name there is its value), elsewhere by its name
        assert labelled_by(row.timeout_combo) == [f"Unload {name} when idle for"]
        assert row.timeout_combo.accessibleName() == f"Unload {name} when idle for"
        assert accessible(row.action_button) == action
        assert accessible(row.log_button) == f"Log of {name}"
        assert accessible(row.settings_button) == f"Model settings of {name}"
    tiny = window.rows["tiny"]

    # The countdown: the state cell's text, and the description of the row's button and combo box.
    first = state_cell(window, "tiny")
    assert COUNTDOWN.fullmatch(first), first
    for widget in (tiny.action_button, tiny.timeout_combo):
        assert accessible(widget, QAccessible.Text.Description) == first
    loop.run_until_complete(until(lambda: state_cell(window, "tiny") != first, 3, "the countdown to tick"))
    now = state_cell(window, "tiny")
    assert COUNTDOWN.fullmatch(now) and now == tiny.state_item.text()
    assert accessible(tiny.action_button, QAccessible.Text.Description) == now
    # While the focus is on it, a control keeps the figure it had (a reader would say each new
    # one aloud) until the state itself changes.
    tiny.action_button.setFocus()
    focused = accessible(tiny.action_button, QAccessible.Text.Description)
    loop.run_until_complete(until(lambda: state_cell(window, "tiny") != focused, 3, "the countdown to tick"))
    assert accessible(tiny.action_button, QAccessible.Text.Description) == focused
    assert accessible(tiny.timeout_combo, QAccessible.Text.Description) == state_cell(window, "tiny")
    tiny.action_button.click()
    loop.run_until_complete(until(lambda: state_cell(window, "tiny") == "not loaded", 10, "tiny to be unloaded"))
    assert accessible(tiny.action_button) == "Load tiny"
    assert accessible(tiny.action_button, QAccessible.Text.Description) == "not loaded"


def banner_colours(window: ModelsWindow) -> tuple[QColor, QColor]:
    """The banner's background as drawn (just inside its border) and its text colour."""
    banner = window.engine_banner
    image = banner.grab().toImage()
    background = image.pixelColor(banner.width() // 2, 3)
    window.engine_label.ensurePolished()
    return background, window.engine_label.palette().color(QPalette.ColorRole.WindowText)


def test_hint_error_and_banner_follow_a_dark_theme(loop, start_manager, write_recipe, paths, qtbot, tmp_path,
                                                   dark_theme) -> None:
    window = open_window(start_manager, qtbot, llama_server=str(tmp_path / "nothing-here"))
    window.show()
    hint = next(label for label in window.findChildren(QLabel) if label.text().startswith("Or write a recipe"))
    assert hint.isVisible() and text_contrast(hint) >= 3.0  # a hint: 3:1

    write_recipe("qwen", model=str(gguf(paths.data_dir / "qwen.gguf")), backend="llamacpp")
    window.bridge.manager.reload_recipes()
    loop.run_until_complete(until(lambda: window.engine_banner.isVisible(), 5, "the banner"))
    window.show_message("Could not load qwen: llama-server not found")
    assert text_contrast(window.message_label) >= 4.5
    background, words = banner_colours(window)
    assert background.name() == theme.banner_background(window).name()  # a tint of the dark window, not light yellow
    assert contrast(words, background) >= 4.5

    # Back to a light theme while the window is open: the colours follow.
    light = QPalette(dark_palette())
    light.setColor(QPalette.ColorRole.Window, QColor("#efefef"))
    light.setColor(QPalette.ColorRole.WindowText, QColor("#000000"))
    light.setColor(QPalette.ColorRole.PlaceholderText, QColor("#808080"))
    QApplication.setPalette(light)
    assert text_contrast(window.message_label) >= 4.5
    background, words = banner_colours(window)
    assert background.name() == theme.banner_background(window).name() and contrast(words, background) >= 4.5
