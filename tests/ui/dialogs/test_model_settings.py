""""Model settings...": the fields read each llama-server argument form, saving keeps the
recipe's comments and unknown args, the memory estimate follows the context size (the real
tiny GGUF), stale after saving while loaded, reload now restarts the server (the real
llama-server), a bad value names its field and writes nothing, and the entries in the tray
submenu and the Models window; the keyboard, what screen readers are told, a dark theme."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import QApplication, QLabel

from app.core.models.model import ModelState
from app.demo_model import write_tiny_model
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.model_settings import STALE_TEXT, ModelSettingsDialog
from app.ui.tray.menu import TrayMenu
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
from tests.ui.helpers import FakeShell, until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "models" / "tiny.gguf")


@pytest.fixture
def llama_recipe(write_recipe, tiny: Path):
    def write(name: str, args: str, extra: str = "") -> Path:
        return write_recipe(name, f'# {name}: the tiny test model\nbackend = "llamacpp"\nmodel = "{tiny}"  # the file\n'
                                  f"args = [{args}]  # keep it small\n# a note of mine\n{extra}")
    return write


def open_dialog(loop, manager, qtbot, name: str = "m") -> ModelSettingsDialog:
    dialog = ModelSettingsDialog(ManagerBridge(manager), name)
    qtbot.dialogs.append(dialog)  # it deletes itself on close; see conftest's _close_dialogs
    dialog.show()
    return dialog


def save(loop, dialog: ModelSettingsDialog, *, reload_now: bool = False) -> None:
    task = dialog.save(reload_now=reload_now)
    assert task is not None, dialog.error_label.text()
    loop.run_until_complete(until(lambda: task.done() and dialog.save_button.isEnabled(), 60, "the save"))
    assert not dialog.error_label.text(), dialog.error_label.text()


@pytest.mark.parametrize(("args", "ctx", "ngl", "threads", "parallel"), [
    ('"-c", "4096", "-ngl", "99", "-t", "4", "-np", "2"', "4096", "99", "4", "2"),
    ('"--ctx-size=4096", "--n-gpu-layers=auto"', "4096", "auto", "", ""),
    ('"--ctx-size", "512", "--threads", "3", "--parallel", "1", "--gpu-layers", "all"', "512", "all", "3", "1"),
])
def test_model_settings_fields_show_each_argument_form(loop, start_manager, llama_recipe, qtbot,
                                                       args, ctx, ngl, threads, parallel) -> None:
    llama_recipe("m", args + ', "--mlock", "--alias-x", "a b"')
    dialog = open_dialog(loop, start_manager(), qtbot)
    assert dialog.ctx_edit.text() == ctx
    assert dialog.ngl_combo.currentText() == ngl
    assert dialog.threads_edit.text() == threads
    assert dialog.parallel_edit.text() == parallel
    assert dialog.extra_edit.text() == "--mlock --alias-x 'a b'"
    assert dialog.model_edit.text().endswith("tiny.gguf") and dialog.memory_edit.text() == ""


def test_model_settings_save_keeps_comments_and_unknown_args(loop, start_manager, llama_recipe, qtbot) -> None:
    path = llama_recipe("m", '"--mlock", "--ctx-size=4096", "-ngl", "99", "--foo", "x"', 'custom = "kept"\n')
    manager = start_manager()
    dialog = open_dialog(loop, manager, qtbot)
    dialog.ctx_edit.setText("2048")
    dialog.ngl_combo.setCurrentText("auto")
    dialog.threads_edit.setText("2")
    dialog.memory_edit.setText("1GB")
    save(loop, dialog)
    text = path.read_text()
    for kept in ("# m: the tiny test model", "# the file", "# keep it small", "# a note of mine", 'custom = "kept"'):
        assert kept in text
    data = tomllib.loads(text)
    assert data["args"] == ["--mlock", "--ctx-size=2048", "-ngl", "auto", "--foo", "x", "--threads", "2"]
    assert data["memory_estimate"] == "1GB"
    assert manager.get("m").recipe.memory_estimate == 1024 ** 3
    assert dialog.status_label.text().startswith("Saved.")
    # Extra arguments edited: the field options keep their forms; empty memory = automatic again.
    dialog.extra_edit.setText("--bar 'y z'")
    dialog.memory_edit.setText("")
    save(loop, dialog)
    data = tomllib.loads(path.read_text())
    assert data["args"] == ["--bar", "y z", "--ctx-size=2048", "-ngl", "auto", "--threads", "2"]
    assert "memory_estimate" not in data and "# a note of mine" in path.read_text()


def test_model_settings_estimate_follows_the_context_size(loop, start_manager, llama_recipe, qtbot) -> None:
    llama_recipe("m", '"-c", "256"')
    dialog = open_dialog(loop, start_manager(), qtbot)
    loop.run_until_complete(until(lambda: dialog.estimate_runs >= 1, 10, "the first estimate"))
    small = dialog.estimate_total
    assert small and dialog.estimate_label.text().startswith("Estimated memory: ")
    runs = dialog.estimate_runs
    qtbot.keyClicks(dialog.ctx_edit, "00")  # 25600: several keystrokes, one estimate after the pause
    loop.run_until_complete(until(lambda: dialog.estimate_runs > runs, 10, "the estimate to follow"))
    assert dialog.estimate_runs == runs + 1  # debounced
    assert dialog.estimate_total > small


@pytest.mark.llama
def test_model_settings_stale_after_saving_while_loaded_then_reload_now(loop, start_manager, llama_recipe,
                                                                       qtbot) -> None:
    llama_recipe("m", '"-t", "1", "--ctx-size", "256"')
    manager = start_manager()
    loop.run_until_complete(manager.load("m"))
    model = manager.get("m")
    first_pid = model.pid
    dialog = open_dialog(loop, manager, qtbot)
    assert dialog.reload_button.isEnabled() and STALE_TEXT not in dialog.status_label.text()
    dialog.ctx_edit.setText("512")
    save(loop, dialog)
    assert model.stale and model.pid == first_pid
    assert STALE_TEXT in dialog.status_label.text()
    dialog.ctx_edit.setText("384")
    save(loop, dialog, reload_now=True)
    assert model.state is ModelState.READY and not model.stale and model.pid != first_pid
    assert "384" in model._process.spec.argv
    loop.run_until_complete(until(lambda: STALE_TEXT not in dialog.status_label.text(), 5, "stale to go"))


@pytest.mark.parametrize(("field", "value", "named"), [
    ("ctx_edit", "abc", "Context size"),
    ("memory_edit", "lots", "Memory estimate"),
    ("threads_edit", "0", "Threads"),
    ("extra_edit", "--x 'unclosed", "Extra arguments"),
    ("model_edit", "/nowhere/x.gguf", "Model file"),
])
def test_model_settings_bad_value_names_the_field_and_writes_nothing(loop, start_manager, llama_recipe, qtbot,
                                                                    field, value, named) -> None:
    path = llama_recipe("m", '"-c", "256"')
    before = path.read_text()
    dialog = open_dialog(loop, start_manager(), qtbot)
    dialog.ctx_edit.setText("1024")
    getattr(dialog, field).setText(value)
    assert dialog.save() is None
    assert dialog.error_label.text().startswith(named + ":") and dialog.error_label.isVisibleTo(dialog)
    assert path.read_text() == before


def test_model_settings_command_recipe_edits_only_the_memory_estimate(loop, start_manager, write_recipe,
                                                                     qtbot) -> None:
    path = write_recipe("m", fake=[])
    dialog = open_dialog(loop, start_manager(), qtbot)
    assert not dialog.ctx_edit.isEnabled() and not dialog.extra_edit.isEnabled()
    assert not dialog.model_edit.isEnabled() and dialog.memory_edit.isEnabled()
    dialog.memory_edit.setText("512MB")
    save(loop, dialog)
    data = tomllib.loads(path.read_text())
    assert data["memory_estimate"] == "512MB" and "args" not in data
    assert path.read_text().startswith("# recipe m written by a test")


def test_model_settings_labels_mnemonics_names_and_tab_order(loop, start_manager, llama_recipe, qtbot) -> None:
    llama_recipe("m", '"-c", "256"')
    dialog = open_dialog(loop, start_manager(), qtbot)
    order = [dialog.ctx_edit, dialog.ngl_combo, dialog.threads_edit, dialog.parallel_edit, dialog.model_edit,
             dialog.browse_button, dialog.extra_edit, dialog.memory_edit]
    for widget in order:
        assert widget.accessibleName()
    for first, second in zip(order, order[1:]):
        following = first.nextInFocusChain()
        while following is not second and (following.focusPolicy() == Qt.FocusPolicy.NoFocus
                                           or first.isAncestorOf(following)):
            following = following.nextInFocusChain()
        assert following is second, (first.objectName(), second.objectName())
    labels = [dialog.form.labelForField(dialog.form.itemAt(i, dialog.form.ItemRole.FieldRole).widget())
              for i in range(7)]
    assert all("&" in label.text() and label.buddy() is not None for label in labels)


def test_model_settings_entries_in_the_tray_and_models_window(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("m", fake=[])
    manager = start_manager()
    shell = FakeShell()
    bridge = ManagerBridge(manager)
    tray = TrayMenu(bridge, shell)
    loop.run_until_complete(manager.load("m"))  # a loaded model has its line and submenu
    tray.menu.popup(QPoint(0, 0))
    entry = tray.entries["m"]
    assert entry.settings_action.text() == "&Model settings..." and entry.settings_action.isVisible()
    entry.settings_action.trigger()
    assert shell.calls == ["model settings m"]
    tray.menu.hide()
    window = ModelsWindow(bridge, shell)
    qtbot.addWidget(window)
    window.rows["m"].settings_button.click()
    assert shell.calls == ["model settings m", "model settings m"]


def test_model_settings_app_keeps_one_dialog_per_model(loop, start_manager, write_recipe, qtbot, paths,
                                                      make_settings) -> None:
    from app.ui.app import SiestaApp

    write_recipe("m", fake=[])
    siesta = SiestaApp(paths, make_settings())
    siesta.bridge = ManagerBridge(start_manager())
    siesta.show_model_settings("m")
    dialog = siesta.model_settings_dialogs["m"]
    qtbot.dialogs.append(dialog)
    assert dialog.isVisible() and dialog.windowTitle() == "Model settings: m"
    siesta.show_model_settings("m")
    assert siesta.model_settings_dialogs["m"] is dialog


def fields_of(dialog: ModelSettingsDialog) -> list:
    return [dialog.ctx_edit, dialog.ngl_combo, dialog.threads_edit, dialog.parallel_edit, dialog.model_edit,
            dialog.extra_edit, dialog.memory_edit]


def test_model_settings_keyboard_reaches_every_field_and_button(loop, start_manager, llama_recipe, qtbot) -> None:
    llama_recipe("m", '"-c", "256"')
    dialog = open_dialog(loop, start_manager(), qtbot)
    activate(loop, dialog)
    buttons = [dialog.browse_button, dialog.save_button, dialog.reload_button, dialog.close_button]
    letters = assert_mnemonics(dialog, fields_of(dialog), buttons)
    assert "".join(sorted(letters)) == "BCFGLMPRSTX"
    # down the fields, then along the buttons ("Save and reload now" is greyed out: the model is not loaded)
    order = [dialog.ctx_edit, dialog.ngl_combo, dialog.threads_edit, dialog.parallel_edit, dialog.model_edit,
             dialog.browse_button, dialog.extra_edit, dialog.memory_edit, dialog.save_button, dialog.close_button]
    assert names(tab_walk(dialog.ctx_edit, len(order))) == names(order + [dialog.ctx_edit])
    assert names(tab_walk(dialog.close_button, len(order) - 1, back=True)) == names(order[::-1])
    press_alt(dialog, "C")  # the context size, its text selected
    qtbot.keyClicks(QApplication.focusWidget(), "512")
    press_alt(dialog, "S")  # Save (Qt clicks it a moment later)
    loop.run_until_complete(until(lambda: dialog.status_label.text().startswith("Saved."), 10, "the save"))
    assert '"-c", "512"' in dialog.bridge.manager.paths.recipe_file("m").read_text()


def test_model_settings_screen_readers_hear_which_model(loop, start_manager, llama_recipe, qtbot,
                                                        announcements) -> None:
    llama_recipe("qwen", '"-c", "256"')
    dialog = open_dialog(loop, start_manager(), qtbot, "qwen")
    assert [accessible(w) for w in fields_of(dialog)] == [
        "Context size for qwen", "GPU layers for qwen", "Threads for qwen", "Parallel slots for qwen",
        "Model file for qwen", "Extra arguments for qwen", "Memory estimate for qwen"]
    assert accessible(dialog.ctx_edit, QAccessible.Text.Description).startswith("How many tokens the model")
    assert accessible(dialog.browse_button) == "Choose the model file of qwen"
    loop.run_until_complete(until(lambda: dialog.estimate_runs >= 1, 10, "the first estimate"))
    # the estimate's text is what it says: kept current as it changes
    assert accessible(dialog.estimate_label) == "Estimated memory of qwen"
    assert accessible(dialog.estimate_label, QAccessible.Text.Description) == dialog.estimate_label.text()
    first = dialog.estimate_label.text()
    dialog.ctx_edit.setText("25600")
    loop.run_until_complete(until(lambda: dialog.estimate_label.text() != first, 10, "a new estimate"))
    assert accessible(dialog.estimate_label, QAccessible.Text.Description) == dialog.estimate_label.text()
    dialog.threads_edit.setText("0")
    assert dialog.save() is None
    assert accessible(dialog.error_label) == "Threads: 0 is too small (at least 1; empty = automatic)"
    assert announcements[-1] == "Threads: 0 is too small (at least 1; empty = automatic)"


def test_model_settings_error_and_help_are_readable_on_a_dark_theme(loop, start_manager, llama_recipe, qtbot,
                                                                    dark_theme) -> None:
    llama_recipe("m", '"-c", "256"')
    dialog = open_dialog(loop, start_manager(), qtbot)
    dialog.ctx_edit.setText("lots")
    assert dialog.save() is None and dialog.error_label.isVisible()
    assert text_contrast(dialog.error_label) >= 4.5
    helps = [label for label in dialog.findChildren(QLabel) if label.text().startswith("How many tokens")]
    assert helps and text_contrast(helps[0]) >= 3.0  # a hint: 3:1 (WCAG's large text and UI parts)
