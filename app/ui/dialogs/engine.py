""""Install llama-server...": llama.cpp's prebuilt release (the default: ``bridge.install_engine``
in a thread, ``--backend auto``, Cancel sets its cancel event) or a build from source.

The build is ``python -m app.core.engine.build --dest DIR --gpu X`` run as a subprocess
(:class:`BuildProcess`) in its own process group, so Cancel, closing the dialog or
quitting Siesta stops it together with the cmake, make and compilers it started: first
SIGINT (the builder removes its work folder), then SIGKILL after a grace period. Its
stderr lines ``[ 42%] text`` move the progress bar; its last stdout line is the binary.

Builds: CPU and the GPUs whose toolkit is installed (the others greyed out). Models load
with the new llama-server at once (unless a ``llama_server`` setting names another).

Every choice and button has its Alt+letter; the progress bar's accessible description is
the current step, and the outcome is announced to screen readers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QFontDatabase
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.core.spawn import child_options
from app.ui import a11y, icons, text, theme
from app.ui.bridge import ManagerBridge

log = logging.getLogger(__name__)

STOP_GRACE = 3.0  # seconds between SIGINT and SIGKILL when a build is stopped
TAIL_LINES = 40
STREAM_LIMIT = 1024 * 1024

GPU_LABELS = {"cpu": "CPU: works on every computer", "cuda": "CUDA (NVIDIA)", "vulkan": "Vulkan (most GPUs)",
              "rocm": "ROCm (AMD)"}
GPU_KEYS = {"cpu": "P", "cuda": "U", "vulkan": "V", "rocm": "R"}  # Alt+letter: C, D, B, L, T are the buttons'
TOOLKIT_PROGRAMS = {"cuda": "nvcc", "vulkan": "glslc", "rocm": "hipcc"}

Command = Callable[[Path, str], Sequence[str]]


def with_mnemonic(label: str, key: str | None) -> str:
    """``label`` with ``&`` before the first ``key`` in it (Alt+key picks it)."""
    at = label.find(key) if key else -1
    return label if at < 0 else f"{label[:at]}&{label[at:]}"


class BuildFailed(Exception):
    """The build ended with an error; the message is its last words."""


class BuildProcess:
    """One run of the builder, in a process group of its own."""

    def __init__(self, argv: Sequence[str], on_progress: Callable[[int, str], None],
                 env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self.on_progress = on_progress
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.stdout = ""
        self.stopped = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def run(self) -> int:
        """Runs the build to its end; returns its exit code."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env, limit=STREAM_LIMIT,
            **child_options(own_session=True))
        try:
            out, _ = await asyncio.gather(self._stdout(), self._stderr())
            self.stdout = out
            return await self.proc.wait()
        finally:
            if self.proc.returncode is None:  # cancelled: leave nothing running
                await self.stop()

    async def _stdout(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        return (await self.proc.stdout.read()).decode("utf-8", "replace")

    async def _stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            progress = text.build_progress(line)
            if progress is not None:
                self.on_progress(*progress)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stops the build and everything it started: SIGINT, then SIGKILL after ``grace``."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is not None:
            return  # it ended by itself, after waiting for everything it started
        self.stopped = True
        self._signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        except asyncio.TimeoutError:
            log.info("the llama-server build did not stop on SIGINT; killing it")
        self._signal(signal.SIGKILL)  # the builder and anything of its group still running
        await proc.wait()

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            if os.name == "posix":
                os.killpg(self.proc.pid, sig)
            elif self.proc.returncode is None:
                self.proc.kill()
        except (ProcessLookupError, PermissionError):
            pass


class InstallEngineDialog(QDialog):
    """Builds and installs llama-server; Cancel (or Esc, or closing it) stops the build.

    ``command(dest, gpu)`` gives the builder's command line (the bridge's real one by
    default; tests pass a fake), ``toolkits`` the GPU toolkits found (detected when None).
    """

    def __init__(self, bridge: ManagerBridge, *, command: Command | None = None,
                 toolkits: Sequence[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.command = command or bridge.engine_build_command
        self.dest = bridge.engine_dir
        self.setWindowTitle("Install llama-server — Siesta")
        self.setWindowIcon(icons.app_icon())
        self.setObjectName("install-engine-dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.build: BuildProcess | None = None
        self.task: asyncio.Task[Any] | None = None
        self.stop_task: asyncio.Task[Any] | None = None
        self.installed: Path | None = None
        self.cancel_event: threading.Event | None = None  # set while a prebuilt install runs
        found = list(bridge.gpu_toolkits() if toolkits is None else toolkits)
        self.available = {"cpu", *found}

        self.intro_label = intro = QLabel(
            "Siesta runs GGUF models with llama.cpp's <b>llama-server</b>. <b>Download prebuilt</b> installs "
            "llama.cpp's official build for this computer's GPU (verified; nothing to compile). <b>Build from "
            "source</b> downloads llama.cpp's source (inside the llama-cpp-python package, from PyPI), builds "
            f"llama-server for the target below and installs it in<br><code>{self.dest}</code><br>"
            "A build takes about 10 minutes on two cores and needs cmake and a C++ compiler.")
        intro.setWordWrap(True)
        intro.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning_label = QLabel()
        self.warning_label.setObjectName("warning")
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(theme.text_style("error", self.warning_label))
        warnings = []
        missing = bridge.build_tools_missing()
        if missing:
            warnings.append(f"Not found on this computer: {' and '.join(missing)}. Install them first "
                            "(Debian, Ubuntu: <code>sudo apt install cmake g++</code>), or the build will fail.")
        status = bridge.engine_status()
        if status.configured_by:
            warnings.append(f"Siesta is set to use {status.path} (by {status.configured_by}). To use the "
                            "llama-server installed here, remove that setting and restart Siesta.")
        self.warning_label.setText("<br>".join(warnings))
        self.warning_label.setVisible(bool(warnings))

        gpu_box = QGroupBox("Build for")
        gpu_layout = QVBoxLayout(gpu_box)
        self.gpu_group = QButtonGroup(self)
        self.gpu_buttons: dict[str, QRadioButton] = {}
        for name in bridge.gpu_choices():
            label = GPU_LABELS.get(name, name)
            available = name in self.available
            if name != "cpu":
                program = TOOLKIT_PROGRAMS.get(name, name)
                label += ": toolkit found" if available else f": its toolkit ({program}) is not installed"
            button = QRadioButton(with_mnemonic(label, GPU_KEYS.get(name)))
            button.setObjectName(f"gpu-{name}")
            button.setEnabled(available)
            self.gpu_group.addButton(button)
            self.gpu_buttons[name] = button
            gpu_layout.addWidget(button)
        self.gpu_buttons["cpu"].setChecked(True)
        names = [GPU_LABELS.get(t, t).split(" ")[0] for t in found]
        self.toolkits_label = QLabel(
            f"GPU toolkits found: {', '.join(names)}. CPU is chosen; pick one to build for your GPU." if found
            else "No GPU toolkit found (CUDA, Vulkan or ROCm): llama-server will run on the CPU.")
        self.toolkits_label.setObjectName("toolkits")
        self.toolkits_label.setWordWrap(True)
        gpu_layout.addWidget(self.toolkits_label)

        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progress")
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setAccessibleName("Progress of the llama-server install")
        self.progress_bar.hide()
        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log_view = QPlainTextEdit(readOnly=True, objectName="log")
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setMinimumHeight(140)
        self.log_view.setAccessibleName("Log of the failed llama-server build")
        self.log_view.hide()
        self.log_label = QLabel("Build &log:")
        self.log_label.setBuddy(self.log_view)
        self.log_label.hide()

        # Buttons in a row of our own: QDialogButtonBox orders them by the desktop's
        # convention but leaves Tab in the order they were added.
        self.download_button = QPushButton("&Download prebuilt", objectName="download", default=True)
        self.download_button.clicked.connect(self.start_prebuilt)
        self.install_button = QPushButton("&Build from source", objectName="install")
        self.install_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("&Cancel", objectName="cancel")
        self.cancel_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.download_button, self.install_button, self.cancel_button):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        for widget in (intro, self.warning_label, gpu_box, self.progress_bar, self.status_label, self.log_label):
            layout.addWidget(widget)
        layout.addWidget(self.log_view, 1)
        layout.addLayout(buttons)
        a11y.set_tab_order([*self.gpu_buttons.values(), self.log_view, self.download_button, self.install_button,
                            self.cancel_button])
        self.resize(600, 0)

    # ---- building -------------------------------------------------------------------------------

    @property
    def gpu(self) -> str:
        return next(name for name, button in self.gpu_buttons.items() if button.isChecked())

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> asyncio.Task[Any] | None:
        """Starts the build for the chosen target."""
        if self.running or self.stopping:
            return None
        argv = list(self.command(self.dest, self.gpu))
        self.build = BuildProcess(argv, self._on_progress, env=self.bridge.engine_build_env())
        self.cancel_event = None
        return self._begin(self._run(self.build), "Starting the build...")

    def start_prebuilt(self) -> asyncio.Task[Any] | None:
        """Downloads and installs llama.cpp's prebuilt llama-server for this computer."""
        if self.running or self.stopping:
            return None
        self.build = None
        self.cancel_event = threading.Event()
        return self._begin(self._run_prebuilt(self.cancel_event), "Asking llama.cpp's releases for a build...")

    def _begin(self, coro: Any, status: str) -> asyncio.Task[Any]:
        self.installed = None
        self.progress_bar.setValue(0)
        self.progress_bar.setAccessibleName("Progress of the llama-server build" if self.build else
                                            "Progress of the llama-server download")
        a11y.describe(self.progress_bar, status)
        self.progress_bar.show()
        self.log_label.hide()
        self.log_view.hide()
        self.status_label.setStyleSheet("")
        self.status_label.setText(status)
        for button in (self.install_button, self.download_button, *self.gpu_buttons.values()):
            button.setEnabled(False)
        self.task = self.bridge.run(coro, "install llama-server", report=False)
        self.task.add_done_callback(self._finished)
        return self.task

    async def _run_prebuilt(self, cancel: threading.Event) -> tuple[Path, str]:
        loop = asyncio.get_running_loop()

        def progress(done: int, total: int, what: str) -> None:
            loop.call_soon_threadsafe(self._on_progress, done * 100 // max(total, 1), f"Downloading {what}")

        result = await self.bridge.install_engine(cancel=cancel, progress=progress)
        e = result.engine
        return e.binary, f"{e.version} (llama.cpp {e.tag}, {e.backend}: {result.reason})"

    async def _run(self, build: BuildProcess) -> tuple[Path, str]:
        code = await build.run()
        if code != 0 or build.stopped:
            lines = [line for line in build.tail if text.build_progress(line) is None] or list(build.tail)
            raise BuildFailed("\n".join(lines[-TAIL_LINES:]) or f"the builder exited with code {code}")
        printed = [line.strip() for line in build.stdout.splitlines() if line.strip()]
        binary = Path(printed[-1]) if printed else self.dest / "llama-server"
        version = await self.bridge.engine_version(binary)
        await self.bridge.use_source_build()  # the source build takes over
        return binary, version

    def _on_progress(self, pct: int, message: str) -> None:
        if shiboken6.isValid(self):
            self.progress_bar.setValue(pct)
            self.status_label.setText(message)
            a11y.describe(self.progress_bar, message)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if not shiboken6.isValid(self) or self.stopping:
            return
        if (self.build is not None and self.build.stopped) or (self.cancel_event and self.cancel_event.is_set()):
            self._outcome("The build was stopped." if self.build else "The download was stopped.")
            return
        if exc is not None and self.cancel_event is not None:  # the prebuilt install
            self._outcome(f"The download failed: {exc}<br>You can build from source instead: pick "
                          "a target and click Build from source.", error=True)
            self._ready_again()
            return
        if exc is not None:
            if not isinstance(exc, (BuildFailed, OSError)):
                log.error("the llama-server build failed", exc_info=exc)
            detail = str(exc)
            last = detail.strip().splitlines()[-1] if detail.strip() else "unknown error"
            self.log_view.setPlainText(detail)
            self.log_label.show()
            self.log_view.show()
            self._outcome(f"The build failed: {last}<br>The whole log is in "
                          f"<code>{self.dest / 'build.log'}</code>.", error=True)
            self.install_button.setText("&Try again")
            self._ready_again()
            return
        binary, version = task.result()
        self.installed = binary
        self.progress_bar.setValue(100)
        message = f"llama-server {version} is installed:<br><code>{binary}</code>"
        status = self.bridge.engine_status()
        if status.usable and status.path == binary:
            message += "<br>Models load with it from now on."
        elif status.usable:
            message += f"<br>Siesta uses {status.path} (by {status.configured_by or 'search order'}) instead."
        else:
            message += (f"<br>Siesta is still set to use {status.path} (by {status.configured_by}): remove that "
                        "setting and restart Siesta to use this one.")
        self._outcome(message)
        self.install_button.hide()
        self.download_button.hide()
        self.cancel_button.setText("&Close")
        self.bridge.engine_changed()

    def _outcome(self, message: str, *, error: bool = False) -> None:
        """Shows how the install ended (an error in the theme's error colour) and tells screen readers."""
        self.status_label.setText(message)
        self.status_label.setStyleSheet(theme.text_style("error", self.status_label) if error else "")
        a11y.describe(self.progress_bar, message)
        a11y.announce(self.status_label, message, assertive=error)

    def _ready_again(self) -> None:
        for name, button in {"source": self.install_button, "prebuilt": self.download_button,
                             **self.gpu_buttons}.items():
            button.setEnabled(name in self.available or name in ("source", "prebuilt"))

    # ---- stopping ------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_task is not None and not self.stop_task.done()

    async def stop_build(self) -> None:
        """Stops a running build and waits until it and its children are gone."""
        if self.cancel_event is not None:
            self.cancel_event.set()
        if self.build is not None:
            await self.build.stop()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    def reject(self) -> None:
        if self.stopping:
            return
        if not self.running:
            super().reject()
            return
        self.status_label.setText("Stopping the build..." if self.build else "Stopping the download...")
        a11y.describe(self.progress_bar, self.status_label.text())
        self.cancel_button.setEnabled(False)
        self.stop_task = self.bridge.run(self.stop_build(), "stop the llama-server build", report=False)
        self.stop_task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("stopping the llama-server build failed", exc_info=task.exception())
        if shiboken6.isValid(self):
            super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.running or self.stopping:
            event.ignore()
            self.reject()
            return
        super().closeEvent(event)
