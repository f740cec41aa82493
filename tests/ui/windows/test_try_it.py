"""The Models window's "Try it" panel against a real front door and the real llama-server
on the tiny model the project makes itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.api.server import ApiServer
from app.demo_model import write_tiny_model
from app.ui.bridge import ManagerBridge
from app.ui.windows.models import ModelsWindow
from app.ui.windows.try_it import TryItPanel, error_text, timeout_text
from tests.ui.helpers import FakeShell, until

pytestmark = [pytest.mark.llama, pytest.mark.timeout(120)]


@pytest.fixture
def llama_recipe(write_recipe, tmp_path: Path):
    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")

    def write(name: str, extra: str = "") -> Path:
        return write_recipe(name, f'# {name}: the tiny test model\nbackend = "llamacpp"\nmodel = "{model}"\n'
                                  f'args = ["-t", "1", "--ctx-size", "256"]  # keep it small\n{extra}')
    return write


@pytest.fixture
def front_door(loop, start_manager):
    """A manager with its HTTP front door on a free port; the Models window's Try it panel."""
    servers: list[ApiServer] = []

    def start(qtbot, **flags) -> tuple[ModelsWindow, TryItPanel]:
        manager = start_manager(**flags)
        server = ApiServer(manager)
        loop.run_until_complete(server.start(host="127.0.0.1", port=0))
        servers.append(server)
        bridge = ManagerBridge(manager)
        bridge.api_url = f"http://127.0.0.1:{server.port}"
        window = ModelsWindow(bridge, FakeShell())
        qtbot.addWidget(window)
        window.show()
        return window, window.try_it

    yield start
    for server in servers:
        loop.run_until_complete(server.stop())


def test_try_it_streams_a_real_answer_through_the_front_door(loop, front_door, llama_recipe, qtbot) -> None:
    llama_recipe("tiny", 'unload_timeout = "5m"\n')
    window, panel = front_door(qtbot, api_key="sekrit")  # the panel must send its key
    assert window.bridge.settings.api_key == "sekrit"  # the front door answers 401 without it
    assert panel.isVisible()
    assert [panel.model_combo.itemText(i) for i in range(panel.model_combo.count())] == ["tiny"]
    assert panel.timeout_label.text().startswith("unloads 5:00 after the last request")
    assert panel.send_button.isEnabled() and not panel.stop_button.isEnabled()
    lengths: list[int] = []
    panel.answer.textChanged.connect(lambda: lengths.append(len(panel.answer.toPlainText())))

    panel.prompt.setPlainText("Say hello")
    panel.send_button.click()
    assert panel.running and panel.stop_button.isEnabled() and not panel.send_button.isEnabled()
    loop.run_until_complete(until(lambda: not panel.running, 90, "the answer to end"))
    assert panel.status_label.text() == "Done.", panel.status_label.text()
    grown = sorted(set(n for n in lengths if n))
    assert panel.updates >= 2 and len(grown) >= 2, (panel.updates, lengths)  # chunk by chunk
    assert panel.answer.toPlainText() and len(panel.answer.toPlainText()) == grown[-1]
    assert panel.send_button.isEnabled() and not panel.stop_button.isEnabled()
    # The request went through the front door: the model is loaded, its countdown shown beside it.
    loop.run_until_complete(until(lambda: "idle, unloads in" in panel.timeout_label.text(), 5, "the countdown"))
    assert window.bridge.snapshot("tiny")["state"] == "ready"


def test_try_it_shows_an_unknown_models_404_in_plain_words(loop, front_door, llama_recipe, qtbot) -> None:
    llama_recipe("tiny")
    window, panel = front_door(qtbot)
    panel.prompt.setPlainText("hello")
    task = panel.send("no-such-model")
    assert task is not None
    loop.run_until_complete(until(lambda: not panel.running, 10, "the answer"))
    status = panel.status_label.text()
    assert status.startswith("The server answered 404: ") and "no-such-model" in status, status
    assert panel.answer.toPlainText() == ""
    assert error_text(500, "not json") == "The server answered 500: not json"


def test_try_it_stop_cancels_a_stream(loop, front_door, llama_recipe, qtbot) -> None:
    llama_recipe("tiny")
    window, panel = front_door(qtbot)
    panel.prompt.setPlainText("Tell me a long story")
    task = panel.send()
    assert task is not None and panel.running
    loop.run_until_complete(asyncio.sleep(0))  # the request is on its way (the model loads)
    panel.stop_button.click()
    loop.run_until_complete(until(lambda: not panel.running, 10, "the stream to stop"))
    assert panel.status_label.text() == "Stopped.", (panel.answer.toPlainText()[:200], panel.updates)
    assert task.cancelled()
    assert panel.send_button.isEnabled() and not panel.stop_button.isEnabled()

    # Stopped mid-answer too: after the first chunks arrive.
    task = panel.send()
    loop.run_until_complete(until(lambda: panel.updates >= 1 or not panel.running, 60, "the first chunk"))
    if panel.running:
        panel.stop()
        loop.run_until_complete(until(lambda: not panel.running, 10, "the stream to stop"))
        assert panel.status_label.text() == "Stopped."


def test_try_it_timeout_words() -> None:
    assert timeout_text({"unload_timeout": 300.0, "state": "unloaded"}, 0).startswith(
        "unloads 5:00 after the last request")
    assert timeout_text({"unload_timeout": 300.0, "state": "ready", "unload_at": 100.0}, 0) == \
        "unloads 5:00 after the last request; idle, unloads in 1:40"
    assert timeout_text({"unload_timeout": None, "state": "ready"}, 0).startswith("kept loaded")
