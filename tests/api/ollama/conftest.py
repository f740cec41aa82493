"""Fixtures shared by the Ollama API tests."""

from __future__ import annotations

import pytest

from tests.fakes.ollama import FakeOllama


@pytest.fixture
async def ollama_remote(paths):  # noqa: ANN001, ANN201
    """A fake Ollama with two models, set up as remote ``ol`` in settings.toml."""
    fake = FakeOllama({"llama3.2:latest": 2_000_000, "phi": 1_000})
    await fake.start()
    paths.settings_file.write_text(f'[remotes.ol]\nkind = "ollama"\nurl = "{fake.url}"\n', encoding="utf-8")
    yield fake
    await fake.stop()
