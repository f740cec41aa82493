"""The Models window's "Try it" panel: :class:`TryItPanel`.

Pick a model, write a prompt, Send (Ctrl+Enter): the panel posts a streaming chat to
Siesta's own front door (``POST {api_url}/v1/chat/completions`` with ``"stream": true``,
as any client would, so the model loads on demand and its idle countdown restarts) with
aiohttp on the shared qasync loop, and shows the answer as the server-sent events arrive
(``data: {...}`` lines, ``choices[0].delta.content``, until ``data: [DONE]``). Stop cancels
the request (the front door then stops the backend's generation). An error answer
(``{"error": {"message"}}``) is shown in plain words. Beside the model, its idle timeout
and, while it runs, the countdown to its unload. With ``api_key`` set, the request carries
``Authorization: Bearer``.

Alt+M the model, Alt+P the prompt, Alt+S sends, Alt+T stops, Alt+A the answer; the
prompt's and the answer's accessible names name the model, and the status line is the
status's accessible description (the outcome is announced to screen readers).

The panel talks HTTP only; it never imports the API layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.config.durations import format_countdown
from app.ui import a11y, text, theme
from app.ui.bridge import ManagerBridge

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


def timeout_text(snapshot: text.Snapshot | None, now: float) -> str:
    """``"unloads 5:00 after the last request"``, with the countdown while one runs."""
    if not snapshot:
        return ""
    timeout = snapshot.get("unload_timeout")
    words = "kept loaded (no idle timeout)" if timeout is None else \
        f"unloads {format_countdown(timeout)} after the last request"
    countdown = text.countdown_text(snapshot, now)
    if countdown:
        words += f"; idle, unloads in {countdown}"
    elif snapshot.get("state") == "ready" and snapshot.get("in_flight"):
        words += "; busy"
    elif snapshot.get("state") in ("unloaded", "failed"):
        words += "; not loaded now (the first request loads it)"
    return words


def error_text(status: int, body: str) -> str:
    """An error answer in plain words: its ``error.message``, else the status and body."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.strip()[:300] or "no details"
    return f"The server answered {status}: {message}"


class TryItPanel(QGroupBox):
    """A prompt box that chats with a model through Siesta's front door."""

    def __init__(self, bridge: ManagerBridge, parent: QWidget | None = None) -> None:
        super().__init__("Try it", parent)
        self.bridge = bridge
        self.setObjectName("try-it")
        self.task: asyncio.Task[Any] | None = None
        self.updates = 0  # how many times the answer grew during the last stream
        self._has_models: bool | None = None
        self._stopping = False

        self.model_combo = QComboBox()
        self.model_combo.setObjectName("try-it-model")
        self.model_combo.setAccessibleName("Model to try")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._on_model_changed())
        model_label = QLabel("&Model:")
        model_label.setBuddy(self.model_combo)
        self.timeout_label = QLabel()
        self.timeout_label.setObjectName("try-it-timeout")
        self.timeout_label.setStyleSheet(theme.text_style("hint", self.timeout_label))

        self.prompt = QPlainTextEdit()
        self.prompt.setObjectName("try-it-prompt")
        self.prompt.setPlaceholderText("Write a prompt, then Send (Ctrl+Enter)")
        self.prompt.setAccessibleName("Prompt")
        self.prompt.setTabChangesFocus(True)
        self.prompt.setMaximumHeight(self.prompt.fontMetrics().lineSpacing() * 4 + 12)
        prompt_label = QLabel("&Prompt:")
        prompt_label.setBuddy(self.prompt)
        self.send_button = QPushButton("&Send")
        self.send_button.setObjectName("try-it-send")
        self.send_button.setToolTip("Send the prompt to the model (Ctrl+Enter)")
        self.send_button.clicked.connect(lambda: self.send())
        self.stop_button = QPushButton("S&top")
        self.stop_button.setObjectName("try-it-stop")
        self.stop_button.setToolTip("Stop the answer")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, lambda: self.send())

        self.answer = QPlainTextEdit()
        self.answer.setObjectName("try-it-answer")
        self.answer.setReadOnly(True)
        self.answer.setAccessibleName("Answer")
        self.answer.setTabChangesFocus(True)
        self.answer.setPlaceholderText("The answer appears here as it is written")
        self.answer.setMinimumHeight(self.answer.fontMetrics().lineSpacing() * 4 + 12)
        answer_label = QLabel("&Answer:")
        answer_label.setBuddy(self.answer)
        self.status_label = a11y.StatusLabel("Try it status", "try-it-status")
        self.status_label.setWordWrap(True)

        # labels | fields | the buttons beside the prompt; Tab follows: model, prompt, Send, Stop, answer
        top = QHBoxLayout()
        top.addWidget(self.model_combo)
        top.addWidget(self.timeout_label, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        grid = QGridLayout(self)
        top_left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
        grid.addWidget(model_label, 0, 0)
        grid.addLayout(top, 0, 1, 1, 2)
        grid.addWidget(prompt_label, 1, 0, top_left)
        grid.addWidget(self.prompt, 1, 1)
        grid.addLayout(buttons, 1, 2)
        grid.addWidget(answer_label, 2, 0, top_left)
        grid.addWidget(self.answer, 2, 1, 1, 2)
        grid.addWidget(self.status_label, 3, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(2, 1)
        a11y.set_tab_order([self.model_combo, self.prompt, self.send_button, self.stop_button, self.answer])

        bridge.modelEvent.connect(self._on_event)  # a bound slot: disconnected when the panel goes
        self.refresh()

    # ---- the model list and its timeout -------------------------------------------------------

    def refresh(self) -> None:
        names = [s["name"] for s in self.bridge.snapshots() if text.has_usable_recipe(s)]
        current = [self.model_combo.itemText(i) for i in range(self.model_combo.count())]
        if bool(names) != self._has_models:
            self._has_models = bool(names)
            self.setHidden(not names)  # nothing to try before the first recipe
        if names != current:
            chosen = self.model_combo.currentText()
            self.model_combo.blockSignals(True)
            self.model_combo.clear()
            self.model_combo.addItems(names)
            if chosen in names:
                self.model_combo.setCurrentIndex(names.index(chosen))
            self.model_combo.blockSignals(False)
        self._update_buttons()
        self._on_model_changed()

    def _on_event(self, _event: dict[str, Any]) -> None:
        self.refresh()

    def _on_model_changed(self) -> None:
        model = self.model_combo.currentText()
        self.prompt.setAccessibleName(f"Prompt for {model}" if model else "Prompt")
        self.answer.setAccessibleName(f"Answer from {model}" if model else "Answer")
        self._update_timeout()

    def _update_timeout(self) -> None:
        words = timeout_text(self.bridge.snapshot(self.model_combo.currentText()), self.bridge.now())
        if self.timeout_label.text() != words:
            self.timeout_label.setText(words)

    def _update_buttons(self) -> None:
        running = self.running
        self.send_button.setEnabled(not running and self.model_combo.count() > 0 and bool(self.bridge.api_url))
        self.stop_button.setEnabled(running)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    # ---- sending ------------------------------------------------------------------------------

    def send(self, model: str | None = None) -> asyncio.Task[Any] | None:
        """Sends the prompt to ``model`` (the chosen one by default); returns the task."""
        model = model or self.model_combo.currentText()
        prompt = self.prompt.toPlainText().strip()
        if self.running or not model or not self.bridge.api_url or self.bridge.closing:
            return None
        if not prompt:
            self._status("Write a prompt first.", final=True)
            return None
        self.answer.clear()
        self.updates = 0
        self._status(f"Asking {model}... (it loads first if it is not loaded)")
        self.task = self.bridge.run(self._chat(model, prompt), f"try {model}", report=False)
        self.task.add_done_callback(self._finished)
        self._update_buttons()
        return self.task

    def stop(self) -> None:
        if self.running:
            assert self.task is not None
            self._stopping = True  # also read between chunks, should a library swallow the cancel
            self.task.cancel()

    def _status(self, message: str, *, error: bool = False, final: bool = False) -> None:
        """Shows what is going on (an error in the theme's error colour); how a request
        ended (``final``) is also announced to screen readers."""
        self.status_label.setText(message)
        self.status_label.set_tone("error" if error else None)
        if final:
            a11y.announce(self.status_label, message, assertive=error)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        stopped, self._stopping = self._stopping, False
        if task.cancelled() or stopped:
            self._status("Stopped.", final=True)
        else:
            exc = task.exception()
            if isinstance(exc, aiohttp.ClientError | OSError | asyncio.TimeoutError):
                self._status(f"Could not reach Siesta at {self.bridge.api_url}: {exc or type(exc).__name__}",
                             error=True, final=True)
            elif exc is not None:
                log.warning("Try it failed", exc_info=(type(exc), exc, exc.__traceback__))
                self._status(f"Failed: {exc}", error=True, final=True)
        self._update_buttons()

    async def _chat(self, model: str, prompt: str) -> None:
        url = f"{self.bridge.api_url}/v1/chat/completions"
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}
        headers = {"Accept": "text/event-stream"}
        key = getattr(self.bridge.settings, "api_key", None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json=body, headers=headers) as resp:
                if resp.status >= 400:
                    self._status(error_text(resp.status, await resp.text()), error=True, final=True)
                    return
                done = await self._read_events(resp)
        self._status("Done." if done else "The answer ended early.", final=True)

    async def _read_events(self, resp: aiohttp.ClientResponse) -> bool:
        """Shows each ``data:`` chunk's text as it comes; True at ``data: [DONE]``."""
        async for raw in resp.content:
            if self._stopping:
                return False
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return True
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict) and chunk.get("error"):
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                self._status(f"The model stopped with an error: {message}", error=True, final=True)
                return False
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    self._append(delta)
        return False

    def _append(self, piece: str) -> None:
        self.answer.moveCursor(self.answer.textCursor().MoveOperation.End)
        self.answer.insertPlainText(piece)
        self.answer.ensureCursorVisible()
        self.updates += 1
        if self.updates == 1:
            self._status("Answering...")

    # ---- ticking only while visible -------------------------------------------------------------

    def tick(self) -> None:
        """The window's once-a-second tick: the chosen model's countdown (the panel has no
        timer of its own; one tick per window costs less than two)."""
        self._update_timeout()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh()
