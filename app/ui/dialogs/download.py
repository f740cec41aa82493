""""Download model...": a GGUF model from the Hugging Face Hub, in the app, as ``siesta pull``.

Search the Hub for GGUF repos (Enter in the search field), pick a repo to see its quants
with their sizes and whether each one fits this computer's memory (:func:`fit_on_machine`
compares the size, plus room for the context and compute buffers, with the free memory of
each GPU and of RAM as :meth:`ManagerBridge.refresh_system` reads them, within Siesta's
memory budget and floor), pick a quant, check the model's name (pre-filled as ``siesta
pull`` would name it), and Download. The progress bar shows speed and time left; Cancel
stops and keeps what has arrived, so the next Download carries on from there. Closing
the dialog cancels a download the same way. When it ends, the recipe exists, the model is
in the menu, and the dialog says the name clients ask for.

Every Hub call (search, a repo's files, the download) runs in a worker thread through
the bridge; progress comes back to the GUI thread through the event loop. Nothing here
blocks the GUI. Errors (a gated repo, too little disk space, no network, a name already
taken) are shown in the dialog in plain words, with what to do (the words, and the memory
check, are in :mod:`app.ui.dialogs.download_text`).

From the keyboard: Tab goes top to bottom; Alt+S the search field, Alt+P the
repositories, Alt+Q the quants, Alt+N the name, Alt+D downloads. The progress bar's
accessible description is the progress text, and the outcome is announced to screen
readers.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.config.recipes import is_valid_name
from app.core.config.sizes import format_bytes
from app.core.hub.choice import QuantOption, quant_options
from app.core.hub.client import HubClient, HubError, RepoInfo, RepoSummary, repo_url
from app.core.hub.download import DownloadCancelled, DownloadFailed
from app.core.hub.pull import PullResult, RecipeExists
from app.ui import a11y, icons, theme
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.download_text import (
    Fit,
    count_text,
    error_html,
    fit_on_machine,
    option_name,
    progress_text,
)

log = logging.getLogger(__name__)

REPO_COLUMNS = ("Repository", "Downloads", "Likes", "Updated")
QUANT_COLUMNS = ("Quant", "Size", "This computer", "")
COL_QUANT, COL_SIZE, COL_FIT, COL_WHY = range(4)
SPEED_WINDOW = 5.0  # seconds of progress the speed is measured over
INTRO = ("Search the Hugging Face Hub for GGUF models, pick one and a quant, and Download. The file goes to "
         "the shared Hugging Face cache, and Siesta adds the model to its list.")


def _button(label: str, name: str, slot: Callable[[], object], tip: str = "") -> QPushButton:
    button = QPushButton(label)
    button.setObjectName(name)
    button.setToolTip(tip)
    button.clicked.connect(slot)
    return button


def _tree(name: str, accessible: str, columns: Sequence[str], *, stretch: int) -> QTreeWidget:
    """A list with columns: one row selected at a time, column ``stretch`` taking the room left."""
    tree = QTreeWidget()
    tree.setObjectName(name)
    tree.setAccessibleName(accessible)
    tree.setColumnCount(len(columns))
    tree.setHeaderLabels(list(columns))
    tree.setRootIsDecorated(False)
    tree.setUniformRowHeights(True)
    tree.setAlternatingRowColors(True)
    tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    header = tree.header()
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    header.setStretchLastSection(False)
    for col in range(len(columns)):
        header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch if col == stretch
                                    else QHeaderView.ResizeMode.ResizeToContents)
    return tree


def _row(label: str, field: QWidget, button: QPushButton) -> QHBoxLayout:
    """``Label: [field.........] [button]``; the label's underlined letter (Alt+it) focuses the field."""
    buddy = QLabel(label)
    buddy.setBuddy(field)
    row = QHBoxLayout()
    row.addWidget(buddy)
    row.addWidget(field, 1)
    row.addWidget(button)
    return row


def _heading(label: str, field: QWidget, status: QLabel) -> QHBoxLayout:
    """``Label: what the list below holds now``; the label's letter (Alt+it) focuses the list."""
    buddy = QLabel(label)
    buddy.setBuddy(field)
    row = QHBoxLayout()
    row.addWidget(buddy, 0, Qt.AlignmentFlag.AlignTop)
    row.addWidget(status, 1)
    return row


class DownloadDialog(QDialog):
    """Searches the Hub, lists a repo's quants with what fits, downloads one with progress."""

    def __init__(self, bridge: ManagerBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.setWindowTitle("Download model — Siesta")
        self.setWindowIcon(icons.app_icon())
        self.setObjectName("download-dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.client: HubClient | None = None  # for search and repo listings; each download makes its own
        self.download_client: HubClient | None = None
        self.summaries: list[RepoSummary] = []
        self.repo: str | None = None
        self.info: RepoInfo | None = None
        self.options: list[QuantOption] = []
        self.search_task: asyncio.Task[Any] | None = None
        self.repo_task: asyncio.Task[Any] | None = None
        self.download_task: asyncio.Task[Any] | None = None
        self.cancel_event: threading.Event | None = None
        self.result: PullResult | None = None
        self._name_edited = False
        self._samples: deque[tuple[float, int]] = deque()

        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        self.search_field = QLineEdit()
        self.search_field.setObjectName("search")
        self.search_field.setPlaceholderText("Model name, for example: qwen3 4b")
        self.search_field.setClearButtonEnabled(True)
        self.search_field.setAccessibleName("Search the Hugging Face Hub for GGUF models")
        self.search_field.returnPressed.connect(self.search)
        self.search_button = _button("Sea&rch", "search-button", self.search)
        self.search_status = QLabel("Type part of a model's name and press Enter.")
        self.search_status.setObjectName("search-status")
        self.search_status.setWordWrap(True)

        self.results = _tree("results", "GGUF repositories found", REPO_COLUMNS, stretch=0)
        self.results.currentItemChanged.connect(self._on_repo_changed)

        self.quants_label = QLabel("pick a repository above.")
        self.quants_label.setObjectName("quants-label")
        self.quants_label.setWordWrap(True)
        self.quants_label.setOpenExternalLinks(True)
        self.quants = _tree("quants", "Quants of the chosen repository", QUANT_COLUMNS, stretch=COL_WHY)
        self.quants.currentItemChanged.connect(self._on_quant_changed)

        self.name_field = QLineEdit()
        self.name_field.setObjectName("name")
        self.name_field.setAccessibleName("Model name for requests")
        self.name_field.setToolTip("Clients ask for the model by this name; it is also the recipe's file name")
        self.name_field.textEdited.connect(self._on_name_edited)
        self.name_field.returnPressed.connect(self.download)
        self.download_button = _button("&Download", "download", self.download)

        self.progress_status = QLabel()
        self.progress_status.setObjectName("progress-status")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progress")
        self.progress_bar.setAccessibleName("Download progress")  # names the model once a download starts
        self.progress_bar.setRange(0, 1000)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("progress-text")
        self.message_label = QLabel()
        self.message_label.setObjectName("message")
        self.message_label.setWordWrap(True)
        self.message_label.setOpenExternalLinks(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        for widget in (self.progress_status, self.progress_bar, self.progress_label, self.message_label):
            widget.hide()

        self.cancel_button = _button("C&ancel download", "cancel", self.cancel,
                                     "Stop the download; what has arrived is kept for the next Download")
        self.close_button = _button("&Close", "close", self.reject)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(_row("&Search:", self.search_field, self.search_button))
        layout.addLayout(_heading("Re&positories:", self.results, self.search_status))
        layout.addWidget(self.results, 1)
        layout.addLayout(_heading("&Quants:", self.quants, self.quants_label))
        layout.addWidget(self.quants, 1)
        layout.addLayout(_row("&Name:", self.name_field, self.download_button))
        layout.addWidget(self.progress_status)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.message_label)
        layout.addLayout(buttons)
        a11y.set_tab_order(self.focus_chain())
        self.resize(860, 620)
        self.search_field.setFocus()
        bridge.systemChanged.connect(self._on_system_changed)
        bridge.refresh_system()
        self._update_buttons()

    def focus_chain(self) -> list[QWidget]:
        """The widgets that take keyboard focus, top to bottom and left to right."""
        return [self.search_field, self.search_button, self.results, self.quants, self.name_field,
                self.download_button, self.cancel_button, self.close_button]

    # ---- state ------------------------------------------------------------------------------------

    @staticmethod
    def _running(task: asyncio.Task[Any] | None) -> bool:
        return task is not None and not task.done()

    @property
    def searching(self) -> bool:
        return self._running(self.search_task)

    @property
    def listing(self) -> bool:
        return self._running(self.repo_task)

    @property
    def downloading(self) -> bool:
        return self._running(self.download_task)

    def _update_buttons(self) -> None:
        busy = self.downloading
        for widget in (self.search_field, self.search_button, self.results, self.quants, self.name_field):
            widget.setEnabled(not busy)
        self.download_button.setEnabled(not busy and self.current_option() is not None
                                        and bool(self.name_field.text().strip()))
        self.cancel_button.setEnabled(busy)

    async def _hub(self) -> HubClient:
        if self.client is None:
            self.client = await self.bridge.hub_client()
        return self.client

    # ---- searching --------------------------------------------------------------------------------

    def search(self) -> asyncio.Task[Any] | None:
        """Searches the Hub for GGUF repos matching the search field (in a worker thread)."""
        if self.downloading:
            return None
        if self.searching:
            assert self.search_task is not None
            self.search_task.cancel()  # its thread finishes on its own; its answer is dropped
        query = self.search_field.text().strip()
        self.search_status.setStyleSheet("")
        self.search_status.setText(f"Searching the Hub for “{query}”..." if query else
                                   "Searching the Hub for the most downloaded GGUF models...")

        async def run() -> list[RepoSummary]:
            client = await self._hub()
            return await self.bridge.hub_search(client, query)

        task = self.bridge.run(run(), "search the Hub", report=False)
        self.search_task = task
        task.add_done_callback(lambda t: self._searched(t, query))
        return task

    def _searched(self, task: asyncio.Task[Any], query: str) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if task is not self.search_task or not shiboken6.isValid(self):
            return
        if exc is not None:
            log.info("searching the Hub failed: %s", exc)
            self.search_status.setStyleSheet(theme.text_style("error", self.search_status))
            self.search_status.setText(f"Could not search the Hub: {exc}")
            a11y.announce(self.search_status, self.search_status.text(), assertive=True)
            return
        self.summaries = task.result()
        self.results.blockSignals(True)
        self.results.clear()
        for summary in self.summaries:
            item = QTreeWidgetItem([summary.id, count_text(summary.downloads), count_text(summary.likes),
                                    summary.updated.strftime("%Y-%m-%d") if summary.updated else ""])
            item.setData(0, Qt.ItemDataRole.UserRole, summary.id)
            item.setToolTip(1, f"{summary.downloads:,} downloads")
            for col in (1, 2):
                item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.results.addTopLevelItem(item)
            if summary.id == self.repo:  # the repo whose quants are listed stays marked
                self.results.setCurrentItem(item)
        self.results.blockSignals(False)
        found = len(self.summaries)
        what = f"for “{query}”" if query else "in all"
        if found:
            self.search_status.setText(f"{found} GGUF {'repository' if found == 1 else 'repositories'} {what}, "
                                       "most downloaded first. Pick one to see its quants.")
        else:
            self.search_status.setText(f"No GGUF models found {what}. Try fewer or other words.")
        a11y.announce(self.search_status, self.search_status.text())
        self._update_buttons()

    def repo_ids(self) -> list[str]:
        return [self.results.topLevelItem(i).text(0) for i in range(self.results.topLevelItemCount())]

    def pick_repo(self, repo: str) -> None:
        """Selects ``repo`` in the results, as a click would."""
        row = self.repo_ids().index(repo)
        self.results.setCurrentItem(self.results.topLevelItem(row))

    # ---- a repo's quants --------------------------------------------------------------------------

    def _on_repo_changed(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        if current is not None:
            current.setSelected(True)  # also when Tab made it current
            self.list_quants(current.data(0, Qt.ItemDataRole.UserRole))

    def list_quants(self, repo: str) -> asyncio.Task[Any] | None:
        """Lists the quants of ``repo`` (its files are read in a worker thread)."""
        if self.downloading:
            return None
        if self.listing:
            assert self.repo_task is not None
            self.repo_task.cancel()
        self.repo, self.info, self.options = repo, None, []
        self.quants.clear()
        for widget in (self.progress_status, self.progress_bar, self.progress_label, self.message_label):
            widget.hide()  # they were about another repo
        self.quants_label.setText(f"reading the files of {html.escape(repo)}...")
        self.quants_label.setStyleSheet("")
        self.quants.setAccessibleName(f"Quants of {repo}")
        self.bridge.refresh_system()

        async def run() -> RepoInfo:
            client = await self._hub()
            return await self.bridge.hub_repo_info(client, repo)

        task = self.bridge.run(run(), f"list the files of {repo}", report=False)
        self.repo_task = task
        task.add_done_callback(self._listed)
        self._update_buttons()
        return task

    def _listed(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if task is not self.repo_task or not shiboken6.isValid(self):
            return
        if exc is not None:
            log.info("listing %s failed: %s", self.repo, exc)
            self.quants_label.setStyleSheet(theme.text_style("error", self.quants_label))
            self.quants_label.setText(html.escape(f"Could not read the files of {self.repo}: {exc}"))
            self._update_buttons()
            return
        self.info = info = task.result()
        self.options = quant_options(info.files)
        self.quants.blockSignals(True)
        for option in self.options:
            item = QTreeWidgetItem([option.tag, format_bytes(option.size), "", ""])
            parts = f" in {len(option.files)} parts" if len(option.files) > 1 else ""
            tip = "\n".join(f.name for f in option.files)
            for col in range(len(QUANT_COLUMNS)):
                item.setToolTip(col, f"{tip}\n{option.size:,} bytes{parts}")
            item.setTextAlignment(COL_SIZE, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.quants.addTopLevelItem(item)
        self.quants.blockSignals(False)
        self._mark_fits()
        if not self.options:
            self.quants_label.setText(html.escape(f"{info.repo} has no GGUF model file."))
        else:
            text = html.escape(f"{info.repo}, smallest first.")
            if info.gated:
                page = repo_url(self.client.endpoint if self.client else "", info.repo)
                text += (f' <b>gated</b>: accept its terms on <a href="{html.escape(page)}">its page</a> '
                         "and log in with <code>hf auth login</code> before downloading.")
            self.quants_label.setText(text)
            preferred = next((i for i, o in enumerate(self.options) if o.tag.upper() == "Q4_K_M"), 0)
            self.quants.setCurrentItem(self.quants.topLevelItem(preferred))
        self._update_buttons()

    def quant_tags(self) -> list[str]:
        return [o.tag for o in self.options]

    def pick_quant(self, tag: str) -> None:
        """Selects the quant ``tag``, as a click would."""
        self.quants.setCurrentItem(self.quants.topLevelItem(self.quant_tags().index(tag)))

    def current_option(self) -> QuantOption | None:
        item = self.quants.currentItem()
        if item is None or not self.options:
            return None
        index = self.quants.indexOfTopLevelItem(item)
        return self.options[index] if 0 <= index < len(self.options) else None

    def fit_of(self, option: QuantOption) -> Fit:
        settings = self.bridge.settings
        return fit_on_machine(option.size, self.bridge.system, getattr(settings, "memory_budget", None),
                              getattr(settings, "free_memory_floor", None))

    def _mark_fits(self) -> None:
        for i, option in enumerate(self.options):
            item = self.quants.topLevelItem(i)
            fit = self.fit_of(option)
            item.setText(COL_FIT, fit.mark)
            item.setText(COL_WHY, fit.reason)
            if fit.fits is not None:
                item.setForeground(COL_FIT, theme.tone("success" if fit.fits else "warning", self.quants))
            font = item.font(COL_FIT)
            font.setBold(True)
            item.setFont(COL_FIT, font)

    def _on_system_changed(self) -> None:
        if shiboken6.isValid(self):
            self._mark_fits()

    def _on_quant_changed(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        option = self.current_option()
        if option is not None and self.repo and (not self._name_edited or not self.name_field.text().strip()):
            self.name_field.setText(option_name(self.repo, option))
            self._name_edited = False
        self._update_buttons()

    def _on_name_edited(self, _text: str) -> None:
        self._name_edited = True
        self._update_buttons()

    # ---- downloading ------------------------------------------------------------------------------

    def download(self) -> asyncio.Task[Any] | None:
        """Downloads the chosen quant under the name in the name field, and writes its recipe."""
        option = self.current_option()
        name = self.name_field.text().strip()
        if self.downloading or option is None or self.repo is None or not name:
            return None
        if not is_valid_name(name):
            self._show_message(f"<b>{html.escape(name)}</b> cannot be a model's name: use letters, digits, "
                               "'.', '_' and '-' only.", error=True)
            self.name_field.setFocus()
            return None
        repo = self.repo
        ref = f"{repo}/{option.files[0].name}"
        self.cancel_event = cancel = threading.Event()
        self.result = None
        self._samples.clear()
        self.message_label.hide()
        self.progress_status.setText(f"Downloading {repo} {option.tag} ({format_bytes(option.size)})...")
        self.progress_bar.setValue(0)
        self.progress_bar.setAccessibleName(f"Download progress of {name}")
        a11y.describe(self.progress_bar, self.progress_status.text())
        self.progress_label.setText("")
        for widget in (self.progress_status, self.progress_bar, self.progress_label):
            widget.show()

        async def run() -> PullResult:
            self.download_client = client = await self.bridge.hub_client()  # a token stored since is used
            return await self.bridge.pull_model(client, ref, name=name, cancel=cancel, progress=self._on_progress,
                                                status=self._on_status)

        task = self.bridge.run(run(), f"download {repo}", report=False)
        self.download_task = task
        task.add_done_callback(lambda t: self._downloaded(t, repo, name))
        self._update_buttons()
        self.cancel_button.setFocus()
        return task

    def _on_progress(self, done: int, total: int) -> None:
        if not shiboken6.isValid(self):
            return
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        speed = (done - d0) / (now - t0) if now - t0 >= 0.5 and done > d0 else None
        self.progress_bar.setValue(int(1000 * done / total) if total else 1000)
        self.progress_label.setText(progress_text(done, total, speed))
        a11y.describe(self.progress_bar, self.progress_label.text())

    def _on_status(self, line: str) -> None:
        if shiboken6.isValid(self) and not line.startswith("created "):
            self.progress_status.setText(line[:1].upper() + line[1:])
            if not self.progress_label.text():  # the byte count, once there, says more
                a11y.describe(self.progress_bar, self.progress_status.text())

    def cancel(self) -> None:
        """Stops the download; what has arrived is kept, and the next Download carries on."""
        if self.downloading and self.cancel_event is not None:
            self.cancel_event.set()
            self.progress_status.setText("Cancelling...")
            a11y.describe(self.progress_bar, "Cancelling...")
            self.cancel_button.setEnabled(False)

    def _downloaded(self, task: asyncio.Task[Any], repo: str, name: str) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if not shiboken6.isValid(self):
            return
        self.progress_status.hide()
        if exc is None:
            self.result = result = task.result()
            self.progress_bar.setValue(1000)
            url = f"{self.bridge.api_url}/v1" if self.bridge.api_url else "Siesta's API"
            done = "Downloaded" if result.created else "Already downloaded"
            self._show_message(f"<b>{done}.</b> Clients ask for it as <b>{html.escape(result.name)}</b>: "
                               f"<code>\"model\": \"{html.escape(result.name)}\"</code> at {html.escape(url)}. "
                               "It is in Siesta's menu now.")
        else:
            if not isinstance(exc, (HubError, OSError)):
                log.warning("downloading %s failed", repo, exc_info=exc)
            else:
                log.info("downloading %s: %s", repo, exc)
            kept = isinstance(exc, DownloadFailed)  # what has arrived is kept: show how much
            self.progress_bar.setVisible(kept)
            self.progress_label.setVisible(kept)
            self._show_message(error_html(exc, repo, name, self.download_client),
                               error=not isinstance(exc, DownloadCancelled))
        self._update_buttons()
        if isinstance(exc, RecipeExists):
            self.name_field.setFocus()
            self.name_field.selectAll()
        elif exc is not None:
            self.download_button.setFocus()
        else:
            self.close_button.setFocus()

    def _show_message(self, message: str, *, error: bool = False) -> None:
        self.message_label.setText(message)
        self.message_label.setStyleSheet(theme.text_style("error", self.message_label) if error else "")
        self.message_label.show()
        a11y.describe(self.progress_bar, message)
        a11y.announce(self.message_label, message, assertive=error)

    # ---- keys and closing -------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Enter acts where the focus is: the search field searches, the name field downloads
        # (both through returnPressed), the repository list moves on to the quants, the quant
        # list downloads; it never presses a button the focus is not on.
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            focus = self.focusWidget()
            if focus is self.results:
                self.quants.setFocus()
            elif focus is self.quants:
                self.download()
            if focus in (self.search_field, self.name_field, self.results, self.quants):
                event.accept()
                return
        super().keyPressEvent(event)

    def done(self, result: int) -> None:
        """Closing the dialog cancels a download (what has arrived is kept) and drops a search."""
        self.cancel()
        for task in (self.search_task, self.repo_task):
            if self._running(task):
                assert task is not None
                task.cancel()
        super().done(result)
