""""Download model..." against a local fake Hub (tests/fakes/hub.py), never the network:
searching off the GUI thread, a repo's quants with sizes and whether they fit, a download
with progress that ends in a recipe the manager lists, Cancel and closing the dialog
keeping the partial file, and the errors in plain words (gated repo, disk space, a name
taken, no Hub); the keyboard, what screen readers are told, a dark theme; the entries in
the tray menu and the Models window."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from pathlib import Path
from typing import Any

import huggingface_hub
import huggingface_hub.constants
import pytest
import shiboken6
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAccessible, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QPushButton

from app.core.config.memory_limits import parse_memory_limit
from app.core.config.recipes import read_recipe
from app.core.hub import download as hub_download
from app.core.hub.download import DownloadCancelled
from app.demo_model import write_tiny_model
from app.ui import theme
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.download import COL_FIT, COL_SIZE, COL_WHY, DownloadDialog
from app.ui.dialogs.download_text import FITS, MAY_NOT_FIT, fit_on_machine
from app.ui.tray.menu import TrayMenu
from app.ui.windows.models import ModelsWindow
from tests.fakes.hub import FakeHub
from tests.ui.access import (  # noqa: F401 - fixtures
    accessible,
    activate,
    announcements,
    assert_mnemonics,
    contrast,
    dark_theme,
    names,
    press_alt,
    tab_walk,
    text_contrast,
)
from tests.ui.helpers import plain, until

TINY = "acme/Tiny-GGUF"
GATED = "acme/Gated-GGUF"
GB = 1 << 30
LOOPBACK = ("127.0.0.1", "::1", "localhost", None)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("models")
    return (write_tiny_model(folder / "a.gguf", seed=0).read_bytes(),
            write_tiny_model(folder / "b.gguf", seed=1).read_bytes())


@pytest.fixture(autouse=True)
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Hub cache and HF_HOME in the test's folder, no token, no telemetry, no retry
    waits, and no connection beyond this machine."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the fake Hub's URL once it runs
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(hub_download, "PROGRESS_EVERY", 0.0)
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN202
        assert host in LOOPBACK, f"a test tried to look up {host!r}"
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):  # noqa: ANN001, ANN202
        assert not isinstance(address, tuple) or address[0] in LOOPBACK, f"a test tried to reach {address!r}"
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(model_bytes, monkeypatch: pytest.MonkeyPatch):
    a, b = model_bytes
    fake = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    fake.add(TINY, {"tiny-Q4_K_M.gguf": a, "tiny-Q8_0.gguf": b + b"\0" * 4096, "README.md": b"# Tiny\n"},
             downloads=12_345, likes=67)
    fake.add("acme/Big-GGUF", {"big-Q4_K_M-00001-of-00002.gguf": a[:300_000],
                               "big-Q4_K_M-00002-of-00002.gguf": a[300_000:]}, downloads=7)
    fake.add(GATED, {"gated-Q4_K_M.gguf": a}, gated=True, tokens=("hf_good",))
    yield fake
    fake.stop()


@pytest.fixture
def bridge(start_manager) -> ManagerBridge:
    bridge = ManagerBridge(start_manager())
    bridge.api_url = "http://127.0.0.1:8777"
    return bridge


def open_dialog(bridge: ManagerBridge, qtbot) -> DownloadDialog:
    dialog = DownloadDialog(bridge)
    qtbot.dialogs.append(dialog)
    dialog.show()
    return dialog


def search(loop, dialog: DownloadDialog, qtbot, query: str) -> None:
    """Types ``query`` and presses Enter, as a user would."""
    dialog.search_field.clear()
    qtbot.keyClicks(dialog.search_field, query)
    qtbot.keyClick(dialog.search_field, Qt.Key.Key_Return)
    assert dialog.searching  # the search runs in a worker thread: the GUI goes on
    loop.run_until_complete(until(lambda: not dialog.searching, 10, "the search"))


def open_repo(loop, dialog: DownloadDialog, qtbot, query: str, repo: str) -> None:
    search(loop, dialog, qtbot, query)
    dialog.pick_repo(repo)
    assert dialog.listing
    loop.run_until_complete(until(lambda: not dialog.listing, 10, "the repo's files"))


def blobs(cache: Path, repo: str = TINY) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "blobs"


def partial_files(cache: Path, repo: str = TINY) -> list[Path]:
    return sorted(blobs(cache, repo).glob("*.incomplete")) if blobs(cache, repo).is_dir() else []


def wait_for_progress(loop, dialog: DownloadDialog) -> None:
    loop.run_until_complete(until(lambda: 0 < dialog.progress_bar.value() < 1000, 10, "bytes to arrive"))


# ----------------------------------------------------------------------------- searching and quants


def test_search_lists_repos_and_a_repo_lists_its_quants_with_sizes_and_fit(loop, bridge, hub, qtbot) -> None:
    dialog = open_dialog(bridge, qtbot)
    search(loop, dialog, qtbot, "gguf")
    assert dialog.repo_ids() == [TINY, "acme/Big-GGUF", GATED]  # most downloaded first
    first = dialog.results.topLevelItem(0)
    assert (first.text(1), first.text(2), first.text(3)) == ("12.3k", "67", "2025-05-01")
    assert dialog.search_status.text().startswith("3 GGUF repositories for “gguf”")
    search(loop, dialog, qtbot, "tiny")
    assert dialog.repo_ids() == [TINY]
    assert any("search=tiny" in r.path and "filter=gguf" in r.path for r in hub.requests)

    dialog.pick_repo(TINY)
    loop.run_until_complete(until(lambda: not dialog.listing, 10, "the repo's files"))
    assert dialog.quant_tags() == ["Q4_K_M", "Q8_0"]  # smallest first
    sizes = [dialog.quants.topLevelItem(i).text(COL_SIZE) for i in range(2)]
    assert sizes == ["618 KB", "622 KB"]
    # the machine's memory, read off the GUI thread: a tiny model fits anywhere
    loop.run_until_complete(until(lambda: bridge.system is not None, 10, "the memory figures"))
    loop.run_until_complete(until(lambda: dialog.quants.topLevelItem(0).text(COL_FIT) == FITS, 5, "the marks"))
    assert "needs about 513 MB" in dialog.quants.topLevelItem(0).text(COL_WHY)
    assert dialog.current_option().tag == "Q4_K_M"  # pre-selected, as siesta pull would choose
    assert dialog.name_field.text() == "tiny-q4_k_m"
    dialog.pick_quant("Q8_0")
    assert dialog.name_field.text() == "tiny-q8_0"
    assert dialog.download_button.isEnabled()


def test_quants_marked_may_not_fit_on_a_small_machine(loop, bridge, hub, qtbot) -> None:
    async def small_machine() -> dict[str, Any]:
        return {"memory": {"ram": {"total": GB, "available": 256 << 20, "models": 0}, "devices": []}}

    bridge.manager.system_memory = small_machine  # type: ignore[method-assign]
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    item = dialog.quants.topLevelItem(0)
    loop.run_until_complete(until(lambda: item.text(COL_FIT) == MAY_NOT_FIT, 5, "the marks"))
    assert item.text(COL_WHY) == "needs about 513 MB, 205 MB free now: close other programs or unload models"


def test_fit_on_machine_over_figures() -> None:
    def system(ram_total: float, ram_free: float, *gpus: tuple[float, float | None]) -> dict[str, Any]:
        devices = [{"id": f"gpu{i}", "name": "GPU", "kind": "nvidia", "total": int(t * GB),
                    "free": None if f is None else int(f * GB), "models": 0} for i, (t, f) in enumerate(gpus)]
        return {"memory": {"ram": {"total": int(ram_total * GB), "available": int(ram_free * GB), "models": 0},
                           "devices": devices}}

    assert fit_on_machine(GB, None).fits is None  # figures not read yet
    fit = fit_on_machine(4 * GB, system(32, 20, (24, 20)))
    assert (fit.mark, fit.reason) == (FITS, "needs about 4.9 GB; GPU 0 has 20.0 GB free")
    fit = fit_on_machine(4 * GB, system(16, 8))
    assert (fit.mark, fit.reason) == (FITS, "needs about 4.9 GB; RAM has 8.0 GB free")
    fit = fit_on_machine(12 * GB, system(32, 10, (8, 7)))
    assert fit.fits and "GPU and RAM together (17.0 GB free), partly on the CPU" in fit.reason
    fit = fit_on_machine(40 * GB, system(32, 30))
    assert (fit.mark, fit.reason) == (MAY_NOT_FIT, "needs about 44.5 GB, more than the 32.0 GB this computer "
                                                   "has for models")
    fit = fit_on_machine(10 * GB, system(32, 4))
    assert (fit.mark, fit.reason) == (MAY_NOT_FIT, "needs about 11.5 GB, 4.0 GB free now: close other programs "
                                                   "or unload models")
    # Siesta's memory budget and free-memory floor count: 50 % of 16 GB is 8 GB at most
    fit = fit_on_machine(8 * GB, system(16, 15), parse_memory_limit("50%"), parse_memory_limit("5%"))
    assert fit.mark == MAY_NOT_FIT and "more than the 8.0 GB" in fit.reason
    fit = fit_on_machine(4 * GB, system(16, 5), None, parse_memory_limit("1GB"))
    assert fit.mark == MAY_NOT_FIT and "4.0 GB free now" in fit.reason
    # a GPU whose free memory cannot be read is left out of "free now"
    assert fit_on_machine(4 * GB, system(16, 8, (24, None))).fits


# ----------------------------------------------------------------------------- downloading


def test_download_shows_progress_and_creates_the_recipe(loop, bridge, hub, hf_env, paths, qtbot,
                                                        monkeypatch) -> None:
    threads: list[bool] = []
    original = DownloadDialog._on_progress

    def on_progress(self, done: int, total: int) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        original(self, done, total)

    monkeypatch.setattr(DownloadDialog, "_on_progress", on_progress)
    hub.chunk_delay = 0.04  # about 1.5 s: long enough to show a speed and the time left
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    dialog.download_button.click()
    assert dialog.downloading and dialog.cancel_button.isEnabled() and not dialog.download_button.isEnabled()
    assert not dialog.results.isEnabled()
    wait_for_progress(loop, dialog)
    assert dialog.progress_bar.isVisible()
    loop.run_until_complete(until(lambda: "left" in dialog.progress_label.text(), 10, "a speed and time left"))
    assert " of 618 KB · " in dialog.progress_label.text() and "/s · " in dialog.progress_label.text()
    loop.run_until_complete(until(lambda: not dialog.downloading, 20, "the download"))

    assert dialog.result is not None and dialog.result.created
    assert dialog.message_label.isVisible()
    assert dialog.message_label.text().startswith("<b>Downloaded.</b> Clients ask for it as <b>tiny-q4_k_m</b>")
    assert "http://127.0.0.1:8777/v1" in dialog.message_label.text()
    recipe = read_recipe(paths.recipe_file("tiny-q4_k_m"))
    assert recipe.backend == "llamacpp"
    assert Path(recipe.model).is_relative_to(hf_env) and Path(recipe.model).read_bytes()[:4] == b"GGUF"
    assert "tiny-q4_k_m" in bridge.models  # listed by the manager at once: in the menu
    assert dialog.progress_bar.value() == 1000 and dialog.download_button.isEnabled()
    assert threads and all(threads)  # progress reached the dialog on the GUI thread only
    assert not partial_files(hf_env)


def test_cancel_keeps_the_partial_file_and_download_resumes(loop, bridge, hub, hf_env, paths, qtbot) -> None:
    hub.chunk_delay = 0.05
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    dialog.download_button.click()
    wait_for_progress(loop, dialog)
    dialog.cancel_button.click()
    loop.run_until_complete(until(lambda: not dialog.downloading, 10, "the cancel"))
    assert dialog.message_label.text().startswith("Download cancelled. What has arrived is kept")
    assert isinstance(dialog.download_task.exception(), DownloadCancelled)
    [partial] = partial_files(hf_env)
    kept = partial.stat().st_size
    assert kept > 0
    assert not paths.recipe_file("tiny-q4_k_m").exists()
    # the dialog is usable again: the lists, the name, Download
    assert dialog.results.isEnabled() and dialog.quants.isEnabled() and dialog.name_field.isEnabled()
    assert dialog.download_button.isEnabled() and not dialog.cancel_button.isEnabled()

    hub.chunk_delay = 0.0
    dialog.download_button.click()
    loop.run_until_complete(until(lambda: not dialog.downloading, 10, "the resumed download"))
    assert dialog.result is not None and paths.recipe_file("tiny-q4_k_m").exists()
    ranges = [r.headers.get("Range") for r in hub.body_requests("cdn")]
    assert ranges[-1] == f"bytes={kept}-"  # carried on where it stopped


def test_closing_the_dialog_mid_download_cancels_it(loop, bridge, hub, hf_env, paths, qtbot) -> None:
    hub.chunk_delay = 0.05
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    dialog.download_button.click()
    wait_for_progress(loop, dialog)
    task = dialog.download_task
    dialog.close()
    assert not shiboken6.isValid(dialog) or not dialog.isVisible()
    loop.run_until_complete(until(lambda: task.done(), 10, "the download to stop"))
    assert isinstance(task.exception(), DownloadCancelled)
    assert partial_files(hf_env) and partial_files(hf_env)[0].stat().st_size > 0
    assert not paths.recipe_file("tiny-q4_k_m").exists()


def test_gated_repo_says_what_to_do(loop, bridge, hub, paths, qtbot) -> None:
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "gated", GATED)
    assert "<b>gated</b>" in dialog.quants_label.text()
    dialog.download_button.click()
    loop.run_until_complete(until(lambda: not dialog.downloading, 10, "the download"))
    message = dialog.message_label.text()
    assert message.startswith(f"<b>{GATED} is a gated model.</b> Accept its terms on ")
    assert f'href="{hub.url}/{GATED}"' in message and "hf auth login" in message
    assert dialog.message_label.styleSheet() == theme.text_style("error", dialog.message_label)
    assert not paths.recipe_file("gated-q4_k_m").exists()
    assert dialog.download_button.isEnabled()


def test_a_taken_name_and_too_little_disk_space_are_explained(loop, bridge, hub, write_recipe, paths, qtbot,
                                                              monkeypatch) -> None:
    write_recipe("tiny-q4_k_m", fake=[])  # another model has the name
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    dialog.download_button.click()
    loop.run_until_complete(until(lambda: not dialog.downloading, 10, "the download"))
    assert dialog.message_label.text().startswith("<b>A model named tiny-q4_k_m exists already</b>")
    assert "Choose another name" in dialog.message_label.text()
    assert not hub.body_requests()  # refused before any byte was fetched

    monkeypatch.setattr(hub_download, "free_space", lambda path: 1000)
    dialog.name_field.clear()
    qtbot.keyClicks(dialog.name_field, "my-tiny")
    qtbot.keyClick(dialog.name_field, Qt.Key.Key_Return)  # Enter in the name field downloads
    assert dialog.downloading
    loop.run_until_complete(until(lambda: not dialog.downloading, 10, "the download"))
    message = dialog.message_label.text()
    assert message.startswith("<b>Not enough free disk space.</b> The download needs 618 KB, and 1000 B is free")
    assert "HF_HUB_CACHE" in message and not hub.body_requests()
    assert not paths.recipe_file("my-tiny").exists()

    dialog.name_field.setText("bad name!")
    assert dialog.download() is None
    assert "cannot be a model's name" in dialog.message_label.text()


def test_hub_unreachable_is_said_plainly(loop, bridge, qtbot, monkeypatch) -> None:
    import huggingface_hub.utils._pagination as pagination

    # huggingface_hub tries a search 6 times over about 23 s before it gives up; not here
    monkeypatch.setattr(pagination, "http_backoff", functools.partial(pagination.http_backoff, base_wait_time=0.01,
                                                                      max_wait_time=0.01))
    dialog = open_dialog(bridge, qtbot)  # HF_ENDPOINT is a closed port
    search(loop, dialog, qtbot, "tiny")
    assert dialog.search_status.text().startswith("Could not search the Hub: cannot reach http://127.0.0.1:9")
    assert "check the network connection" in dialog.search_status.text()
    assert dialog.search_field.isEnabled() and dialog.repo_ids() == []


# ----------------------------------------------------------------------------- keyboard, menu, window


def test_keyboard_mnemonics_and_tab_order(loop, bridge, hub, qtbot) -> None:
    dialog = open_dialog(bridge, qtbot)
    activate(loop, dialog)
    assert QApplication.focusWidget() is dialog.search_field
    qtbot.keyClicks(dialog.search_field, "tiny")
    QTest.keyClick(dialog.search_field, Qt.Key.Key_Return)  # Enter searches and presses no button
    assert dialog.searching and dialog.isVisible()
    loop.run_until_complete(until(lambda: not dialog.searching, 10, "the search"))
    press_alt(dialog, "P")  # "Re&positories:": the list, at its first repository, whose quants are read
    assert QApplication.focusWidget() is dialog.results and dialog.repo == TINY
    loop.run_until_complete(until(lambda: not dialog.listing, 10, "the repo's files"))
    fields = [dialog.search_field, dialog.results, dialog.quants, dialog.name_field]
    buttons = [dialog.search_button, dialog.download_button, dialog.cancel_button, dialog.close_button]
    letters = assert_mnemonics(dialog, fields, buttons)
    assert {letters[k] for k in "SPQNRDAC"} == set(fields + buttons)
    assert dialog.focus_chain() == [dialog.search_field, dialog.search_button, dialog.results, dialog.quants,
                                    dialog.name_field, dialog.download_button, dialog.cancel_button,
                                    dialog.close_button]
    # Cancel download is greyed out until a download runs: Tab passes it by
    order = [dialog.search_field, dialog.search_button, dialog.results, dialog.quants, dialog.name_field,
             dialog.download_button, dialog.close_button]
    assert names(tab_walk(dialog.search_field, 7)) == names(order + [dialog.search_field])
    assert names(tab_walk(dialog.close_button, 6, back=True)) == names(order[::-1])
    press_alt(dialog, "D")  # Download (Qt clicks it a moment later)
    loop.run_until_complete(until(lambda: dialog.result is not None, 15, "the download"))
    assert dialog.result.name == "tiny-q4_k_m"


def test_screen_readers_hear_names_progress_and_the_outcome(loop, bridge, hub, qtbot, announcements) -> None:
    hub.chunk_delay = 0.02
    dialog = open_dialog(bridge, qtbot)
    assert accessible(dialog.search_field) == "Search the Hugging Face Hub for GGUF models"
    assert accessible(dialog.results) == "GGUF repositories found"
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    assert accessible(dialog.quants) == f"Quants of {TINY}"
    assert accessible(dialog.name_field) == "Model name for requests"
    assert accessible(dialog.search_status) == dialog.search_status.text()
    dialog.download()
    wait_for_progress(loop, dialog)
    assert accessible(dialog.progress_bar) == "Download progress of tiny-q4_k_m"
    # the progress text (bytes, speed, time left) is the bar's description, kept current
    for _ in range(3):
        assert accessible(dialog.progress_bar, QAccessible.Text.Description) == dialog.progress_label.text()
        assert " of 618 KB" in dialog.progress_label.text()
        seen = dialog.progress_label.text()
        loop.run_until_complete(until(lambda: dialog.progress_label.text() != seen or not dialog.downloading, 10))
        if not dialog.downloading:
            break
    loop.run_until_complete(until(lambda: not dialog.downloading, 15, "the download"))
    assert accessible(dialog.progress_bar, QAccessible.Text.Description).startswith("Downloaded. Clients ask for it")
    assert announcements[0].startswith("1 GGUF repository for “tiny”")  # the search's outcome
    assert announcements[-1].startswith("Downloaded. Clients ask for it as tiny-q4_k_m")


def test_fit_marks_and_errors_are_readable_on_a_dark_theme(loop, bridge, hub, qtbot, dark_theme) -> None:
    dialog = open_dialog(bridge, qtbot)
    open_repo(loop, dialog, qtbot, "tiny", TINY)
    item = dialog.quants.topLevelItem(0)
    loop.run_until_complete(until(lambda: item.text(COL_FIT) == FITS, 5, "the marks"))
    backgrounds = [dialog.palette().color(QPalette.ColorRole.Window),
                   dialog.quants.palette().color(QPalette.ColorRole.Base),
                   dialog.quants.palette().color(QPalette.ColorRole.AlternateBase)]
    fits = item.foreground(COL_FIT).color()
    assert min(contrast(fits, b) for b in backgrounds) >= 4.5, fits.name()
    bridge.system = {"memory": {"ram": {"total": GB, "available": 256 << 20, "models": 0}, "devices": []}}
    bridge.systemChanged.emit()
    assert item.text(COL_FIT) == MAY_NOT_FIT
    may_not = item.foreground(COL_FIT).color()
    assert min(contrast(may_not, b) for b in backgrounds) >= 4.5, may_not.name()
    assert may_not != fits

    open_repo(loop, dialog, qtbot, "gated", GATED)
    dialog.download_button.click()
    loop.run_until_complete(until(lambda: not dialog.downloading, 10, "the download"))
    assert dialog.message_label.text().startswith(f"<b>{GATED} is a gated model.</b>")
    assert text_contrast(dialog.message_label) >= 4.5


def test_tray_menu_and_models_window_open_the_dialog(loop, bridge, shell, write_recipe, qtbot) -> None:
    tray = TrayMenu(bridge, shell)
    tray.menu.popup(QPoint(0, 0))
    texts = [plain(a.text()) for a in tray.menu.actions() if not a.isSeparator() and a.isVisible()]
    assert texts.index("Download model...") == texts.index("Find models on this computer...") + 1
    tray.download_action.trigger()
    tray.menu.hide()
    window = ModelsWindow(bridge, shell)
    qtbot.addWidget(window)
    window.show()
    window.findChild(QPushButton, "first-run-download").click()  # no models yet: the first-run panel
    write_recipe("tiny", fake=[])
    bridge.manager.reload_recipes()
    window.refresh()
    assert window.download_button.isVisible()
    window.download_button.click()
    assert shell.calls == ["download", "download", "download"]


def test_quitting_siesta_stops_a_download(loop, paths, make_settings, hub, hf_env, qtbot) -> None:
    from app.core.models.backend import free_port
    from app.ui.app import SiestaApp

    hub.chunk_delay = 0.05
    siesta = SiestaApp(paths, make_settings(port=free_port()), tray_available=lambda: False)

    async def body() -> Any:
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 10)
        siesta.show_download()
        dialog = siesta.download_dialog
        assert dialog is not None and dialog.isVisible()
        qtbot.dialogs.append(dialog)
        siesta.show_download()  # a second time: the same dialog, brought up
        assert siesta.download_dialog is dialog
        dialog.search_field.setText("tiny")
        dialog.search()
        await until(lambda: not dialog.searching, 10, "the search")
        dialog.pick_repo(TINY)
        await until(lambda: not dialog.listing, 10, "the repo's files")
        task = dialog.download()
        await until(lambda: 0 < dialog.progress_bar.value() < 1000, 10, "bytes to arrive")
        siesta.request_quit()  # Quit: no download outlives Siesta
        assert await asyncio.wait_for(running, 20) == 0
        return task

    task = loop.run_until_complete(body())
    assert task.done() and isinstance(task.exception(), DownloadCancelled)
    assert partial_files(hf_env) and not paths.recipe_file("tiny-q4_k_m").exists()
