"""Fixtures for the GUI tests: an offscreen Qt, a qasync loop per test, a real manager.

pytest-qt has no qasync support, so ``loop`` builds the app's qasync loop (``SiestaEventLoop``) on
pytest-qt's ``qapp``, records anything the loop would otherwise only log (an exception in
a callback, a task whose error nobody read) and fails the test on it. Tests run their
async parts with ``loop.run_until_complete(...)``; while a coroutine runs, they wait
with :func:`until` and :func:`next_event` (not ``qtbot.waitUntil``, whose nested Qt loop
would run other asyncio tasks inside the current one).
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is imported: no display, no tray

import asyncio
import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.core.config.clock import Clock
from app.core.config.paths import Paths
from app.core.manager import ModelManager
from app.ui.event_loop import SiestaEventLoop
from tests.ui.helpers import FakeShell


@pytest.fixture
def loop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    swallowed: list[dict[str, Any]] = []
    hook_errors: list[BaseException] = []
    qapp.setQuitOnLastWindowClosed(False)  # as run_tray_app sets it: closing a window must not stop the loop
    # Python's cycle collector runs in whichever thread happens to allocate, and a Qt object
    # it frees from a worker thread (asyncio.to_thread, the child watcher) cannot stop its
    # timers there ("Timers cannot be stopped from another thread"): a later timer event
    # reaches freed memory and the run segfaults. Widgets a test leaves behind are such
    # garbage; so while the loop runs nothing is collected automatically, and what the test
    # left is collected at the end, on the GUI thread.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    event_loop = SiestaEventLoop(qapp)
    event_loop.set_exception_handler(lambda _loop, context: swallowed.append(context))
    asyncio.set_event_loop(event_loop)
    previous_hook = sys.excepthook
    sys.excepthook = lambda t, e, tb: hook_errors.append(e)
    try:
        yield event_loop
    finally:
        sys.excepthook = previous_hook
        try:
            pending = [t for t in asyncio.all_tasks(event_loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                event_loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            event_loop.run_until_complete(event_loop.shutdown_asyncgens())
        finally:
            event_loop.close()
            asyncio.set_event_loop(None)
            gc.collect()
            if gc_was_enabled:
                gc.enable()
    assert not swallowed, f"the loop swallowed: {swallowed}"
    assert not hook_errors, f"uncaught exceptions in Qt callbacks: {hook_errors!r}"


@pytest.fixture
def start_manager(loop: asyncio.AbstractEventLoop, paths: Paths,
                  make_settings: Callable[..., Any]) -> Iterator[Callable[..., ModelManager]]:
    """Starts ModelManagers on the test's qasync loop and always closes them (no child left)."""
    managers: list[ModelManager] = []

    def start(*, watch_files: bool = False, **flags: Any) -> ModelManager:
        manager = ModelManager(paths, make_settings(**flags), clock=Clock(max_slice=0.2), watch_files=watch_files)
        loop.run_until_complete(manager.start())
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        loop.run_until_complete(manager.close())


@pytest.fixture
def shell() -> FakeShell:
    return FakeShell()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records what would be opened in the desktop's programs or copied, instead of doing it."""
    from app.ui.platform import desktop

    calls: list[Any] = []
    monkeypatch.setattr(desktop, "open_file", lambda p: calls.append(("file", p)) or True)
    monkeypatch.setattr(desktop, "open_folder", lambda p: calls.append(("folder", p)) or True)
    monkeypatch.setattr(desktop, "copy_text", lambda t: calls.append(("copy", t)))
    return calls


@pytest.fixture(autouse=True)
def _close_dialogs(qtbot):
    """Tests append dialogs that delete themselves on close to ``qtbot.dialogs``; any still
    open at the end are closed here (not qtbot.addWidget, which would close them twice)."""
    import shiboken6

    qtbot.dialogs = []
    yield
    for dialog in qtbot.dialogs:
        if shiboken6.isValid(dialog):
            dialog.close()
