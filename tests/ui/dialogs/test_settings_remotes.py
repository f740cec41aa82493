"""The Settings dialog with remotes: a remote model whose timeout Siesta keeps (Ollama's, in
``[remotes.NAME.timeouts]``) has a slider like a local one; a model Siesta only routes to
(an OpenAI-compatible server) is listed without one, since nothing could be saved for it."""

from __future__ import annotations

import pytest

from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from tests.core.remotes.test_remotes import FakeOpenAI
from tests.fakes.ollama import FakeOllama
from tests.ui.helpers import until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def servers(loop):
    ollama, openai = FakeOllama({"llama3.2:latest": 2_000_000_000}), FakeOpenAI(["gpt-a"])
    loop.run_until_complete(ollama.start())
    loop.run_until_complete(openai.start())
    try:
        yield ollama, openai
    finally:
        loop.run_until_complete(ollama.stop())
        loop.run_until_complete(openai.stop())


def test_only_models_whose_timeout_can_be_kept_get_a_slider(loop, start_manager, paths, servers, shell,
                                                            qtbot) -> None:
    ollama, openai = servers
    paths.settings_file.write_text(f'# mine\n[remotes.ol]\nkind = "ollama"\nurl = "{ollama.url}"\n\n'
                                   f'[remotes.gpt]\nkind = "openai"\nurl = "{openai.url}"\n')
    manager = start_manager()
    loop.run_until_complete(until(lambda: len(manager.remotes.snapshots()) == 2, 10, "both remotes listed"))
    dialog = SettingsDialog(ManagerBridge(manager), shell=shell)
    qtbot.addWidget(dialog)
    rows = dialog.rows
    assert set(rows) == {"ol/llama3.2:latest", "gpt/gpt-a"}
    assert rows["ol/llama3.2:latest"].usable
    assert not rows["gpt/gpt-a"].usable  # only routed to: no timeout to set
    assert not rows["gpt/gpt-a"].focusable(0) and not rows["gpt/gpt-a"].focusable(1)
