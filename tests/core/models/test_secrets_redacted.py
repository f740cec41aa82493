"""A secret in a recipe's command line is never shown (issue 26, item 7): not in a 503's
message or log tail, not in ``/api/v1/health``, not in the model's log file, not in a recipe's
error, whichever line carries it: Siesta's "starting:" note, a server that prints its own
arguments (as vLLM does), an invalid recipe's error that repeats the whole command."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from app.core.config.atomic_write import SerialWriter
from app.core.config.recipes import RecipeError, parse_recipe
from app.core.models.backend import BackendError
from app.core.models.lifecycle import ModelUnavailable
from app.core.models.server_log import BoundedLog

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-SECRET"
# A server that says what it was started with, the way vLLM and many scripts do, then fails.
PRINTS_ITS_ARGUMENTS = ("import sys; print('argv:', ' '.join(sys.argv[1:])); "
                        "print('non-default args:', {'api_key': [sys.argv[2]], 'port': 1}); sys.exit(3)")


def assert_hidden(text: str, where: str) -> None:
    assert SECRET not in text and "SECRET" not in text, f"the secret is in {where}: {text!r}"


# ---- the pieces -------------------------------------------------------------------------------

async def test_the_log_never_writes_a_secret_split_between_two_reads(tmp_path: Path) -> None:
    """The pipe can hand over ``--api-key sk-SEC`` and ``RET`` in two reads: a line is redacted
    whole, in the file and in the tail."""
    writer = SerialWriter("test-logs")
    log = BoundedLog(tmp_path / "m.log")
    log.write_off_the_loop(writer)
    log.note("starting: server --api-key " + SECRET)
    for chunk in (b"argv: --port 1 --api-key sk-SEC", b"RET --hf-token hf", b"_abc\nplain line\n", b"--password x"):
        log.write(chunk)
    await log.flushed()
    assert_hidden(log.tail_text(), "the tail")
    assert "--password ***" in log.tail_text()  # the unfinished last line is in the tail, redacted
    log.close()
    await log.wait_closed()
    text = (tmp_path / "m.log").read_text()
    assert_hidden(text, "the log file")
    assert "hf_abc" not in text and "--password x" not in text
    assert "starting: server --api-key ***" in text and "--api-key *** --hf-token ***" in text
    assert "plain line\n" in text and text.endswith("--password ***")


def test_the_log_keeps_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "m.log")
    log.write(b"caf\xe9 \xff --api-key hunter2\n")
    log.close()
    assert (tmp_path / "m.log").read_bytes() == b"caf\xe9 \xff --api-key ***\n"


def test_errors_shown_to_clients_carry_no_secret() -> None:
    backend = BackendError(f"could not start: server --api-key {SECRET}", f"starting: server --api-key {SECRET}")
    unavailable = ModelUnavailable(f"failed: --api-key={SECRET}", log_tail=f"'--api-key', '{SECRET}'")
    for text in (str(backend), backend.log_tail, str(unavailable), unavailable.log_tail):
        assert_hidden(text, "an error")


@pytest.mark.parametrize("data", [
    {"backend": "command", "command": ["server", "--api-key", SECRET]},  # no {port}: the whole command is repeated
    {"backend": "command", "command": ["server", "{port}"], "env": {"API_KEY": SECRET, "BAD": [1]}},
    {"backend": "command", "command": ["server", "--api-key", SECRET, "{port}"], "health_path": "health"},
])
def test_a_recipe_error_carries_no_secret(tmp_path: Path, data: dict) -> None:
    with pytest.raises(RecipeError) as raised:
        parse_recipe("m", tmp_path / "m.toml", data)
    assert_hidden(str(raised.value), "the recipe error")


# ---- through the front door -------------------------------------------------------------------

async def _shown(http, url: str, name: str) -> tuple[dict, dict | None]:
    """The 503 a request for ``name`` gets and the model in the health answer (None when not listed)."""
    async with http.post(f"{url}/v1/chat/completions", json={"model": name}) as resp:
        assert resp.status == 503
        body = await resp.text()
    assert_hidden(body, "the 503")
    async with http.get(f"{url}/api/v1/health") as resp:
        health = await resp.text()
    assert_hidden(health, "/api/v1/health")
    model = next((m for m in json.loads(health)["models"] if m["name"] == name), None)
    return json.loads(body)["error"], model


async def test_a_command_that_fails_to_start_shows_no_secret(front_door, write_recipe, caplog) -> None:
    write_recipe("m", backend="command",
                 command=[sys.executable, "-c", PRINTS_ITS_ARGUMENTS, "--api-key", SECRET, "--port", "{port}"])
    manager, http, url = await front_door()
    with caplog.at_level(logging.DEBUG):
        error, model = await _shown(http, url, "m")
    assert "--api-key ***" in error["log_tail"] and "'api_key': ***" in error["log_tail"]
    assert model is not None and model["state"] == "failed" and "--api-key ***" in model["log_tail"]
    text = manager.paths.model_log("m").read_text()
    assert_hidden(text, "the log file")
    assert "starting:" in text and "--api-key ***" in text and "exited with code 3" in text
    assert_hidden(caplog.text, "Siesta's own log")


@pytest.mark.llama
async def test_a_llama_server_that_fails_to_load_shows_no_secret(front_door, write_recipe, tmp_path, caplog) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf" * 100)
    write_recipe("m", model=str(tmp_path / "broken.gguf"), args=["--api-key", SECRET])
    manager, http, url = await front_door()
    with caplog.at_level(logging.DEBUG):
        error, model = await _shown(http, url, "m")
    assert "model loading error" in error["log_tail"] and model is not None and model["state"] == "failed"
    text = manager.paths.model_log("m").read_text()
    assert_hidden(text, "the log file")
    assert "--api-key ***" in text
    assert_hidden(caplog.text, "Siesta's own log")


async def test_an_invalid_recipe_shows_no_secret(front_door, write_recipe, caplog) -> None:
    """A command without ``{port}``: its error repeats the whole command line."""
    write_recipe("m", backend="command", command=["server", "--api-key", SECRET])
    with caplog.at_level(logging.DEBUG):
        manager, http, url = await front_door()
        error, _model = await _shown(http, url, "m")  # not listed: it never loaded
    assert error["code"] == "recipe_invalid" and "'--api-key', '***'" in error["message"]
    assert "'--api-key', '***'" in manager.get("m").snapshot()["error"]
    assert_hidden(caplog.text, "Siesta's own log")
