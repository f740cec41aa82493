"""The siesta command's own behaviour that needs no running instance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.cli import format_table, main
from app.core.config.recipes import read_recipe
from app.core.engine.build import build_llama_server


def test_demo_creates_model_and_recipe(paths, capsys):
    assert main(["--config-dir", str(paths.config_dir), "demo"]) == 0
    recipe = read_recipe(paths.config_dir / "recipes" / "tiny.toml")
    assert recipe.model is not None and recipe.model.read_bytes()[:4] == b"GGUF"
    assert main(["--config-dir", str(paths.config_dir), "demo"]) == 0  # again: the recipe is left alone
    assert "left as it is" in capsys.readouterr().out


def test_bad_settings_file_is_a_clear_error_not_a_crash(paths, capsys):
    paths.settings_file.write_text("port = 'eighty'\n")
    assert main(["--config-dir", str(paths.config_dir), "ps"]) == 2
    err = capsys.readouterr().err
    assert "settings.toml" in err and "port" in err


def test_flags_before_and_after_serve_both_count():
    from app.cli import _flags, build_parser

    parser = build_parser()
    assert _flags(parser.parse_args(["--port", "9000", "serve"]))["port"] == 9000
    assert _flags(parser.parse_args(["serve", "--port", "9001"]))["port"] == 9001


def test_ps_table_shows_countdown_and_sources():
    now = 1000.0
    table = format_table([
        {"name": "tiny", "state": "ready", "in_flight": 0, "memory": 18_000_000, "unload_timeout": 300,
         "timeout_source": "global", "unload_at": now + 252, "backend": "llamacpp"},
        {"name": "big", "state": "ready", "in_flight": 2, "memory": None, "unload_timeout": None,
         "timeout_source": "recipe", "unload_at": None, "backend": "llamacpp"},
    ], now=now)
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "IN-FLIGHT", "RAM", "VRAM", "TIMEOUT", "(source)", "UNLOADS", "IN"]
    assert "4:12" in lines[1] and "5m (global)" in lines[1] and "17.2 MB" in lines[1]
    assert "never (recipe)" in lines[2] and "never" in lines[2].split()[-1]


def test_engine_build_reuses_a_binary_that_answers_version(tmp_path: Path):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\necho 'version: test'\n")
    binary.chmod(0o755)
    assert build_llama_server(tmp_path) == binary  # nothing downloaded or built


def test_python_dash_m_app_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "serve" in out.stdout and "timeout" in out.stdout


def test_discover_and_import_commands(paths, tmp_path, monkeypatch, capsys):
    home = Path.home()  # isolated_home points HOME at the test's own folder
    cache = home / ".cache" / "llama.cpp"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "org_repo_small-q4_k_m.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    assert main(["--config-dir", str(paths.config_dir), "discover", "--yes"]) == 0
    created = list(paths.recipes_dir.glob("*.toml"))
    assert len(created) == 1 and read_recipe(created[0]).model == cache / "org_repo_small-q4_k_m.gguf"
    assert main(["--config-dir", str(paths.config_dir), "discover", "--yes"]) == 0
    assert "already has a recipe" in capsys.readouterr().out
    config = tmp_path / "config.yaml"
    config.write_text('models:\n  m1:\n    cmd: my-server --port ${PORT}\n    ttl: 0\n    aliases: [x]\n')
    assert main(["--config-dir", str(paths.config_dir), "import", str(config)]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "aliases" in out
    recipe = read_recipe(paths.recipes_dir / "m1.toml")
    assert recipe.command == ("my-server", "--port", "{port}") and recipe.unload_timeout is None
    assert main(["--config-dir", str(paths.config_dir), "import", str(tmp_path / "nothing.yaml")]) == 1


def test_cli_without_a_running_instance(write_recipe, paths):
    """ps says plainly that nothing runs; the timeout commands edit the files directly
    (comments kept). Needs no llama-server: nothing is started."""
    import socket

    path = write_recipe("tiny", '# tiny: the tiny test model\nbackend = "llamacpp"\nmodel = "tiny.gguf"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])

    def siesta(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app", "--config-dir", str(paths.config_dir), "--port", port,
                               *args], capture_output=True, text=True, timeout=60)

    ps = siesta("ps")
    assert "no Siesta is running" in ps.stdout
    assert siesta("timeout", "tiny", "90m").returncode == 0
    assert 'unload_timeout = "1h30m"' in path.read_text() and "# tiny: the tiny test model" in path.read_text()
    assert siesta("timeout", "--global", "never").returncode == 0
    assert 'global_unload_timeout = "never"' in paths.settings_file.read_text()
