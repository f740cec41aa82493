"""The desktop app: :func:`run_tray_app` runs the model manager, its HTTP front door and
the tray on one qasync event loop, in one process.

Start-up: a QApplication, the single-instance check (a second launch for the same config
dir shows the first one's window and exits; during start-up, once the tray or window
exists), the port's lock (:func:`app.runtime.hold_port`: any other Siesta on the port, a
``siesta serve`` or a tray app of another config dir, and this one says so and exits 1), then
``asyncio.Runner(loop_factory=SiestaEventLoop)`` (qasync's loop) runs :meth:`SiestaApp.run`,
which starts the manager and the API, builds the tray icon (or, without a system tray,
the Models window) and awaits a quit future. Quit, SIGINT and
SIGTERM all resolve that future; the shutdown that follows unloads every model, so no
child process outlives Siesta.

``siesta --connect URL`` runs the same app with no manager or front door of its own: the
bridge is built on a :class:`~app.core.client.ManagerClient` of the Siesta at URL,
the menus and dialogs act on it, and Quit leaves its models as they are.

Nothing raised in a callback is lost: the loop's exception handler and ``sys.excepthook``
(which PySide6 calls for exceptions in slots) log it, to stderr and to
``<log dir>/app/siesta.log``, and tell the user through the tray.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import queue
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shiboken6
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon, QWidget

from app import __version__
from app.core.client import ManagerClient
from app.core.config.endpoint import Endpoint
from app.core.config.paths import Paths
from app.core.config.settings import LoadedSettings
from app.core.manager import ModelManager
from app.runtime import ManagerFactory, PortInUse, SiestaRuntime, hold_port
from app.ui import icons
from app.ui.bridge import ManagerBridge
from app.ui.event_loop import SiestaEventLoop
from app.ui.platform.single_instance import SingleInstance, instance_name
from app.ui.tray.menu import TrayMenu

if TYPE_CHECKING:
    # The windows and dialogs are imported when first opened: a tray app with its menu
    # closed never pays for them (with the Hub's modules and httpx, about 11 MB and 0.1 s).
    from app.ui.dialogs.discover import DiscoverDialog
    from app.ui.dialogs.download import DownloadDialog
    from app.ui.dialogs.engine import InstallEngineDialog
    from app.ui.dialogs.import_config import ImportDialog
    from app.ui.dialogs.model_settings import ModelSettingsDialog
    from app.ui.dialogs.settings import SettingsDialog
    from app.ui.windows.log_viewer import LogViewer
    from app.ui.windows.models import ModelsWindow

log = logging.getLogger("siesta.ui")

TRAY_PROBE_MS = 3000  # while the fallback window is open: has a tray appeared since?
EXIT_PORT_IN_USE = 1


def run_tray_app(paths: Paths, settings: LoadedSettings | None, *, connect: Endpoint | None = None) -> int:
    """``siesta`` with no sub-command: runs the desktop app until Quit; returns the exit code.
    With ``connect`` (``--connect URL``), as a client of that Siesta (``settings`` unused)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Siesta")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("io.github.siesta.Siesta")  # matches packaging/io.github.siesta.Siesta.desktop
    app.setQuitOnLastWindowClosed(False)  # the tray app quits only through request_quit
    app.setWindowIcon(icons.app_icon())

    url = connect.base_url if connect is not None else None
    instance = SingleInstance(instance_name(paths.config_dir, url))
    if not instance.acquire():
        what = url or paths.config_dir
        if instance.ask_running_to_show():
            print(f"siesta: already running for {what}; showed its window", file=sys.stderr)
            return 0
        print(f"siesta: another Siesta holds the lock for {what} but does not answer", file=sys.stderr)
        return 1
    try:  # the Qt lock above only finds a tray of this config dir; this finds any Siesta on the port
        port_lock = hold_port(paths, settings, "tray") if settings is not None else None
    except PortInUse as exc:
        instance.release()
        print(f"siesta: {exc}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    # A client's own log: not the file the local Siesta (maybe running too) rotates.
    file_log = _log_to_file(paths, f"connect-{instance.name}.log" if url else "siesta.log")
    siesta = SiestaApp(paths, settings, instance, connect=connect)
    previous_hook = sys.excepthook
    sys.excepthook = siesta.excepthook
    try:
        with asyncio.Runner(loop_factory=lambda: SiestaEventLoop(app)) as runner:
            runner.get_loop().set_exception_handler(siesta.loop_exception_handler)
            try:
                return runner.run(siesta.run())
            except RuntimeError:
                if siesta.main_task is None or siesta.main_task.done():
                    raise
                # Qt's own loop ended under us (app.quit() from elsewhere, e.g. the
                # session manager): finish the shutdown so no model is left running.
                log.info("the Qt event loop was told to quit; shutting down")
                siesta.request_quit()
                return runner.run(siesta.wait_finished())
    finally:
        sys.excepthook = previous_hook
        instance.release()
        if port_lock is not None:
            port_lock.release()
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()


def _bring_up(widget: QWidget) -> None:
    widget.show()
    widget.raise_()
    widget.activateWindow()


def _log_to_file(paths: Paths, file_name: str = "siesta.log") -> logging.Handler | None:
    """A small rotating log of the app itself, beside the model logs (for a tray app
    started at login, stderr goes nowhere anyone reads)."""
    try:
        folder = paths.log_dir / "app"
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(folder / file_name, maxBytes=1_000_000, backupCount=2,
                                                       encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write the app log: %s", exc)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    off_the_loop = _WrittenByItsOwnThread(handler)
    root = logging.getLogger()
    root.addHandler(off_the_loop)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return off_the_loop


class _WrittenByItsOwnThread(logging.handlers.QueueHandler):
    """Hands each record to a thread of its own that writes it with ``target``: most records
    come from the loop's thread, which must never wait for the disk. Closing it writes what
    is still queued, then closes ``target``."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(queue.SimpleQueue())
        self.target = target
        self._listener: logging.handlers.QueueListener | None = logging.handlers.QueueListener(self.queue, target)
        self._listener.start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
            self.target.close()
        super().close()


class SiestaApp:
    """Owns the runtime (manager and front door), or for ``connect`` the client of a Siesta
    elsewhere, and the windows for one run of the desktop app. For a Siesta elsewhere, the
    windows that act on this machine only (Find models, Download, Import, Install
    llama-server, a model's log and settings) are never opened."""

    def __init__(self, paths: Paths, settings: LoadedSettings | None, instance: SingleInstance | None = None, *,
                 tray_available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable,
                 manager_factory: ManagerFactory = ModelManager, connect: Endpoint | None = None) -> None:
        self.paths = paths
        self.loaded_settings = settings
        self.instance = instance
        self._tray_available = tray_available
        self._manager_factory = manager_factory
        self.connect = connect
        self.client: ManagerClient | None = None
        self.runtime: SiestaRuntime | None = None
        self.bridge: ManagerBridge | None = None
        self.tray: TrayMenu | None = None
        self.window: ModelsWindow | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.discover_dialog: DiscoverDialog | None = None
        self.download_dialog: DownloadDialog | None = None
        self.import_dialog: ImportDialog | None = None
        self.install_dialog: InstallEngineDialog | None = None
        self.log_viewers: dict[str, LogViewer] = {}  # one per model, brought up again if open
        self.model_settings_dialogs: dict[str, ModelSettingsDialog] = {}  # one per model, likewise
        self.main_task: asyncio.Task[Any] | None = None
        self.started = asyncio.Event()
        self.errors: list[str] = []
        self._quit: asyncio.Future[None] | None = None
        self._finished = asyncio.Event()
        self._tray_probe: QTimer | None = None
        self._signals: list[int] = []

    # ---- the Shell protocol (what the tray and the window ask for) -----------------------------------

    @property
    def manager(self) -> ModelManager | ManagerClient | None:
        if self.client is not None:
            return self.client
        return self.runtime.manager if self.runtime is not None else None

    @property
    def has_tray(self) -> bool:
        return self.tray is not None

    def request_quit(self) -> None:
        if self._quit is not None and not self._quit.done():
            self._quit.set_result(None)

    def show_models_window(self) -> None:
        if self.bridge is None:
            return
        log.debug("showing the Models window")
        if self.window is None:
            from app.ui.windows.models import ModelsWindow

            self.window = ModelsWindow(self.bridge, self)
            if not self.has_tray:
                self._start_tray_probe()
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()

    def show_settings(self) -> None:
        if self.bridge is None:
            return
        dialog = self.settings_dialog
        if dialog is None or not shiboken6.isValid(dialog):
            from app.ui.dialogs.settings import SettingsDialog

            dialog = self.settings_dialog = SettingsDialog(self.bridge, shell=self)
        _bring_up(dialog)

    def show_discover(self) -> None:
        if self.bridge is None or not self.bridge.is_local:
            return
        dialog = self.discover_dialog
        if dialog is None or not shiboken6.isValid(dialog):
            from app.ui.dialogs.discover import DiscoverDialog

            dialog = self.discover_dialog = DiscoverDialog(self.bridge)
        _bring_up(dialog)

    def show_download(self) -> None:
        if self.bridge is None or not self.bridge.is_local:
            return
        dialog = self.download_dialog
        if dialog is None or not shiboken6.isValid(dialog):
            from app.ui.dialogs.download import DownloadDialog

            dialog = self.download_dialog = DownloadDialog(self.bridge)
        _bring_up(dialog)

    def show_import(self) -> None:
        if self.bridge is None or not self.bridge.is_local:
            return
        dialog = self.import_dialog
        if dialog is not None and shiboken6.isValid(dialog) and dialog.importing:
            _bring_up(dialog)  # one import at a time
            return
        from app.ui.dialogs.import_config import choose_config

        choose_config(self.bridge, self._import_chosen)

    def _import_chosen(self, path: Path) -> None:
        if self.bridge is None or self.bridge.closing:
            return
        old = self.import_dialog
        if old is not None and shiboken6.isValid(old) and not old.importing:
            old.close()
        from app.ui.dialogs.import_config import ImportDialog

        self.import_dialog = ImportDialog(self.bridge, path)
        _bring_up(self.import_dialog)

    def show_install_engine(self) -> None:
        if self.bridge is None or not self.bridge.is_local:
            return
        dialog = self.install_dialog
        if dialog is None or not shiboken6.isValid(dialog):
            from app.ui.dialogs.engine import InstallEngineDialog

            dialog = self.install_dialog = InstallEngineDialog(self.bridge)
        _bring_up(dialog)

    def show_log(self, name: str) -> None:
        if self.bridge is None or not self.bridge.is_local:
            return
        viewer = self.log_viewers.get(name)
        if viewer is None or not shiboken6.isValid(viewer):
            from app.ui.windows.log_viewer import LogViewer

            viewer = self.log_viewers[name] = LogViewer(self.bridge, name)
        _bring_up(viewer)

    def show_model_settings(self, name: str) -> None:
        if self.bridge is None or not self.bridge.is_local:
            return
        dialog = self.model_settings_dialogs.get(name)
        if dialog is None or not shiboken6.isValid(dialog):
            from app.ui.dialogs.model_settings import ModelSettingsDialog

            dialog = self.model_settings_dialogs[name] = ModelSettingsDialog(self.bridge, name)
        _bring_up(dialog)

    # ---- running ------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Starts everything, waits for Quit, then shuts everything down; returns the exit code."""
        loop = asyncio.get_running_loop()
        self.main_task = asyncio.current_task()
        self._quit = loop.create_future()
        self._install_signal_handlers(loop)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.request_quit)
        try:
            if self.connect is not None:
                await self._start_client(self.connect)
            elif not await self._start_runtime():
                return EXIT_PORT_IN_USE
            self._build_ui()
            log.info("Siesta %s: %s", __version__,
                     "tray icon" if self.has_tray else "no system tray: showing the Models window")
            self.started.set()
            await self._quit
            return 0
        finally:
            await self._shutdown()
            self._remove_signal_handlers(loop)
            if app is not None:
                app.aboutToQuit.disconnect(self.request_quit)
            self._finished.set()

    async def _start_runtime(self) -> bool:
        """This machine's manager and front door; False (after saying why) when the port is taken."""
        assert self.loaded_settings is not None
        runtime = SiestaRuntime(self.paths, self.loaded_settings, manager_factory=self._manager_factory)
        try:
            await runtime.start()
        except PortInUse as exc:
            log.error("%s", exc)
            await self._show_fatal(f"Siesta cannot start: {exc}")
            return False
        self.runtime = runtime
        assert runtime.manager is not None
        self.bridge = ManagerBridge(runtime.manager)
        # The URL as bound now; a host or port changed in Settings applies at the next start.
        self.bridge.api_url = runtime.url
        return True

    async def _start_client(self, endpoint: Endpoint) -> None:
        """A client of the Siesta elsewhere; one that cannot be reached yet is shown so and retried."""
        client = self.client = ManagerClient(endpoint.base_url, endpoint.api_key)
        await client.start()
        log.info("a client of Siesta at %s (%s)", client.url, client.connection.state)
        self.bridge = ManagerBridge(client)
        self.bridge.api_url = client.url

    async def wait_finished(self) -> int:
        await self._finished.wait()
        return 0

    def _build_ui(self) -> None:
        assert self.bridge is not None
        if self.instance is not None:
            self.instance.showRequested.connect(self._on_second_launch)
        if self._tray_available():
            self._make_tray()
        else:
            self.show_models_window()
        if self.instance is not None:
            self.instance.deliver_requests()  # and a launch during start-up is answered now

    def _on_second_launch(self) -> None:
        log.info("another `siesta` was started: showing the Models window")
        self.show_models_window()

    def _make_tray(self) -> None:
        assert self.bridge is not None
        self.tray = TrayMenu(self.bridge, self)
        self.tray.show()

    def _start_tray_probe(self) -> None:
        """Without a tray, the window is always open; check now and then whether a tray
        has started since (at login a panel can come up after the apps it hosts)."""
        if self._tray_probe is None:
            self._tray_probe = QTimer()
            self._tray_probe.setInterval(TRAY_PROBE_MS)
            self._tray_probe.timeout.connect(self._probe_tray)
        self._tray_probe.start()

    def _probe_tray(self) -> None:
        if self.has_tray or self.window is None or not self.window.isVisible():
            if self._tray_probe is not None:
                self._tray_probe.stop()
            return
        if self._tray_available():
            log.info("a system tray appeared; adding the tray icon")
            self._make_tray()
            if self._tray_probe is not None:
                self._tray_probe.stop()

    async def _show_fatal(self, message: str) -> None:
        """A critical message box, shown without a nested event loop; returns once dismissed."""
        self.errors.append(message)
        box = QMessageBox(QMessageBox.Icon.Critical, "Siesta", message)
        box.setObjectName("fatal-error")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box.finished.connect(lambda _r: done.done() or done.set_result(None))
        box.open()
        waiter = asyncio.ensure_future(self._quit) if self._quit is not None else None
        try:
            await asyncio.wait([done] + ([waiter] if waiter else []), return_when=asyncio.FIRST_COMPLETED)
        finally:
            box.deleteLater()

    async def _shutdown(self) -> None:
        if self._tray_probe is not None:
            self._tray_probe.stop()
        if self.bridge is not None:
            self.bridge.closing = True
        if self.tray is not None:
            self.tray.icon.setToolTip("Siesta: quitting" if self.client is not None
                                      else "Siesta: quitting, unloading every model...")
            self.tray.menu.setEnabled(False)
            self.tray.menu.hide()
        dialog = self.settings_dialog
        if dialog is not None and shiboken6.isValid(dialog):
            dialog.reject()  # unsaved edits are discarded, as with Cancel
        install = self.install_dialog
        stopping_build: asyncio.Future[Any] | None = None
        if install is not None and shiboken6.isValid(install):
            stopping_build = asyncio.ensure_future(install.stop_build())  # no build outlives Siesta
        for other in (self.discover_dialog, self.import_dialog):
            if other is not None and shiboken6.isValid(other):
                other.reject()  # a scan still running is dropped (its thread ends on its own)
                other.hide()
        if self.window is not None:
            self.window.ticker.stop()
            self.window.hide()
        try:
            if self.runtime is not None:
                await self.runtime.stop()
            if self.client is not None:
                await self.client.close()  # the models there stay as they are
        finally:
            if stopping_build is not None:
                for result in await asyncio.gather(stopping_build, return_exceptions=True):
                    if isinstance(result, BaseException):
                        log.error("stopping the llama-server build failed: %s", result)
                if install is not None and shiboken6.isValid(install):
                    install.close()
            if self.bridge is not None:
                await self.bridge.close()
            if self.tray is not None:
                self.tray.hide()
            if self.window is not None:
                self.window.deleteLater()

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.request_quit)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without it

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self._signals:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        self._signals.clear()

    # ---- errors nobody caught ------------------------------------------------------------------------------

    def loop_exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The asyncio loop's handler: logs what a callback or a forgotten task raised."""
        exc = context.get("exception")
        message = context.get("message", "unhandled error in the event loop")
        log.error("%s (%s)", message, {k: v for k, v in context.items() if k not in ("message", "exception")},
                  exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None)
        self._tell_user(f"{message}: {exc}" if exc else message)

    def excepthook(self, exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        """``sys.excepthook``: PySide6 calls it for exceptions raised in slots and event handlers."""
        if issubclass(exc_type, KeyboardInterrupt):
            self.request_quit()
            return
        log.error("uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)).rstrip())
        self._tell_user(f"{exc_type.__name__}: {exc}")

    def _tell_user(self, message: str) -> None:
        self.errors.append(message)
        if self.window is not None and self.window.isVisible():
            self.window.show_message(f"Siesta: internal error: {message} (details in {self.paths.log_dir / 'app'})")
        if self.tray is not None:
            self.tray.show_message("Siesta: internal error", f"{message}\nDetails are in {self.paths.log_dir / 'app'}.",
                                   QSystemTrayIcon.MessageIcon.Critical)
