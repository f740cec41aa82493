"""The "Install llama-server..." dialog's Download prebuilt button: llama.cpp's release for
this computer from a local fake releases API, with progress, and Cancel leaving the active
engine (none) untouched."""

from __future__ import annotations

import os

import pytest
import shiboken6

from app.core.engine import install as ei
from app.core.engine import release as er
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.engine import InstallEngineDialog
from tests.core.engine.test_install import LINUX, add_cpu
from tests.fakes.releases import FakeReleases
from tests.ui.helpers import until


@pytest.fixture
def releases(monkeypatch):
    fake = FakeReleases().start()
    monkeypatch.setenv("SIESTA_ENGINE_RELEASES_URL", fake.url)
    monkeypatch.setattr(er, "probe_gpus", lambda: [])
    monkeypatch.setattr(ei, "current_platform", lambda *a: LINUX)
    yield fake
    fake.stop()


@pytest.fixture
def dialogs(qtbot):
    made: list[InstallEngineDialog] = []
    yield made
    for dialog in made:
        if shiboken6.isValid(dialog):
            dialog.close()

def test_download_prebuilt_installs_and_models_use_it(loop, start_manager, releases, dialogs) -> None:
    add_cpu(releases, er.DEFAULT_TAG)
    manager = start_manager(llama_server=None)
    bridge = ManagerBridge(manager)
    dialog = InstallEngineDialog(bridge, toolkits=[])
    dialogs.append(dialog)
    dialog.show()
    assert dialog.download_button.isDefault()
    seen: list[int] = []
    dialog.progress_bar.valueChanged.connect(seen.append)
    dialog.download_button.click()
    assert dialog.running and not dialog.download_button.isEnabled()
    loop.run_until_complete(until(lambda: not dialog.running, 20, "the install"))
    binary = ei.active_binary(bridge.paths.data_dir)
    assert binary is not None and dialog.installed == binary
    assert "is installed" in dialog.status_label.text() and "no GPU found" in dialog.status_label.text()
    assert "Models load with it from now on." in dialog.status_label.text()
    assert seen and seen[-1] == 100 and manager.llama_server_path() == binary


def test_cancel_stops_the_download(loop, start_manager, releases, dialogs) -> None:
    add_cpu(releases, er.DEFAULT_TAG, {"llama-server": b"#!/bin/sh\necho version: 1\n",
                                       "padding": os.urandom(4 << 20)})
    releases.chunk_delay = 0.05
    bridge = ManagerBridge(start_manager(llama_server=None))
    dialog = InstallEngineDialog(bridge, toolkits=[])
    dialogs.append(dialog)
    dialog.show()
    dialog.download_button.click()
    loop.run_until_complete(until(lambda: dialog.progress_bar.value() > 0, 20, "the download to start"))
    dialog.cancel_button.click()
    assert dialog.status_label.text() == "Stopping the download..."
    loop.run_until_complete(until(lambda: not shiboken6.isValid(dialog) or not dialog.isVisible(), 20,
                                  "the dialog to close"))
    assert ei.active_binary(bridge.paths.data_dir) is None
    assert not [p for p in (bridge.paths.data_dir / "engines").iterdir() if p.is_dir()]


def test_a_failed_download_offers_the_source_build(loop, start_manager, releases, dialogs) -> None:
    bridge = ManagerBridge(start_manager(llama_server=None))  # the release does not exist
    dialog = InstallEngineDialog(bridge, toolkits=[])
    dialogs.append(dialog)
    dialog.show()
    dialog.download_button.click()
    loop.run_until_complete(until(lambda: not dialog.running, 20, "the install"))
    assert dialog.status_label.text().startswith("The download failed:") and "Build from source" in \
        dialog.status_label.text()
    assert dialog.install_button.isEnabled() and dialog.download_button.isEnabled()
