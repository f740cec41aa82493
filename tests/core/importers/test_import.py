"""Importing llama-swap and Lemonade configurations as recipes (app/core/importers.py).

The configurations are trimmed copies of the samples in shared/samples (llama-swap's
config.example.yaml and aider-profiles.yaml, Lemonade's user_models.json and
recipe_options.json), embedded here so the tests do not depend on that folder.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from app.core.config.recipes import Recipe, read_recipe
from app.core.importers import (
    LLAMA_SWAP_DEFAULT_GROUP,
    ImportConfigError,
    detect_format,
    find_import_candidates,
    import_config,
)

LLAMA_SWAP_CONFIG = r'''
# llama-swap YAML configuration example (trimmed)
healthCheckTimeout: 500
logLevel: info
startPort: 10001
globalTTL: 0

macros:
  "latest-llama": >
    /path/to/llama-server/llama-server-ec9e0301 --port ${PORT}
  "default_ctx": 4096
  "default_args": "--ctx-size ${default_ctx}"
  "models_dir": "${env.HOME}/models"

apiKeys:
  - "sk-hunter2"

models:
  "gpt-oss-120b":
    macros:
      "default_ctx": 16384
      "temp": 0.7
    cmd: |
      # ${latest-llama} is a macro that is defined above
      ${latest-llama}
      --model ${models_dir}/gpt-oss-120B.gguf
      --ctx-size ${default_ctx}
      --temperature ${temp}
    name: "gpt-oss 120B"
    description: "A thinking model from OpenAI"
    env:
      - "CUDA_VISIBLE_DEVICES=0,1,2"
      - "LABEL=${MODEL_ID}"
    checkEndpoint: /custom-endpoint
    ttl: 60
    useModelName: "openai/gpt-oss-120B"
    filters:
      stripParams: "temperature, top_p, top_k"
    aliases:
      - "gpt-4o-mini"

  "llama":
    cmd: |
      ${latest-llama} \
        --model "${models_dir}/Llama 3.2 1B.gguf" \
        ${default_args}
        --chat-template-kwargs '{"enable_thinking": false, "q": "a\\b"}'
    ttl: 0
    checkEndpoint: none

  "qwen-unlisted":
    unlisted: true
    cmd: ${latest-llama} --model /models/qwen.gguf
    ttl: -1

  "unlisted-model":
    unlisted: true
    cmd: some-upstream-server

  "docker-llama":
    proxy: "http://127.0.0.1:${PORT}"
    cmd: |
      docker run --name ${MODEL_ID}
      --init --rm -p ${PORT}:8080 -v /mnt/nvme/models:/models
      ghcr.io/ggml-org/llama.cpp:server
      --model '/models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf'
    cmdStop: docker stop ${MODEL_ID}
    ttl: 300

  "remote":
    proxy: "http://192.168.1.23:8080"
    cmd: ssh gpu-box llama-server --port 8080

  "broken-macro":
    cmd: ${latest-llama} --model ${nowhere}/x.gguf

  "vendor/Model:Q4":
    cmd: ${latest-llama} --model /models/m.gguf
    ttl: 5400

hooks:
  on_startup:
    preload:
      - "llama"
      - "not-a-model"

routing:
  router:
    use: group
    settings:
      groups:
        "group1":
          swap: true
          exclusive: true
          members:
            - "llama"
            - "qwen-unlisted"
        "group2":
          swap: false
          exclusive: false
          members:
            - "docker-llama"
            - "modelA"

peers:
  llama-swap-peer:
    proxy: http://192.168.1.23
    models:
      - model_a
'''

AIDER_PROFILES = '''
healthCheckTimeout: 300

profiles:
    aider:
      - qwen-coder-32B
      - QwQ

models:
  "qwen-coder-32B":
    env:
      - "CUDA_VISIBLE_DEVICES=0"
    aliases:
      - coder
    proxy: "http://127.0.0.1:8999"

    # set appropriate paths for your environment
    cmd: >
      /path/to/llama-server
      --host 127.0.0.1 --port 8999 --flash-attn --slots
      --ctx-size 16000
      --model /path/to/Qwen2.5-Coder-32B-Instruct-Q4_K_M.gguf
      -ngl 99 -ngld 99
  "QwQ":
    env:
      - "CUDA_VISIBLE_DEVICES=1"
    proxy: "http://127.0.0.1:9503"
    cmd: >
      /path/to/llama-server
      --host 127.0.0.1 --port 9503
      --samplers "top_k;top_p;min_p;temperature;dry;typ_p;xtc"
      --temp 0.6
'''

USER_MODELS = {
    "Qwen2.5-Coder-1.5B-Instruct": {
        "source": "huggingface",
        "checkpoint": "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "recipe": "llamacpp",
        "size": 1.0,
    },
    "Phi-4-Mini-GGUF": {
        "checkpoint": "unsloth/Phi-4-mini-instruct-GGUF:Q4_K_M",
        "recipe": "llamacpp",
        "labels": ["custom", "chat"],
    },
    "Whisper-Small": {
        "checkpoint": "ggerganov/whisper.cpp:ggml-small.bin",
        "recipe": "whispercpp",
    },
    "Not-Downloaded": {
        "checkpoint": "someone/Missing-GGUF:missing-q4_k_m.gguf",
        "recipe": "llamacpp",
    },
    "Embedder": {
        "checkpoint": "nomic-ai/nomic-embed-text-v1.5-GGUF:Q8_0",
        "recipe": "llamacpp",
        "labels": ["embeddings"],
    },
}

RECIPE_OPTIONS = {
    "user.Qwen2.5-Coder-1.5B-Instruct": {
        "ctx_size": 16384,
        "llamacpp_backend": "vulkan",
        "llamacpp_args": "-np 2 -kvu",
        "auto_evict": True,
        "evict_idle_timeout": 900,
    },
    "user.Phi-4-Mini-GGUF": {
        "ctx_size": 4096,
        "auto_evict": False,
        "evict_idle_timeout": 120,
    },
    "user.Embedder": {
        "evict_idle_timeout": 60,
    },
    "builtin.Qwen3-0.6B-GGUF": {
        "ctx_size": 8192,
    },
}


def gguf(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\x00" * (size - 4))
    return path


def hf_file(home: Path, repo: str, name: str, rev: str = "abc123") -> Path:
    """A file in the fake hub cache: a snapshot symlink to a blob, as huggingface_hub lays it out."""
    root = home / ".cache/huggingface/hub" / ("models--" + repo.replace("/", "--"))
    blob = gguf(root / "blobs" / f"blob-{abs(hash((repo, name)))}")
    link = root / "snapshots" / rev / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    return tmp_path / "config/recipes"


@pytest.fixture
def swap_config(tmp_path: Path) -> Path:
    path = tmp_path / "llama-swap/config.yaml"
    path.parent.mkdir()
    path.write_text(LLAMA_SWAP_CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def fake_home(tmp_path: Path) -> Path:
    home = tmp_path / "fakehome"
    hf_file(home, "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    hf_file(home, "unsloth/Phi-4-mini-instruct-GGUF", "Phi-4-mini-instruct-Q8_0.gguf")
    hf_file(home, "unsloth/Phi-4-mini-instruct-GGUF", "Phi-4-mini-instruct-Q4_K_M.gguf")
    hf_file(home, "unsloth/Phi-4-mini-instruct-GGUF", "mmproj-Q4_K_M.gguf")
    hf_file(home, "nomic-ai/nomic-embed-text-v1.5-GGUF", "nomic-embed-text-v1.5.Q8_0.gguf")
    return home


@pytest.fixture
def lemonade_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "lemonade"
    folder.mkdir()
    (folder / "user_models.json").write_text(json.dumps(USER_MODELS, indent=4), encoding="utf-8")
    (folder / "recipe_options.json").write_text(json.dumps(RECIPE_OPTIONS, indent=4), encoding="utf-8")
    return folder


def load_all(paths: list[Path]) -> dict[str, Recipe]:
    return {p.stem: read_recipe(p) for p in paths}


def notes_for(skipped: list[str], name: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in skipped if line.startswith(name + ": ")]


# ---------------------------------------------------------------------------- llama-swap


def test_llama_swap_models_become_command_recipes(swap_config: Path, recipes: Path) -> None:
    result = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    assert result.kind == "llama-swap"
    made = load_all(result.created)
    assert set(made) == {"gpt-oss-120b", "llama", "qwen-unlisted", "docker-llama", "vendor-model-q4"}
    for path in result.created:
        assert path.parent == recipes
        assert path.read_text(encoding="utf-8").startswith("# Imported from llama-swap model ")

    gpt = made["gpt-oss-120b"]
    assert gpt.backend == "command"
    assert gpt.command == (
        "/path/to/llama-server/llama-server-ec9e0301", "--port", "{port}",
        "--model", "/home/u/models/gpt-oss-120B.gguf", "--ctx-size", "16384", "--temperature", "0.7",
    )  # the comment line is gone, model macros override global ones, macros nest
    assert gpt.health_path == "/custom-endpoint"
    assert dict(gpt.env) == {"CUDA_VISIBLE_DEVICES": "0,1,2", "LABEL": "gpt-oss-120b"}
    assert gpt.unload_timeout == 60 and gpt.has_unload_timeout
    assert gpt.group == LLAMA_SWAP_DEFAULT_GROUP
    assert not gpt.preload
    assert tomllib.loads(gpt.path.read_text())["description"] == "A thinking model from OpenAI"
    assert gpt.unknown_keys == ()

    docker = made["docker-llama"]
    assert docker.command[:10] == (
        "docker", "run", "--name", "docker-llama", "--init", "--rm", "-p", "{port}:8080",
        "-v", "/mnt/nvme/models:/models",
    )
    assert docker.command[-1] == "/models/Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf"
    assert docker.health_path == "/health"
    assert docker.unload_timeout == 300


def test_llama_swap_continuations_quotes_and_escaping(swap_config: Path, recipes: Path) -> None:
    result = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    llama = load_all(result.created)["llama"]
    assert llama.command == (
        "/path/to/llama-server/llama-server-ec9e0301", "--port", "{port}",
        "--model", "/home/u/models/Llama 3.2 1B.gguf", "--ctx-size", "4096",
        "--chat-template-kwargs", '{"enable_thinking": false, "q": "a\\\\b"}',
    )


@pytest.mark.parametrize(("ttl", "expected"), [
    ("ttl: 60", "1m"), ("ttl: 5400", "1h30m"), ("ttl: 90", "1m30s"), ("ttl: 0", "never"),
    ("ttl: -1", None), ("", None),
])
def test_llama_swap_ttl(tmp_path: Path, recipes: Path, ttl: str, expected: str | None) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"globalTTL: 120\nmodels:\n  m:\n    cmd: server --port ${{PORT}}\n    {ttl}\n")
    result = import_config(config, recipes, env={})
    [path] = result.created
    data = tomllib.loads(path.read_text())
    assert data.get("unload_timeout") == expected
    read_recipe(path)
    assert any(line.startswith("config.yaml: globalTTL") for line in result.skipped)


def test_llama_swap_groups_preload_and_reports(swap_config: Path, recipes: Path) -> None:
    result = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    made = load_all(result.created)
    assert made["llama"].group == "group1"
    assert made["qwen-unlisted"].group == "group1"
    assert made["docker-llama"].group is None  # swap: false = members run together
    assert made["vendor-model-q4"].group == LLAMA_SWAP_DEFAULT_GROUP  # llama-swap's default group
    assert made["llama"].preload and not made["qwen-unlisted"].preload
    assert made["llama"].health_path == "/v1/models"
    assert made["llama"].unload_timeout is None and made["llama"].has_unload_timeout  # ttl 0 = never
    assert not made["qwen-unlisted"].has_unload_timeout  # ttl -1 leaves the key out

    skipped = result.skipped
    assert any(line.startswith("group group1: exclusive") for line in skipped)
    assert any(line.startswith("group group2: swap: false") for line in skipped)
    assert "group group2: member 'modelA' is not a model in this file" in skipped
    assert any("preload of 'not-a-model'" in line for line in skipped)
    for key in ("apiKeys", "peers", "healthCheckTimeout", "globalTTL"):
        assert any(line.startswith(f"config.yaml: {key}") for line in skipped), key
    assert not any("logLevel" in line or "startPort" in line for line in skipped)

    gpt = notes_for(skipped, "gpt-oss-120b")
    for key in ("useModelName", "filters", "aliases"):
        assert any(note.startswith(f"{key} could not be mapped") for note in gpt), key
    assert any(note.startswith("checkEndpoint none") for note in notes_for(skipped, "llama"))
    assert any(note.startswith("unlisted could not be mapped") for note in notes_for(skipped, "qwen-unlisted"))
    assert any(note.startswith("cmdStop could not be mapped") for note in notes_for(skipped, "docker-llama"))


def test_llama_swap_models_that_cannot_work_are_not_imported(swap_config: Path, recipes: Path) -> None:
    result = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    reasons = {line.split(": not imported: ")[0]: line.split(": not imported: ")[1]
               for line in result.skipped if ": not imported: " in line}
    assert set(reasons) == {"unlisted-model", "remote", "broken-macro"}
    assert "${PORT}" in reasons["unlisted-model"]
    assert "another host" in reasons["remote"]
    assert "${nowhere}" in reasons["broken-macro"]
    assert not (recipes / "remote.toml").exists()


def test_llama_swap_invalid_names_are_cleaned_and_reported(swap_config: Path, recipes: Path) -> None:
    result = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    made = load_all(result.created)
    assert made["vendor-model-q4"].unload_timeout == 5400
    assert any(line.startswith("vendor/Model:Q4: imported as 'vendor-model-q4'") for line in result.skipped)


def test_llama_swap_fixed_proxy_port_becomes_port_placeholder(tmp_path: Path, recipes: Path) -> None:
    config = tmp_path / "aider-profiles.yaml"
    config.write_text(AIDER_PROFILES)
    result = import_config(config, recipes, env={})
    made = load_all(result.created)
    coder = made["qwen-coder-32B"]
    assert coder.command[:5] == ("/path/to/llama-server", "--host", "127.0.0.1", "--port", "{port}")
    assert "8999" not in coder.command
    assert dict(coder.env) == {"CUDA_VISIBLE_DEVICES": "0"}
    qwq = made["QwQ"]
    assert qwq.command[qwq.command.index("--samplers") + 1] == "top_k;top_p;min_p;temperature;dry;typ_p;xtc"
    assert any(n.startswith("fixed port 8999 replaced") for n in notes_for(result.skipped, "qwen-coder-32B"))
    assert any(n.startswith("program not found") for n in notes_for(result.skipped, "QwQ"))
    assert any(line.startswith("aider-profiles.yaml: profiles") for line in result.skipped)


def test_llama_swap_top_level_groups_and_matrix(tmp_path: Path, recipes: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  a:\n    cmd: s --port ${PORT}\n  b:\n    cmd: s --port ${PORT}\n"
        "groups:\n  pair:\n    swap: true\n    exclusive: false\n    persistent: true\n    members: [a, b]\n"
    )
    result = import_config(config, recipes / "one", env={})
    assert {r.group for r in load_all(result.created).values()} == {"pair"}
    assert not any("exclusive" in line for line in result.skipped)
    assert any(line.startswith("group pair: persistent") for line in result.skipped)

    config.write_text(
        "models:\n  a:\n    cmd: s --port ${PORT}\n"
        "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n        sets: {x: a}\n"
    )
    result = import_config(config, recipes / "two", env={})
    assert [r.group for r in load_all(result.created).values()] == [None]
    assert any("routing matrix could not be mapped" in line for line in result.skipped)


def test_import_twice_changes_nothing(swap_config: Path, recipes: Path) -> None:
    first = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    before = {p: p.read_bytes() for p in recipes.iterdir()}
    (recipes / "llama.toml").write_text("# edited by hand\nbackend = \"llamacpp\"\nmodel = \"/m.gguf\"\n")
    second = import_config(swap_config, recipes, env={"HOME": "/home/u"})
    assert second.created == []
    assert "llama: not imported: recipes/llama.toml already exists (left unchanged)" in second.skipped
    assert (recipes / "llama.toml").read_text().startswith("# edited by hand")
    after = {p: p.read_bytes() for p in recipes.iterdir() if p.name != "llama.toml"}
    assert after == {p: b for p, b in before.items() if p.name != "llama.toml"}
    assert len(first.created) == len(after) + 1
    # Nothing is reported for a model that was not written, besides why it was not.
    assert not any(line.startswith("gpt-oss-120b: aliases") for line in second.skipped)


def test_names_that_clean_up_alike_get_suffixes(tmp_path: Path, recipes: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  'a/b':\n    cmd: s --port ${PORT}\n  'a:b':\n    cmd: s --port ${PORT}\n")
    result = import_config(config, recipes, env={})
    assert sorted(p.stem for p in result.created) == ["a-b", "a-b-2"]


# ---------------------------------------------------------------------------- Lemonade


def test_lemonade_user_models_become_llamacpp_recipes(lemonade_dir: Path, fake_home: Path, recipes: Path) -> None:
    result = import_config(lemonade_dir, recipes, home=fake_home, env={})
    assert result.kind == "lemonade"
    made = load_all(result.created)
    assert set(made) == {"Qwen2.5-Coder-1.5B-Instruct", "Phi-4-Mini-GGUF", "Embedder"}
    hub = fake_home / ".cache/huggingface/hub"

    qwen = made["Qwen2.5-Coder-1.5B-Instruct"]
    assert qwen.backend == "llamacpp"
    assert qwen.model == hub / ("models--Qwen--Qwen2.5-Coder-1.5B-Instruct-GGUF/snapshots/abc123/"
                                "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    assert qwen.args == ("--ctx-size", "16384", "-np", "2", "-kvu")
    assert qwen.unload_timeout == 900 and tomllib.loads(qwen.path.read_text())["unload_timeout"] == "15m"

    phi = made["Phi-4-Mini-GGUF"]
    assert phi.model is not None and phi.model.name == "Phi-4-mini-instruct-Q4_K_M.gguf"  # not Q8_0, not mmproj
    assert phi.args == ("--ctx-size", "4096")
    assert phi.has_unload_timeout and phi.unload_timeout is None  # auto_evict false: never

    embedder = made["Embedder"]
    assert embedder.model is not None and embedder.model.name == "nomic-embed-text-v1.5.Q8_0.gguf"
    assert embedder.args == ("--embeddings",)
    assert not embedder.has_unload_timeout  # auto_evict not set: the global timeout

    for path in result.created:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# Imported from Lemonade user model 'user.")
        assert str(lemonade_dir.resolve() / "user_models.json") in first


def test_lemonade_reports_what_it_could_not_map(lemonade_dir: Path, fake_home: Path, recipes: Path) -> None:
    result = import_config(lemonade_dir / "user_models.json", recipes, home=fake_home, env={})
    skipped = result.skipped
    assert any(line.startswith("Whisper-Small: not imported: recipe 'whispercpp'") for line in skipped)
    assert ("Not-Downloaded: not imported: model file not found in the Hugging Face cache: "
            "someone/Missing-GGUF:missing-q4_k_m.gguf") in skipped
    assert any(line.startswith("builtin.Qwen3-0.6B-GGUF: not imported") for line in skipped)
    assert any(n.startswith("llamacpp_backend 'vulkan' could not be mapped")
               for n in notes_for(skipped, "Qwen2.5-Coder-1.5B-Instruct"))
    assert any(n.startswith("evict_idle_timeout ignored") for n in notes_for(skipped, "Embedder"))
    assert not (recipes / "Whisper-Small.toml").exists()
    assert not (recipes / "Not-Downloaded.toml").exists()


def test_lemonade_without_recipe_options(tmp_path: Path, fake_home: Path, recipes: Path) -> None:
    models = tmp_path / "user_models.json"
    models.write_text(json.dumps({"Phi": USER_MODELS["Phi-4-Mini-GGUF"]}))
    result = import_config(models, recipes, home=fake_home, env={})
    [recipe] = load_all(result.created).values()
    assert recipe.args == () and not recipe.has_unload_timeout
    assert result.skipped == []


def test_lemonade_uses_the_hub_cache_from_the_environment(tmp_path: Path, lemonade_dir: Path, recipes: Path) -> None:
    hub_home = tmp_path / "hf"
    link = hf_file(hub_home, "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    result = import_config(lemonade_dir, recipes, home=tmp_path / "emptyhome",
                           env={"HF_HUB_CACHE": str(hub_home / ".cache/huggingface/hub")})
    made = load_all(result.created)
    assert made["Qwen2.5-Coder-1.5B-Instruct"].model == link


def test_lemonade_checkpoint_cannot_escape_the_cache(tmp_path: Path, fake_home: Path, recipes: Path) -> None:
    gguf(tmp_path / "outside.gguf")
    models = tmp_path / "user_models.json"
    models.write_text(json.dumps({"Evil": {
        "checkpoint": "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF:../../../../../../outside.gguf",
        "recipe": "llamacpp"}}))
    result = import_config(models, recipes, home=fake_home, env={})
    assert result.created == []
    assert result.skipped[0].startswith("Evil: not imported: model file not found")


# ---------------------------------------------------------------------------- detection


def test_detect_format(tmp_path: Path, swap_config: Path, lemonade_dir: Path) -> None:
    assert detect_format(swap_config) == ("llama-swap", swap_config)
    assert detect_format(swap_config.parent) == ("llama-swap", swap_config)
    assert detect_format(lemonade_dir) == ("lemonade", lemonade_dir / "user_models.json")
    assert detect_format(lemonade_dir / "recipe_options.json") == ("lemonade", lemonade_dir / "user_models.json")
    odd = tmp_path / "swap.conf"
    odd.write_text(LLAMA_SWAP_CONFIG)
    assert detect_format(odd) == ("llama-swap", odd)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("notes.txt", "just: words\n", "not a llama-swap config.yaml or a Lemonade"),
    ("config.yaml", "models: [a, b]\n", "no 'models:' mapping"),
    ("config.yaml", "models: {a: [\n", "not valid YAML"),
    ("user_models.json", "[1, 2]", "expected an object of models"),
    ("user_models.json", "{nope", "not valid JSON"),
])
def test_unreadable_configs_raise(tmp_path: Path, recipes: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ImportConfigError, match=message):
        import_config(path, recipes, home=tmp_path, env={})
    assert not recipes.exists() or not any(recipes.iterdir())


def test_missing_path_and_empty_folder_raise(tmp_path: Path, recipes: Path) -> None:
    with pytest.raises(ImportConfigError, match="file not found"):
        import_config(tmp_path / "nope.yaml", recipes, home=tmp_path, env={})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportConfigError, match="no Lemonade user_models.json or llama-swap config.yaml"):
        import_config(tmp_path / "empty", recipes, home=tmp_path, env={})


def test_find_import_candidates(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    assert find_import_candidates(home) == []
    lemonade = home / ".cache/lemonade/user_models.json"
    swap = home / ".config/llama-swap/config.yaml"
    for path in (lemonade, swap):
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    assert find_import_candidates(home) == [lemonade, swap]
