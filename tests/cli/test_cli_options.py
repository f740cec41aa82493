"""Every option works on every sub-command where it means something, given before or
after the sub-command: ``--config-dir`` and ``-v`` everywhere, ``--host``/``--port`` on
the commands that talk to the running instance, every setting flag on ``serve`` and the
bare tray-app form, ``--llama-server`` on ``engine``. None of this needs llama-server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import build_parser, flags, main
from app.core.config.paths import Paths
from app.core.config.recipes import read_recipe

REPO = Path(__file__).resolve().parents[2]

# Each sub-command with the positional arguments it needs.
COMMANDS: dict[str, list[str]] = {
    "serve": ["serve"],
    "ps": ["ps"],
    "load": ["load", "tiny"],
    "unload": ["unload", "tiny"],
    "timeout": ["timeout", "tiny", "5m"],
    "demo": ["demo"],
    "discover": ["discover"],
    "import": ["import", "config.yaml"],
    "engine info": ["engine", "info"],
    "engine install": ["engine", "install"],
}
CLIENT_COMMANDS = ["ps", "load", "unload", "timeout"]
SETTING_ARGS = {
    "host": ("--host", "0.0.0.0", "0.0.0.0"),
    "port": ("--port", "9123", 9123),
    "global_unload_timeout": ("--global-unload-timeout", "2m", "2m"),
    "max_loaded_models": ("--max-loaded-models", "2", 2),
    "llama_server": ("--llama-server", "/opt/llama-server", "/opt/llama-server"),
    "stop_timeout": ("--stop-timeout", "3s", "3s"),
    "load_timeout": ("--load-timeout", "1m", "1m"),
    "allowed_hosts": ("--allowed-hosts", "box.lan", "box.lan"),
}


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


def both_ways(command: list[str], option: list[str]) -> list[list[str]]:
    """``siesta OPTION COMMAND`` and ``siesta COMMAND OPTION``."""
    return [option + command, command + option]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- parsing: each sub-command, each option, both ways -----------------------------------

@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_config_dir_before_and_after_every_sub_command(name: str) -> None:
    for argv in both_ways(COMMANDS[name], ["--config-dir", "/tmp/siesta-d"]):
        assert parse(argv).config_dir == "/tmp/siesta-d", argv


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_before_and_after_every_sub_command(name: str, flag: str) -> None:
    for argv in both_ways(COMMANDS[name], [flag]):
        assert parse(argv).verbose is True, argv
    assert parse(COMMANDS[name]).verbose is False


@pytest.mark.parametrize("name", CLIENT_COMMANDS)
def test_host_and_port_before_and_after_every_client_command(name: str) -> None:
    for argv in both_ways(COMMANDS[name], ["--host", "::1", "--port", "9001"]):
        assert flags(parse(argv)) == {"host": "::1", "port": 9001}, argv


@pytest.mark.parametrize("field", sorted(SETTING_ARGS))
def test_every_setting_flag_on_serve_both_ways_and_on_the_bare_form(field: str) -> None:
    flag, raw, value = SETTING_ARGS[field]
    for argv in both_ways(["serve"], [flag, raw]):
        assert flags(parse(argv)) == {field: value}, argv
    bare = parse([flag, raw])
    assert bare.command is None and flags(bare) == {field: value}


def test_every_setting_flag_at_once_on_serve() -> None:
    option = [word for flag, raw, _ in SETTING_ARGS.values() for word in (flag, raw)]
    expected = {field: value for field, (_, _, value) in SETTING_ARGS.items()}
    for argv in both_ways(["serve"], option):
        assert flags(parse(argv)) == expected


@pytest.mark.parametrize("command", [["engine", "info"], ["engine", "install"]])
def test_engine_takes_llama_server_and_config_dir_anywhere(command: list[str]) -> None:
    option = ["--llama-server", "/x/llama-server", "--config-dir", "/tmp/d"]
    for argv in (option + command, command[:1] + option + command[1:], command + option):
        args = parse(argv)
        assert flags(args) == {"llama_server": "/x/llama-server"} and args.config_dir == "/tmp/d", argv
    if command[1] == "install":
        assert parse(command + ["--gpu", "vulkan", "--llama-server", "/y"]).gpu == "vulkan"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_flag_before_the_sub_command_is_not_reset_by_it(name: str) -> None:
    args = parse(["--config-dir", "/before", "-v", "--port", "9002", *COMMANDS[name]])
    assert args.config_dir == "/before" and args.verbose is True and flags(args)["port"] == 9002
    # Given both ways, the one after the sub-command wins.
    option = "--port" if name in CLIENT_COMMANDS or name == "serve" else "--config-dir"
    later = parse([option, "1111", *COMMANDS[name], option, "2222"])
    assert str(getattr(later, "port" if option == "--port" else "config_dir")) == "2222"


@pytest.mark.parametrize("argv", [
    ["ps", "--max-loaded-models", "2"],   # a client command takes only where the instance listens
    ["load", "tiny", "--llama-server", "/x"],
    ["demo", "--port", "9000"],           # the recipe commands never reach an instance
    ["discover", "--host", "::1"],
    ["import", "c.yaml", "--port", "1"],
    ["engine", "info", "--port", "1"],
])
def test_an_option_that_means_nothing_to_the_sub_command_is_refused(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


# ---- real runs ---------------------------------------------------------------------------

@pytest.mark.parametrize("placement", ["before", "after"])
def test_ps_with_config_dir_and_port_names_that_port_when_nothing_runs(tmp_path: Path, placement: str,
                                                                      capsys) -> None:
    port = free_port()
    option = ["--config-dir", str(tmp_path / "d"), "--port", str(port)]
    assert main(option + ["ps"] if placement == "before" else ["ps"] + option) == 3
    assert f"no Siesta is running at http://127.0.0.1:{port}" in capsys.readouterr().out


def test_ps_reads_the_port_from_the_config_dir_given_after_it(tmp_path: Path, capsys) -> None:
    config = tmp_path / "d"
    config.mkdir()
    port = free_port()
    (config / "settings.toml").write_text(f"port = {port}\n")
    assert main(["ps", "--config-dir", str(config)]) == 3
    assert f"127.0.0.1:{port}" in capsys.readouterr().out


def test_ps_from_a_real_process_exits_3_not_2(tmp_path: Path) -> None:
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "app", "ps", "--config-dir", str(tmp_path / "d"), "--port", str(port)],
                         capture_output=True, text=True, timeout=30, cwd=REPO)
    assert out.returncode == 3, out.stderr
    assert f"no Siesta is running at http://127.0.0.1:{port}" in out.stdout


@pytest.mark.parametrize("command", [["load", "tiny"], ["unload", "tiny"], ["unload", "--all"]])
def test_load_and_unload_take_port_after_the_sub_command(tmp_path: Path, command: list[str], capsys) -> None:
    port = free_port()
    assert main(command + ["--config-dir", str(tmp_path / "d"), "--port", str(port)]) == 3
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("placement", ["before", "after"])
def test_offline_timeout_writes_the_recipe_in_the_config_dir(paths: Paths, write_recipe, placement: str,
                                                             capsys) -> None:
    recipe = write_recipe("tiny", "# keep me\nbackend = \"command\"\ncommand = [\"x\", \"{port}\"]\n")
    option = ["--config-dir", str(paths.config_dir), "--port", str(free_port())]

    def run(*words: str) -> int:
        return main(option + ["timeout", *words] if placement == "before" else ["timeout", *words] + option)

    assert run("tiny", "90") == 0
    assert read_recipe(recipe).unload_timeout == 90 and "# keep me" in recipe.read_text()
    assert "1m30s" in capsys.readouterr().out
    assert run("tiny", "default") == 0  # the wire word for "use the global timeout"
    assert "unload_timeout" not in recipe.read_text() and "# keep me" in recipe.read_text()
    assert "removed (global applies)" in capsys.readouterr().out
    assert run("--global", "15m") == 0
    assert 'global_unload_timeout = "15m"' in paths.settings_file.read_text()
    assert run("nothere", "5m") == 1
    assert "not found" in capsys.readouterr().err


def test_discover_with_config_dir_after_it(paths: Paths, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["discover", "--config-dir", str(paths.config_dir), "--dir", str(empty), "--yes"]) == 0
    assert "no GGUF models found" in capsys.readouterr().out
    models = tmp_path / "models"
    models.mkdir()
    (models / "small-q4_k_m.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    assert main(["discover", "--dir", str(models), "--yes", "--config-dir", str(paths.config_dir), "-v"]) == 0
    created = list(paths.recipes_dir.glob("*.toml"))
    assert len(created) == 1 and read_recipe(created[0]).model == models / "small-q4_k_m.gguf"


def test_import_with_config_dir_after_it(paths: Paths, tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  m1:\n    cmd: my-server --port ${PORT}\n    ttl: 60\n")
    assert main(["import", str(config), "--config-dir", str(paths.config_dir)]) == 0
    assert read_recipe(paths.recipes_dir / "m1.toml").unload_timeout == 60
    assert str(paths.recipes_dir / "m1.toml") in capsys.readouterr().out


def test_demo_with_config_dir_after_it(paths: Paths) -> None:
    assert main(["demo", "--name", "mini", "--config-dir", str(paths.config_dir)]) == 0
    assert read_recipe(paths.recipes_dir / "mini.toml").model is not None


def _fake_llama_server(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then\n  echo "version: 1.2.3 (build 7)" >&2\n'
                    "  exit 0\nfi\nexit 1\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("where", ["before engine", "between", "after info"])
def test_engine_info_takes_llama_server_anywhere(paths: Paths, tmp_path: Path, where: str, capsys) -> None:
    binary = _fake_llama_server(tmp_path / "bin" / "llama-server")
    option = ["--llama-server", str(binary), "--config-dir", str(paths.config_dir)]
    argv = {"before engine": option + ["engine", "info"], "between": ["engine"] + option + ["info"],
            "after info": ["engine", "info"] + option}[where]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{binary} (set by --llama-server)" in out and "1.2.3 (build 7)" in out


def test_engine_info_reads_the_config_dir(paths: Paths, tmp_path: Path, capsys) -> None:
    binary = _fake_llama_server(tmp_path / "bin" / "llama-server")
    paths.settings_file.write_text(f'llama_server = "{binary}"\n')
    assert main(["engine", "info", "--config-dir", str(paths.config_dir)]) == 0
    assert f"{binary} (set by settings.toml)" in capsys.readouterr().out
    assert main(["engine", "info", "--config-dir", str(paths.config_dir), "--llama-server", str(tmp_path / "no")]) == 1
    assert "not an executable file" in capsys.readouterr().out


def test_serve_with_options_after_it_and_ps_against_it(paths: Paths, write_recipe) -> None:
    """A real headless Siesta started with ``serve --config-dir D --port P`` lists D's
    recipe to ``ps --config-dir D --port P`` (no model is loaded: no llama-server needed)."""
    write_recipe("quiet", unload_timeout="2m")
    port = free_port()
    option = ["--config-dir", str(paths.config_dir), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", *option, "--max-loaded-models", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            ps = subprocess.run([sys.executable, "-m", "app", "ps", *option], capture_output=True, text=True,
                                timeout=30, cwd=REPO, env=env)
            if ps.returncode != 3 or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ps.returncode == 0, (ps.stdout, ps.stderr)
        assert "quiet" in ps.stdout and "unloaded" in ps.stdout and "2m (recipe)" in ps.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
