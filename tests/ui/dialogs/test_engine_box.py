"""Settings' llama-server group (app/ui/dialogs/engine_box.py): the installed engine's path, backend,
llama.cpp release and version, and Update against a local fake releases API
(tests/fakes/releases.py): it installs the newer release and switches, is disabled with its
reason when there is no installed engine or it is the newest, and says why a failed
update changed nothing."""

from __future__ import annotations

import pytest
import shiboken6

from app.core.engine import install as ei
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.engine_box import NONE_FOUND, NOT_INSTALLED
from app.ui.dialogs.settings import SettingsDialog
from tests.core.engine.test_install import LINUX, add_cpu, do_install, script
from tests.fakes.releases import FakeReleases
from tests.ui.helpers import until


@pytest.fixture
def releases(monkeypatch):
    fake = FakeReleases().start()
    monkeypatch.setenv("SIESTA_ENGINE_RELEASES_URL", fake.url)
    monkeypatch.setattr(ei, "current_platform", lambda *a: LINUX)
    yield fake
    fake.stop()


@pytest.fixture
def dialogs(qtbot):
    made: list[SettingsDialog] = []
    yield made
    for dialog in made:
        if shiboken6.isValid(dialog):
            dialog.close()


def open_settings(bridge: ManagerBridge, dialogs: list, shell=None) -> SettingsDialog:
    dialog = SettingsDialog(bridge, shell=shell)
    dialogs.append(dialog)
    dialog.show()
    return dialog


def test_update_installs_the_newer_release_and_switches(loop, start_manager, releases, dialogs) -> None:
    manager = start_manager(llama_server=None)
    bridge = ManagerBridge(manager)
    add_cpu(releases, "b1")
    first = do_install(releases, bridge.paths.data_dir, "b1").engine
    add_cpu(releases, "b2")
    dialog = open_settings(bridge, dialogs)
    box = dialog.engine_box
    assert dialog.engine_path_label.toolTip() == str(first.binary)
    assert box.engine_label.text() == "llama.cpp b1, backend cpu (installed engine b1-cpu)"
    loop.run_until_complete(until(lambda: box.update_button.isEnabled(), 10, "the check for a newer release"))
    assert box.update_reason.text() == "llama.cpp b2 is available (installed: b1)."
    assert dialog.engine_version_label.text() == "1.0.b1 (fake)"
    seen: list[int] = []
    box.progress_bar.valueChanged.connect(seen.append)
    changed: list[bool] = []
    bridge.engineChanged.connect(lambda: changed.append(True))
    box.update_button.click()
    assert box.updating and not box.update_button.isEnabled() and box.progress_bar.isVisible()
    loop.run_until_complete(until(lambda: not box.updating, 20, "the update"))
    now = ei.active_binary(bridge.paths.data_dir)
    assert now is not None and now != first.binary and manager.llama_server_path() == now
    assert box.result_label.text().startswith("Updated to llama.cpp b2, backend cpu, version 1.0.b2 (fake).")
    assert box.engine_label.text() == "llama.cpp b2, backend cpu (installed engine b2-cpu)"
    assert dialog.engine_path_label.toolTip() == str(now) and not box.progress_bar.isVisible()
    loop.run_until_complete(until(lambda: dialog.engine_version_label.text() == "1.0.b2 (fake)", 10))
    assert seen and seen[-1] == 100 and changed
    assert not box.update_button.isEnabled() and box.update_reason.text() == "llama.cpp b2 is the newest release."
    assert [(e.name, e.active) for e in ei.installed(bridge.paths.data_dir)] == [("b2-cpu", True), ("b1-cpu", False)]


def test_the_newest_release_disables_update(loop, start_manager, releases, dialogs) -> None:
    bridge = ManagerBridge(start_manager(llama_server=None))
    add_cpu(releases, "b1")
    do_install(releases, bridge.paths.data_dir, "b1")
    box = open_settings(bridge, dialogs).engine_box
    assert box.update_reason.text() == "Checking for a newer llama.cpp release..." and not box.update_button.isEnabled()
    loop.run_until_complete(until(lambda: box.update_reason.text() == "llama.cpp b1 is the newest release.", 10))
    assert not box.update_button.isEnabled()


def test_no_installed_engine_disables_update_with_its_reason(loop, start_manager, releases, dialogs, shell,
                                                             tmp_path) -> None:
    none = open_settings(ManagerBridge(start_manager(llama_server="/nonexistent")), dialogs, shell).engine_box
    assert not none.update_button.isEnabled() and none.update_reason.text() == NONE_FOUND
    assert none.install_button.isVisible() and not none.engine_label.isVisible()

    mine = tmp_path / "bin" / "llama-server"  # one the user built: nothing to update
    mine.parent.mkdir()
    mine.write_bytes(script("7.7"))
    mine.chmod(0o755)
    other = open_settings(ManagerBridge(start_manager(llama_server=str(mine))), dialogs, shell).engine_box
    assert not other.update_button.isEnabled() and other.update_reason.text() == NOT_INSTALLED
    assert not other.engine_label.isVisible() and not other.install_button.isVisible()
    assert not [r for r in releases.requests if r.startswith("/releases")]  # nothing asked


def test_a_failed_update_leaves_the_engine_and_says_why(loop, start_manager, releases, dialogs) -> None:
    bridge = ManagerBridge(start_manager(llama_server=None))
    add_cpu(releases, "b1")
    first = do_install(releases, bridge.paths.data_dir, "b1").engine
    name = add_cpu(releases, "b2")
    releases.releases["b2"].digests[name] = "sha256:" + "0" * 64
    box = open_settings(bridge, dialogs).engine_box
    loop.run_until_complete(until(lambda: box.update_button.isEnabled(), 10, "the check"))
    box.start_update()
    loop.run_until_complete(until(lambda: not box.updating, 20, "the update"))
    assert box.result_label.text().startswith("The update failed:") and "is not the expected" in \
        box.result_label.text()
    assert ei.active_binary(bridge.paths.data_dir) == first.binary
    assert box.update_button.isEnabled()  # b2 is still newer: it may be tried again


def test_closing_the_dialog_stops_an_update(loop, start_manager, releases, dialogs) -> None:
    import os

    bridge = ManagerBridge(start_manager(llama_server=None))
    add_cpu(releases, "b1")
    first = do_install(releases, bridge.paths.data_dir, "b1").engine
    add_cpu(releases, "b2", {"llama-server": script("2"), "padding": os.urandom(4 << 20)})
    releases.chunk_delay = 0.05
    dialog = open_settings(bridge, dialogs)
    box = dialog.engine_box
    loop.run_until_complete(until(lambda: box.update_button.isEnabled(), 10, "the check"))
    task = box.start_update()
    loop.run_until_complete(until(lambda: box.progress_bar.value() > 0, 20, "the download to start"))
    dialog.reject()
    loop.run_until_complete(until(lambda: task.done(), 20, "the update to stop"))
    assert ei.active_binary(bridge.paths.data_dir) == first.binary
    assert {e.name for e in ei.installed(bridge.paths.data_dir)} == {"b1-cpu"}
