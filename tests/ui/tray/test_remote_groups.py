"""The tray menu and the Models window of a Siesta with remotes: its models grouped by
machine or engine, each group with its memory, against real servers: a fake Ollama and a
fake OpenAI server on the test's loop, a second Siesta (a ``python -m app serve`` process
with fake-backend recipes), and an address where nothing answers. ``--connect`` mode gets
the served Siesta's remotes from its list of models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint

from app.core.client import ManagerClient
from app.core.models.backend import free_port
from app.ui import text
from app.ui.bridge import ManagerBridge
from app.ui.tray.menu import TrayMenu
from app.ui.windows.models import COL_STATE, COLUMNS, ModelsWindow
from tests.core.remotes.test_remotes import FakeOpenAI
from tests.fakes.ollama import FakeOllama
from tests.ui.helpers import FakeShell, plain, until
from tests.ui.test_connect_mode import ServedSiesta

pytestmark = pytest.mark.timeout(90)

SMALL = "llama3.2:latest"
SIZES = {SMALL: 2_019_393_189, "qwen3:8b": 5_225_000_000}
COMMENT = "# Siesta settings written by a test: this comment stays\n"
COUNTDOWN = r"unloads in (5:00|4:5\d)"


class Remotes:
    """The servers behind ``[remotes]``: ``ol`` (Ollama), ``gpt`` (OpenAI), ``gpubox``
    (another Siesta) and ``gone`` (nothing answers)."""

    def __init__(self, loop, root: Path, settings_file: Path) -> None:
        self.ollama = FakeOllama(SIZES)
        self.openai = FakeOpenAI(["gpt-a", "gpt-b"])
        loop.run_until_complete(self.ollama.start())
        loop.run_until_complete(self.openai.start())
        self.gpubox = ServedSiesta(root)
        self.gone = f"http://127.0.0.1:{free_port()}"
        self.settings_file = settings_file
        settings_file.write_text(
            COMMENT
            + f'[remotes.gone]  # a machine that is switched off\nkind = "siesta"\nurl = "{self.gone}"\n\n'
            + f'[remotes.gpt]\nkind = "openai"\nurl = "{self.openai.url}/v1"\n\n'
            + f'[remotes.gpubox]\nkind = "siesta"\nurl = "{self.gpubox.url}"\n\n'
            + f'[remotes.ol]  # the Ollama on this machine\nkind = "ollama"\nurl = "{self.ollama.url}"\n',
            encoding="utf-8")

    def close(self, loop) -> None:
        self.gpubox.stop()
        loop.run_until_complete(self.ollama.stop())
        loop.run_until_complete(self.openai.stop())


@pytest.fixture
def remotes(loop, tmp_path: Path, paths):
    servers = Remotes(loop, tmp_path / "gpubox", paths.settings_file)
    try:
        yield servers
    finally:
        servers.close(loop)


def start_with_remotes(loop, start_manager, write_recipe):
    """A manager with a local model and the remotes, each model loaded that the groups show."""
    write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    sets = manager.remotes.remotes

    def listed() -> bool:
        return (sets["gone"].status == "unreachable" and SMALL in sets["ol"].views
                and {"gpt-a", "gpt-b"} <= set(sets["gpt"].views) and {"tiny", "spare"} <= set(sets["gpubox"].views))

    loop.run_until_complete(until(listed, 20, "every remote to answer or be found unreachable"))
    for name in ("tiny", f"ol/{SMALL}", "gpubox/tiny"):
        loop.run_until_complete(manager.load(name))
    return manager


def visible_lines(menu) -> list[str]:
    """The menu's lines as a person reads them (not the machine's RAM and GPU figures)."""
    return [plain(a.text()) for a in menu.actions() if a.isVisible() and not a.isSeparator()
            and not a.text().startswith(("RAM:", "GPU "))]


def group_snapshots(bridge: ManagerBridge, remote: str | None) -> list[dict]:
    return [s for s in bridge.snapshots() if s.get("remote") == remote]


def test_the_tray_menu_groups_models_by_machine_with_their_memory(loop, start_manager, write_recipe, remotes,
                                                                    shell) -> None:
    manager = start_with_remotes(loop, start_manager, write_recipe)
    bridge = ManagerBridge(manager)
    tray = TrayMenu(bridge, shell)
    tray.menu.popup(QPoint(0, 0))
    groups = tray.groups
    ollama_port, openai_port, gpubox_port = remotes.ollama.port, remotes.openai.url.rsplit(":", 1)[1], \
        remotes.gpubox.port

    # The memory of each group: what its models hold, RAM + VRAM, worded as the models' own lines.
    loop.run_until_complete(until(lambda: group_snapshots(bridge, "gpubox")[1].get("memory"), 10,
                                  "gpubox/tiny's memory"))
    tray.refresh()
    local_memory = text.group_memory(group_snapshots(bridge, None))
    gpubox_memory = text.group_memory(group_snapshots(bridge, "gpubox"))
    assert local_memory and gpubox_memory
    lines = visible_lines(tray.menu)
    headings = [groups.here.text()] + [groups.blocks[n].header.text() for n in ("gone", "gpt", "gpubox", "ol")]
    assert headings[0] == f"This computer · {local_memory}"
    assert headings[1] == f"gone — cannot reach {remotes.gone}: connection refused; trying again"
    assert headings[2] == f"gpt — OpenAI-compatible server at 127.0.0.1:{openai_port}"
    assert headings[3] == f"gpubox — Siesta at 127.0.0.1:{gpubox_port} · {gpubox_memory}"
    # Ollama's size is the whole model in memory and size_vram its part on the GPU: half and half here.
    assert headings[4] == f"ol — Ollama at 127.0.0.1:{ollama_port} · 963 MB + 963 MB VRAM"
    assert [line for line in lines if line in headings] == headings  # this computer first, then by name
    body = lines[:lines.index("Load model")]
    assert re.fullmatch(rf"tiny \(.+\): idle, {COUNTDOWN}", body[1]), body
    assert body[4:6] == ["gpt-a: available", "gpt-b: available"]
    assert re.fullmatch(rf"tiny \({re.escape(gpubox_memory)}\): idle, {COUNTDOWN}", body[7]), body
    assert re.fullmatch(rf"{re.escape(SMALL)} \(963 MB \+ 963 MB VRAM\): idle, {COUNTDOWN}", body[9]), body
    assert len(body) == 10, body
    assert groups.blocks["gone"].header.toolTip().startswith(f"gone — cannot reach {remotes.gone}: ")

    # Each remote's models that can be loaded, under its name, in the Load model submenu.
    assert [a.text() for a in tray.load_menu.actions() if not a.isSeparator()] == ["gpubox", "spare", "ol", "qwen3:8b"]

    # A remote model's countdown ticks while the menu is open (Ollama's own clock, shown here).
    ollama_entry = groups.entries[f"ol/{SMALL}"]
    first = ollama_entry.action.text()
    loop.run_until_complete(until(lambda: ollama_entry.action.text() != first, 3, "the Ollama countdown to tick"))

    # No log, no recipe here; the presets are there, and "Use global" is the other Siesta's.
    gpubox_entry = groups.entries["gpubox/tiny"]
    for entry in (ollama_entry, gpubox_entry):
        assert not entry.show_log_action.isVisible() and not entry.log_action.isVisible()
        assert not entry.settings_action.isVisible() and entry.timeout_actions[900.0].isVisible()
    assert gpubox_entry.timeout_actions["default"].text() == "Use gpubox's &global"
    assert ollama_entry.timeout_actions["default"].text() == "Use &global (5 min)"
    # A model Siesta only routes to: no actions, a note that says so.
    routed = groups.entries["gpt/gpt-a"]
    assert [a.text() for a in routed.menu.actions() if a.isVisible() and not a.isSeparator()] == [
        text.ROUTED_ONLY_NOTE]

    # A preset for an Ollama model is written to [remotes.ol.timeouts], comments kept, and
    # set as Ollama's own keep_alive.
    ollama_entry.timeout_actions[900.0].trigger()
    loop.run_until_complete(until(lambda: f'"{SMALL}" = "15m"' in remotes.settings_file.read_text(), 10,
                                  "the timeout in settings.toml"))
    saved = remotes.settings_file.read_text()
    assert saved.startswith(COMMENT) and "[remotes.ol.timeouts]" in saved and "# the Ollama on this machine" in saved
    loop.run_until_complete(remotes.ollama.wait_for_call(lambda c: c.body and c.body.get("keep_alive") == 900))
    remote = manager.remotes.remotes["ol"]

    def new_countdown() -> bool:
        remote.poke()  # Ollama is listed every few seconds: list it now
        return bool(re.search(r"unloads in (15:00|14:5\d)$", ollama_entry.action.text()))

    loop.run_until_complete(until(new_countdown, 10, "the new countdown"))
    assert ollama_entry.timeout_actions[900.0].isChecked()

    # Ollama goes away while the menu is open: its model leaves, its heading says why.
    loop.run_until_complete(remotes.ollama.stop())

    def unreachable() -> bool:
        remote.poke()
        return groups.blocks["ol"].header.text().startswith(f"ol — cannot reach {remotes.ollama.url}: ")

    loop.run_until_complete(until(unreachable, 10, "the Ollama group to say it cannot be reached"))
    assert f"ol/{SMALL}" not in groups.entries
    assert groups.blocks["ol"].header.text().endswith("; trying again")
    assert "qwen3:8b" not in [a.text() for a in tray.load_menu.actions()]
    tray.menu.hide()


def test_without_remotes_the_menu_has_no_groups(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    loop.run_until_complete(manager.load("tiny"))
    bridge = ManagerBridge(manager)
    assert bridge.remote_statuses() == []
    tray = TrayMenu(bridge, shell)
    tray.menu.popup(QPoint(0, 0))
    assert not tray.groups.here.isVisible() and not tray.groups.blocks and not tray.groups.entries
    lines = visible_lines(tray.menu)
    assert re.fullmatch(r"tiny \(.+\): idle, unloads in (5:00|4:5\d)", lines[0]), lines
    assert lines[1:3] == ["Load model", "Unload all"]
    assert "remotes" not in tray.unload_all_action.toolTip()
    tray.menu.hide()


def test_the_models_window_groups_models_by_machine(loop, start_manager, write_recipe, remotes, qtbot) -> None:
    manager = start_with_remotes(loop, start_manager, write_recipe)
    bridge = ManagerBridge(manager)
    window = ModelsWindow(bridge, FakeShell(has_tray=False))
    qtbot.addWidget(window)
    window.show()
    table = window.table

    def headings() -> list[tuple[int, str]]:
        return [(item.row(), item.text()) for item in window.group_items.values()]

    rows = {name: row.name_item.row() for name, row in window.rows.items()}
    assert [row for row, _ in headings()] == [0, 2, 3, 6, 9]
    assert [rows[n] for n in ("tiny", "gpt/gpt-a", "gpt/gpt-b", "gpubox/spare", "gpubox/tiny", f"ol/{SMALL}",
                              "ol/qwen3:8b")] == [1, 4, 5, 7, 8, 10, 11]
    assert all(table.columnSpan(row, 0) == len(COLUMNS) for row, _ in headings())
    titles = [title for _, title in headings()]
    assert titles[0].startswith("This computer · ")
    assert re.fullmatch(rf"gone — cannot reach {remotes.gone}: .+; trying again", titles[1]), titles[1]
    assert titles[2].startswith("gpt — OpenAI-compatible server at 127.0.0.1:")
    assert titles[3].startswith(f"gpubox — Siesta at 127.0.0.1:{remotes.gpubox.port} · ")
    assert titles[4] == f"ol — Ollama at 127.0.0.1:{remotes.ollama.port} · 963 MB + 963 MB VRAM"

    local, gpubox, ollama, routed = (window.rows[n] for n in ("tiny", "gpubox/tiny", f"ol/{SMALL}", "gpt/gpt-a"))
    assert not local.log_button.isHidden() and not local.settings_button.isHidden()
    for row in (gpubox, ollama, routed):  # no recipe or log of theirs here
        assert row.log_button.isHidden() and row.settings_button.isHidden()
    assert routed.action_button.isHidden() and routed.timeout_combo.isHidden()
    assert table.item(rows["gpt/gpt-a"], COL_STATE).text() == "available"
    assert ollama.action_button.text() == "Unload" and gpubox.timeout_combo.currentText() == "5 min"
    assert ollama.timeout_combo.toolTip().endswith("(saved in settings.toml, [remotes.ol.timeouts])")
    assert gpubox.timeout_combo.toolTip().endswith("(saved in its recipe on gpubox)")

    # The countdowns tick; the timeout combo of an Ollama model writes [remotes.ol.timeouts].
    first = table.item(rows[f"ol/{SMALL}"], COL_STATE).text()
    assert re.fullmatch(rf"idle, {COUNTDOWN}", first), first
    loop.run_until_complete(until(lambda: table.item(rows[f"ol/{SMALL}"], COL_STATE).text() != first, 3,
                                  "the Ollama countdown to tick"))
    combo = ollama.timeout_combo
    combo.activated.emit(combo.findText("1 h"))
    loop.run_until_complete(until(lambda: f'"{SMALL}" = "1h"' in remotes.settings_file.read_text(), 10,
                                  "the timeout in settings.toml"))
    assert remotes.settings_file.read_text().startswith(COMMENT)
    loop.run_until_complete(until(lambda: window.rows[f"ol/{SMALL}"].timeout_combo.currentText() == "1 h", 5,
                                  "the combo to show 1 h"))

    # Loading from the window a model of another Siesta.
    window.rows["gpubox/spare"].action_button.click()
    loop.run_until_complete(until(lambda: remotes.gpubox.model("spare")["state"] == "ready", 15, "spare loaded"))


def test_connect_mode_shows_the_served_siestas_remotes(loop, paths, tmp_path: Path, shell) -> None:
    root = tmp_path / "box"
    (root / "served").mkdir(parents=True)
    gone = f"http://127.0.0.1:{free_port()}"
    (root / "served" / "settings.toml").write_text(f'[remotes.gone]\nkind = "ollama"\nurl = "{gone}"\n')
    served = ServedSiesta(root)
    client = ManagerClient(served.url)
    try:
        loop.run_until_complete(client.start())
        bridge = ManagerBridge(client)

        def described() -> list[dict]:
            bridge.snapshots(fresh=True)  # the client reads the list again, at most every few seconds
            return [r for r in bridge.remote_statuses() if r["status"] == "unreachable"]

        (remote,) = loop.run_until_complete(until(described, 15, "the served Siesta's remote in the list"))
        assert remote["name"] == "gone" and remote["kind"] == "ollama" and remote["url"] == gone
        assert remote["api_key"] is None and 0 <= remote["retry_in"] <= 30
        tray = TrayMenu(bridge, shell)
        tray.menu.popup(QPoint(0, 0))
        tray.refresh()  # (the machine's name may have come from a reverse lookup meanwhile)
        # the served machine's heading names it (its address, or what a reverse lookup found)
        assert tray.groups.here.isVisible() and tray.groups.here.text() == bridge.target.machine
        assert tray.groups.blocks["gone"].header.text().startswith(f"gone — cannot reach {gone}: ")
        tray.menu.hide()
        loop.run_until_complete(bridge.close())
    finally:
        loop.run_until_complete(client.close())
        served.stop()
