"""What a child process sees of Siesta's environment (app/core/spawn.py, issue 26, item 8):
everything but Siesta's own secrets (``SIESTA_API_KEY``, ``SIESTA_REMOTE_<NAME>_API_KEY``),
then what the recipe's ``env`` adds. ``HF_TOKEN`` stays: ``llama-server -hf`` needs it for a
gated model. Checked with real processes that print their environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.core import spawn
from app.core.engine import install as ei
from app.core.models.lifecycle import ModelUnavailable

pytestmark = pytest.mark.timeout(60)

SIESTAS_SECRETS = {"SIESTA_API_KEY": "front-door-key", "SIESTA_REMOTE_GPUBOX_API_KEY": "remote-key",
                   "SIESTA_REMOTE_LAB_2_TOKEN": "remote-token"}
KEPT = {"HF_TOKEN": "hf-token-for-gated-models", "SIESTA_ENGINE_CACHE": "/cache", "OPENAI_API_KEY": "the-users-own"}
# Writes its environment as JSON to the file named by its first argument, then exits.
PRINTS_ITS_ENVIRONMENT = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SIESTAS_SECRETS, **KEPT}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("name, secret", [
    ("SIESTA_API_KEY", True), ("SIESTA_REMOTE_GPUBOX_API_KEY", True), ("siesta_api_key", True),
    ("SIESTA_REMOTE_X_TOKEN", True), ("SIESTA_PASSWORD", True),
    ("SIESTA_ENGINE_CACHE", False), ("SIESTA_CONFIG_DIR", False), ("SIESTA_PORT", False),
    ("SIESTA_LLAMA_SERVER", False), ("SIESTA_KEYBOARD", False),
    ("HF_TOKEN", False), ("OPENAI_API_KEY", False), ("API_KEY_SIESTA", False),
])
def test_siestas_own_secrets(name: str, secret: bool) -> None:
    assert spawn.is_siesta_secret(name) is secret


def test_child_env_drops_siestas_secrets_and_adds_what_the_recipe_names() -> None:
    environ = {**SIESTAS_SECRETS, **KEPT, "PATH": "/bin"}
    env = spawn.child_env({"MY_VAR": "1", "SIESTA_REMOTE_MINE_API_KEY": "named by the user"}, environ)
    assert env == {**KEPT, "PATH": "/bin", "MY_VAR": "1", "SIESTA_REMOTE_MINE_API_KEY": "named by the user"}
    assert environ["SIESTA_API_KEY"] == "front-door-key"  # Siesta's own environment is left alone


def test_a_real_child_sees_no_siesta_secret(environment: None, tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    subprocess.run([sys.executable, "-c", PRINTS_ITS_ENVIRONMENT, str(out)], check=True,
                   env=spawn.child_env(), **spawn.child_options())
    seen = json.loads(out.read_text())
    assert not set(SIESTAS_SECRETS) & set(seen)
    assert {name: seen.get(name) for name in KEPT} == KEPT


async def test_a_model_server_sees_no_siesta_secret(environment: None, manager_factory, write_recipe,
                                                    tmp_path: Path) -> None:
    """Started by the manager as any model is (build_launch, then the process layer)."""
    out = tmp_path / "server-env.json"
    command = [sys.executable, "-c", PRINTS_ITS_ENVIRONMENT, str(out), "{port}"]
    write_recipe("m", 'backend = "command"\n'
                      f"command = {json.dumps(command)}\n"
                      'env = { RECIPE_VAR = "from the recipe", SIESTA_REMOTE_MINE_API_KEY = "named by the user" }\n')
    manager = await manager_factory()
    with pytest.raises(ModelUnavailable, match="exited with code 0 while loading"):
        await manager.load("m")  # it exits at once, once it has written its environment
    seen = json.loads(out.read_text())
    assert not set(SIESTAS_SECRETS) & set(seen)
    assert {name: seen.get(name) for name in KEPT} == KEPT
    assert seen["RECIPE_VAR"] == "from the recipe" and seen["SIESTA_REMOTE_MINE_API_KEY"] == "named by the user"


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for llama-server")
def test_the_installed_engines_smoke_test_sees_no_siesta_secret(environment: None, tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text('#!/bin/sh\necho "version: key=${SIESTA_API_KEY:-none} hf=${HF_TOKEN:-none}"\n')
    binary.chmod(0o755)
    assert ei._smoke_test(binary) == "key=none hf=hf-token-for-gated-models"
