"""The models' lines of the tray menu, and their groups by machine or engine.

:class:`ModelEntry` is one model's line and its submenu: Unload now, timeout presets, and
for a model of this machine its log and settings. Each entry of the submenu has a letter of
its own: &Unload now (or &Cancel loading, &Dismiss), &Load again, &Keep loaded, the presets
by their first free character (&1 min, &5 min, 15 m&in, 1 &h), Use &global, &Show log...,
Open log in &editor and &Model settings...; a name or title shown in a menu has its ``&``
doubled, so that it never takes a letter. A model of another Siesta or of an
engine with a load API has the same submenu without what needs a file here (the presets
write its timeout where that remote keeps it); a model Siesta only routes to (an OpenAI
server's) has no actions, only a note that says so.

:class:`RemoteGroups` places the remotes' models in the menu, one group per remote in name
order under this computer's: a heading with the memory its models hold together (or why
it cannot be used now, and that it is being tried again), its models' entries, and a
separator. With no remote configured it shows nothing, so the menu is as it always was.
Headings and entries are updated in place while the groups and their models stay the
same, so an open submenu is not torn down by a countdown tick.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QActionGroup, QIcon
from PySide6.QtWidgets import QMenu, QStyle

from app.core.config.durations import USE_GLOBAL
from app.ui import text
from app.ui.bridge import ManagerBridge
from app.ui.platform import desktop
from app.ui.text import NEVER, timeout_key
from app.ui.timeout_scale import MENU_PRESETS, short_label

MENU_GROUP_LIMIT = 8
"""Most lines one remote's group takes in the menu before the idle models Siesta only
routes to are counted instead of listed (an OpenAI server may list hundreds)."""

Group = tuple[Mapping[str, Any] | None, list[text.Snapshot]]


SUBMENU_LETTERS = "ucdlkgsem"
"""The letters of a model's submenu entries other than the timeout presets (these take the
first character of theirs that is not one of these or of an earlier preset)."""


def escaped(label: str) -> str:
    """``label`` (a name, a title) as a menu entry's text: an ``&`` in it is shown, not a letter."""
    return label.replace("&", "&&")


def with_letter(label: str, taken: set[str]) -> str:
    """``label`` with an ``&`` before its first letter or digit not in ``taken`` (which
    then gets it), so that each entry of a menu has its own key."""
    for i, char in enumerate(label):
        if char.isalnum() and char.lower() not in taken:
            taken.add(char.lower())
            return label[:i] + "&" + label[i:]
    return label


def heading(action: QAction) -> QAction:
    """Makes ``action`` a group's heading in a menu: bold, not clickable."""
    font = action.font()
    font.setBold(True)
    action.setFont(font)
    action.setEnabled(False)
    return action


class ModelEntry(QObject):
    """One model's line in the tray menu and its submenu of actions."""

    def __init__(self, name: str, bridge: ManagerBridge, parent_menu: QMenu, *,
                 show_log: Callable[[str], None] | None = None,
                 show_model_settings: Callable[[str], None] | None = None,
                 remote: bool = False, routed_only: bool = False) -> None:
        """``remote``: a model of another machine or engine (no log or recipe here);
        ``routed_only``: one Siesta cannot load, unload or time out."""
        super().__init__(parent_menu)
        self.name = name
        self.bridge = bridge
        self.remote = remote
        self.routed_only = routed_only
        self.short = remote  # under its remote's heading, by the remote's own name for it
        self.menu = QMenu(name, parent_menu)
        self.menu.setObjectName(f"model-menu-{name}")
        self.note_action = self.menu.addAction(text.ROUTED_ONLY_NOTE)
        self.note_action.setEnabled(False)
        self.note_action.setVisible(routed_only)
        self.unload_action = self.menu.addAction("&Unload now", lambda: self.bridge.unload(self.name))
        self.load_action = self.menu.addAction("&Load again", lambda: self.bridge.load(self.name))
        self.timeout_separator = self.menu.addSeparator()
        self.timeout_group = QActionGroup(self)
        self.timeout_group.setExclusive(True)
        self.timeout_actions: dict[Any, QAction] = {}
        self._add_timeout(NEVER, "&Keep loaded")
        taken = set(SUBMENU_LETTERS)
        for seconds in MENU_PRESETS:
            self._add_timeout(seconds, with_letter(short_label(seconds), taken))
        self._add_timeout(USE_GLOBAL, "Use &global")
        self.custom_action = self.menu.addAction("Custom")
        self.custom_action.setCheckable(True)
        self.custom_action.setEnabled(False)
        self.files_separator = self.menu.addSeparator()
        self.show_log_action = self.menu.addAction("&Show log...", lambda: show_log and show_log(self.name))
        self.show_log_action.setToolTip("The model's server log in a window that follows new lines")
        self.show_log_action.setVisible(show_log is not None)
        self.log_action = self.menu.addAction("Open log in &editor", self._open_log)
        self.settings_action = self.menu.addAction(
            "&Model settings...", lambda: show_model_settings and show_model_settings(self.name))
        self.settings_action.setToolTip("Context size, GPU layers, threads, the model file and more")
        self.settings_action.setVisible(show_model_settings is not None)
        if remote:  # its log and recipe, if any, are on the other machine
            for action in (self.files_separator, self.show_log_action, self.log_action, self.settings_action):
                action.setVisible(False)
        if routed_only:
            for action in (self.unload_action, self.load_action, self.timeout_separator, self.custom_action,
                           *self.timeout_actions.values()):
                action.setVisible(False)
        self._log_file: Path | None = None
        self._key: Any = None

    @property
    def action(self) -> QAction:
        """The line in the parent menu (it opens the submenu)."""
        return self.menu.menuAction()

    def _add_timeout(self, key: Any, label: str) -> None:
        action = self.menu.addAction(label)
        action.setCheckable(True)
        action.setData(key)
        self.timeout_group.addAction(action)
        action.triggered.connect(lambda checked=False, k=key: self._choose_timeout(k))
        self.timeout_actions[key] = action

    def _choose_timeout(self, key: Any) -> None:
        if key == self._key:
            return
        value = None if key == NEVER else key
        self.bridge.set_model_timeout(self.name, value)

    def _open_log(self) -> None:
        if self._log_file is not None:
            desktop.open_file(self._log_file)

    def update(self, snapshot: text.Snapshot, now: float, global_timeout: Any) -> None:
        label = escaped(text.menu_label(snapshot, now, short=self.short))
        if self.action.text() != label:
            self.action.setText(label)
        if self.remote:
            self.action.setToolTip(f"Ask for it as {self.name}")
        if self.routed_only:
            return
        state = snapshot["state"]
        self.unload_action.setText({"loading": "&Cancel loading", "failed": "&Dismiss"}.get(state, "&Unload now"))
        self.unload_action.setEnabled(state in ("loading", "ready", "failed"))
        self.load_action.setVisible(state == "failed")
        self._log_file = Path(snapshot["log_file"]) if snapshot.get("log_file") else None
        self.log_action.setEnabled(self._log_file is not None and self._log_file.exists())
        self.show_log_action.setEnabled(self.log_action.isEnabled())
        use_global = escaped(text.use_global_label(snapshot, global_timeout))
        at = use_global.rfind("global")  # "Use &global (5 min)", "Use gpubox's &global"
        self.timeout_actions[USE_GLOBAL].setText(use_global[:at] + "&" + use_global[at:] if at >= 0 else use_global)
        self._key = key = timeout_key(snapshot)
        chosen = self.timeout_actions.get(key)
        self.custom_action.setVisible(chosen is None)
        if chosen is None:
            self.custom_action.setText(f"Custom ({short_label(key)})")
            self.custom_action.setChecked(True)
            checked = self.timeout_group.checkedAction()
            if checked is not None:
                # An exclusive group keeps one action checked; lift exclusivity to clear it.
                self.timeout_group.setExclusive(False)
                checked.setChecked(False)
                self.timeout_group.setExclusive(True)
        elif not chosen.isChecked():
            chosen.setChecked(True)
        enabled = snapshot.get("backend") is not None
        for action in self.timeout_actions.values():
            action.setEnabled(enabled)


class _RemoteBlock:
    """One remote's actions in the menu: its heading, a note line, a closing separator."""

    def __init__(self, menu: QMenu, name: str) -> None:
        self.header = heading(QAction(menu))
        self.header.setObjectName(f"remote-{name}")
        self.note = QAction(menu)
        self.note.setEnabled(False)
        self.separator = QAction(menu)
        self.separator.setSeparator(True)
        self.names: list[str] = []


class RemoteGroups(QObject):
    """The remotes' groups of models in the tray menu, above ``anchor``, and the heading of
    this computer's models (``here``, already in the menu above them), shown only while
    there are remotes."""

    def __init__(self, menu: QMenu, bridge: ManagerBridge, here: QAction, anchor: QAction) -> None:
        super().__init__(menu)
        self.menu = menu
        self.bridge = bridge
        self.here = heading(here)
        self.here.setVisible(False)
        self.anchor = anchor
        self.entries: dict[str, ModelEntry] = {}
        self.blocks: dict[str, _RemoteBlock] = {}
        self._placed: list[QAction] = []
        self._problem_icon = menu.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)

    @property
    def grouped(self) -> bool:
        return bool(self.blocks)

    def update(self, groups: Sequence[Group], now: float, global_timeout: Any, here_name: str) -> None:
        """Brings the groups in step with :func:`text.model_groups`'s ``groups`` (this
        computer's first; its entries are the tray's own)."""
        remote_groups = [(remote, models) for remote, models in groups if remote is not None]
        self.here.setVisible(bool(remote_groups))
        if remote_groups:
            self.here.setText(escaped(text.group_title(None, groups[0][1], here=here_name)))
        wanted = [str(remote["name"]) for remote, _ in remote_groups]
        dropped = [self.blocks.pop(name) for name in [n for n in self.blocks if n not in wanted]]
        shown_by_group = []
        for name, (remote, models) in zip(wanted, remote_groups):
            block = self.blocks.get(name)
            if block is None:
                block = self.blocks[name] = _RemoteBlock(self.menu, name)
            shown, more = text.menu_models(models, MENU_GROUP_LIMIT)
            self._update_block(block, remote, models, shown, more)
            shown_by_group.append((block, shown))
        self._update_entries([s for _, shown in shown_by_group for s in shown])
        for _, shown in shown_by_group:
            for snapshot in shown:
                self.entries[snapshot["name"]].update(snapshot, now, global_timeout)
        self._place([self.blocks[name] for name in wanted])
        for block in dropped:
            for action in (block.header, block.note, block.separator):
                action.deleteLater()

    def _update_block(self, block: _RemoteBlock, remote: Mapping[str, Any], models: list[text.Snapshot],
                      shown: list[text.Snapshot], more: int) -> None:
        title = escaped(text.group_title(remote, models))
        problem = text.remote_problem(remote)
        if block.header.text() != title:
            block.header.setText(title)
        block.header.setToolTip(problem or "")
        block.header.setIcon(self._problem_icon if problem else QIcon())
        block.names = [s["name"] for s in shown]
        if problem is not None or remote.get("status") == "connecting":
            note = ""
        elif more:
            note = f"{more} more model{'s' if more != 1 else ''}: see the Models window"
        elif not shown:
            note = "No models loaded" if models else "No models"
        else:
            note = ""
        block.note.setText(note)
        block.note.setVisible(bool(note))

    def _update_entries(self, shown: list[text.Snapshot]) -> None:
        wanted = {s["name"]: text.is_routed_only(s) for s in shown}
        for name, entry in list(self.entries.items()):
            if wanted.get(name) != entry.routed_only:  # gone, or its remote's kind changed
                self.menu.removeAction(entry.action)
                if entry.action in self._placed:
                    self._placed.remove(entry.action)
                entry.menu.deleteLater()
                entry.deleteLater()
                del self.entries[name]
        for name, routed_only in wanted.items():
            if name not in self.entries:
                self.entries[name] = ModelEntry(name, self.bridge, self.menu, remote=True, routed_only=routed_only)

    def _place(self, blocks: list[_RemoteBlock]) -> None:
        actions: list[QAction] = []
        for block in blocks:
            actions += [block.header, *(self.entries[n].action for n in block.names), block.note, block.separator]
        if actions == self._placed:
            return
        for action in self._placed:
            self.menu.removeAction(action)
        for action in actions:
            self.menu.insertAction(self.anchor, action)
        self._placed = actions
