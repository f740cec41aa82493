"""``--connect URL`` and ``--api-key KEY``: the client commands (``ps``, ``load``,
``unload``, ``timeout``) act on a Siesta elsewhere, with the options before or after the
sub-command; the bare form starts the tray as its client (tests/ui/test_connect_mode.py);
every other use is refused. Real runs go to a real front door with fake-backend models."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from app.cli import build_parser, main
from app.cli.parser import connect_conflict
from app.core.config.endpoint import SettingsError, endpoint_for_url
from app.core.config.recipes import read_recipe

pytestmark = pytest.mark.timeout(60)

CLIENT_COMMANDS = {"ps": ["ps"], "load": ["load", "tiny"], "unload": ["unload", "tiny"],
                   "timeout": ["timeout", "tiny", "5m"]}
URL = "http://192.168.1.20:8777"


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(*argv: str) -> int:
    """``siesta ARGV`` in a worker thread (its blocking HTTP calls reach the test loop's server)."""
    return await asyncio.to_thread(main, list(argv))


# ---- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CLIENT_COMMANDS))
def test_connect_and_api_key_before_and_after_every_client_command(name: str) -> None:
    option = ["--connect", URL, "--api-key", "k"]
    for argv in (option + CLIENT_COMMANDS[name], CLIENT_COMMANDS[name] + option):
        args = parse(argv)
        assert (args.connect, args.api_key) == (URL, "k") and connect_conflict(args) is None, argv


def test_the_bare_form_takes_connect() -> None:
    args = parse(["--connect", URL])
    assert args.command is None and args.connect == URL and connect_conflict(args) is None


@pytest.mark.parametrize("argv", [
    ["--connect", URL, "serve"],                    # serve runs Siesta here
    ["--connect", URL, "demo"],
    ["--api-key", "k"],                             # a key for which Siesta?
    ["--connect", URL, "--port", "9000"],           # --connect names the Siesta; --port cannot say otherwise
    ["ps", "--connect", URL, "--host", "other"],
])
def test_connect_where_it_means_nothing_is_refused(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "--" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--connect", URL], ["engine", "info", "--api-key", "k"]])
def test_sub_commands_that_never_reach_a_siesta_do_not_take_connect(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "url"), [
    ("gpubox", "http://gpubox:8777"),               # a bare host: Siesta's port
    ("gpubox:9000", "http://gpubox:9000"),
    ("http://192.168.1.20:8777/", "http://192.168.1.20:8777"),
    ("https://box.example/siesta", "https://box.example:443/siesta"),
    ("[::1]", "http://[::1]:8777"),
])
def test_connect_urls(given: str, url: str) -> None:
    endpoint = endpoint_for_url(given, "k")
    assert endpoint.base_url == url and endpoint.given and endpoint.api_key == "k" and "k" not in repr(endpoint)


@pytest.mark.parametrize("bad", ["ftp://box", "http://box?x=1", "http://", "box:port"])
def test_bad_connect_urls_name_the_option(bad: str) -> None:
    with pytest.raises(SettingsError, match="--connect"):
        endpoint_for_url(bad, None)


# ---- real runs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("placement", ["before", "after"])
async def test_client_commands_act_on_the_siesta_connect_names(front_door, write_recipe, paths, tmp_path: Path,
                                                               placement: str, capsys) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    manager, _http, url = await front_door()
    # This machine's own config dir: nothing in it is read or written.
    option = ["--connect", url, "--config-dir", str(tmp_path / "here")]

    def argv(*words: str) -> list[str]:
        return option + list(words) if placement == "before" else list(words) + option

    assert await run(*argv("ps")) == 0
    assert "tiny" in capsys.readouterr().out
    assert await run(*argv("load", "tiny")) == 0
    assert manager.get("tiny").state.value == "ready"
    assert await run(*argv("timeout", "tiny", "15m")) == 0
    assert 'unload_timeout = "15m"' in recipe.read_text()
    assert await run(*argv("timeout", "tiny", "default")) == 0
    assert "unload_timeout" not in recipe.read_text()
    assert await run(*argv("timeout", "--global", "10m")) == 0
    assert 'global_unload_timeout = "10m"' in paths.settings_file.read_text()
    assert await run(*argv("unload", "--all")) == 0
    assert manager.get("tiny").state.value == "unloaded"
    assert not (tmp_path / "here").exists()


async def test_the_api_key_from_the_flag_or_the_environment(front_door, write_recipe, monkeypatch, capsys) -> None:
    write_recipe("tiny", fake=[])
    _manager, _http, url = await front_door(api_key="sekret")
    assert await run("ps", "--connect", url) == 1
    assert "API key" in capsys.readouterr().err
    assert await run("ps", "--connect", url, "--api-key", "sekret") == 0
    assert "tiny" in capsys.readouterr().out
    monkeypatch.setenv("SIESTA_API_KEY", "sekret")
    assert await run("--connect", url, "ps") == 0


async def test_timeout_for_a_siesta_that_does_not_answer_never_edits_this_machines_recipe(write_recipe, paths,
                                                                                         capsys) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    before = recipe.read_text()
    url = f"http://127.0.0.1:{free_port()}"
    for words in (["timeout", "tiny", "15m"], ["timeout", "--global", "10m"]):
        assert await run(*words, "--connect", url, "--config-dir", str(paths.config_dir)) == 3
        assert f"cannot reach Siesta at {url}" in capsys.readouterr().err
    assert recipe.read_text() == before and not paths.settings_file.exists()
