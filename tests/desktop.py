"""A desktop session of the test's own, for tests that need a real X server or a session bus:
the ``display`` fixture (Xvfb, which picks a free display number and says it when ready) and
the ``bus`` fixture (a ``dbus-daemon`` session bus). Import the fixtures into a test module by
name. Without the program a test is skipped, saying which; under ``CI`` (where .ci/run
installs both) it fails instead."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.tray.sni_host import session_bus


def needs(program: str, package: str) -> None:
    if shutil.which(program) is None:
        reason = f"{program} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(reason)  # .ci/run installs it: missing there is a failure
        pytest.skip(reason)


@pytest.fixture
def display() -> Iterator[str]:
    needs("Xvfb", "xvfb")
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert xvfb.stdout is not None
        number = xvfb.stdout.readline().strip()  # printed once it accepts connections
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    needs("dbus-daemon", "dbus")
    with session_bus(tmp_path / "bus") as address:
        yield address
