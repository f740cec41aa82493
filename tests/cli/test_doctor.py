"""``siesta doctor``: it works with no Siesta running, prints every section in plain text or
JSON, takes the flags a Siesta was started with, and never shows a secret (a remote's key or
password, a recipe's ``--api-key``, the API key of settings.toml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.cli import main
from app.core.doctor import SECTIONS
from app.core.models.backend import free_port

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("sekrit-a", "sekrit-b", "sekrit-c", "sekrit-d", "sekrit-e")


def with_secrets(paths, write_recipe) -> None:  # noqa: ANN001
    paths.settings_file.write_text(f"""
api_key = "sekrit-a"

[remotes.gpubox]
kind = "siesta"
url = "http://127.0.0.1:{free_port()}"
api_key = "sekrit-c"

[remotes.leaky]
kind = "siesta"
url = "http://me:sekrit-b@127.0.0.1:{free_port()}"
""")
    write_recipe("tiny", 'model = "/models/tiny.gguf"\nargs = ["--api-key", "sekrit-d"]\n'
                         'env = { HF_TOKEN = "sekrit-e" }\n')
    write_recipe("broken", "model = [\n")


def test_json_parses_and_has_every_section(paths, write_recipe, capsys) -> None:  # noqa: ANN001
    with_secrets(paths, write_recipe)
    assert main(["--config-dir", str(paths.config_dir), "doctor", "--json", "--port", "9123"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["format"] == 1 and list(data)[2:] == list(SECTIONS)
    assert data["server"]["items"]["port"]["value"]["port"] == 9123
    assert data["server"]["items"]["port"]["source"].startswith("port: flag --port")
    assert data["remotes"]["items"]["gpubox"]["value"]["answers"] is False
    assert data["remotes"]["items"]["gpubox"]["value"]["url"].startswith("http://127.0.0.1:")
    assert "key url" in data["remotes"]["items"]["invalid:leaky"]["missing"]  # credentials in a URL: refused
    assert data["recipes"]["items"]["broken.toml"]["missing"].startswith("does not parse: not valid TOML")
    tiny = data["recipes"]["items"]["tiny"]["value"]
    assert tiny["args"] == ["--api-key", "***"] and tiny["env"] == {"HF_TOKEN": "***"}
    assert data["config"]["items"]["settings"]["value"]["api_key"] == {"value": "(set)", "source": "file settings.toml"}
    assert not any(secret in out for secret in SECRETS)


def test_plain_text_by_default(paths, write_recipe, capsys) -> None:  # noqa: ANN001
    with_secrets(paths, write_recipe)
    assert main(["--config-dir", str(paths.config_dir), "doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Siesta diagnostics, ")
    for title in ("Siesta", "System", "llama-server", "Memory", "GPUs", "System tray", "Configuration", "Folders",
                  "Server", "Remotes", "Recipes"):
        assert f"\n\n{title}\n" in out, title
    assert "broken.toml" in out and "does not parse" in out
    assert "gpubox" in out and "does not answer" in out
    assert not any(secret in out for secret in SECRETS)


def test_the_command_itself_with_no_siesta_running(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app", "doctor", "--config-dir", str(tmp_path / "config")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Siesta diagnostics" in done.stdout and f"{tmp_path / 'config'} (does not exist yet)" in done.stdout
    assert "free (no Siesta runs there now)" in done.stdout or "in use by" in done.stdout or "held by" in done.stdout


def test_its_flags_before_and_after_the_command() -> None:
    from app.cli import build_parser, flags

    parser = build_parser()
    for argv in (["--port", "9001", "--llama-server", "/opt/ls", "doctor", "--json"],
                 ["doctor", "--json", "--port", "9001", "--llama-server", "/opt/ls"]):
        args = parser.parse_args(argv)
        assert args.command == "doctor" and args.json is True, argv
        assert flags(args) == {"port": 9001, "llama_server": "/opt/ls"}, argv
