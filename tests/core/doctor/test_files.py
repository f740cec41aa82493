"""The doctor's files: the config dir and where it came from, settings.toml and the settings
in force, the folders, and each recipe as read (secrets replaced) or why it does not parse.
Real files in the test's own config dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.config.paths import Paths
from app.core.doctor import build_report
from app.core.doctor.collect import load_for_report
from app.core.doctor.files import config_items, folder_items, recipe_items


def by_key(items) -> dict:  # noqa: ANN001
    return {item.key: item for item in items}


def test_a_broken_recipe_gives_its_file_name_and_error(paths, write_recipe) -> None:  # noqa: ANN001
    write_recipe("good", fake=[])
    write_recipe("broken", 'backend = "llamacpp"\nmodel = "/m.gguf\n')  # an unterminated string
    write_recipe("wrong", 'backend = "vllm"\n')
    found = by_key(recipe_items(paths))
    assert found["recipes"].value == {"folder": str(paths.recipes_dir), "count": 3, "broken": 2}
    assert found["recipes"].shown() == f"3 in {paths.recipes_dir}, 2 that do not parse"
    broken = found["broken.toml"]
    assert not broken.found and broken.label == "broken.toml"
    assert broken.missing.startswith("does not parse: not valid TOML: ")
    assert broken.source == str(paths.recipe_file("broken"))
    assert found["wrong.toml"].missing == ("does not parse: field 'backend': expected one of 'llamacpp', "
                                           "'command', got 'vllm'")
    assert found["good"].found and found["good"].value["backend"] == "command"


def test_recipes_are_shown_without_their_secrets(paths, write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    write_recipe("local", f'model = "{model}"\n'
                          'args = ["--ctx-size", "4096", "--api-key", "sekrit-1", "--hf-token=sekrit-2", "-hft", '
                          '"sekrit-3"]\n'
                          'env = { HF_TOKEN = "sekrit-4", CUDA_VISIBLE_DEVICES = "1" }\n'
                          'unload_timeout = "15m"\n')
    write_recipe("cmd", 'backend = "command"\ncommand = ["vllm", "serve", "--port", "{port}", "--api-key", '
                        '"sekrit-5", "--base-url", "http://me:sekrit-6@hub"]\n')
    write_recipe("bad", 'model = "/m.gguf"\nargs = ["--api-key", "sekrit-7", { x = 1 }]\n')
    found = by_key(recipe_items(paths))
    local = found["local"]
    assert local.value["args"] == ["--ctx-size", "4096", "--api-key", "***", "--hf-token=***", "-hft", "***"]
    assert local.value["env"] == {"CUDA_VISIBLE_DEVICES": "1", "HF_TOKEN": "***"}
    assert local.shown() == (f"llamacpp, model {model}, args --ctx-size 4096 --api-key *** --hf-token=*** -hft ***, "
                             "env CUDA_VISIBLE_DEVICES=1 HF_TOKEN=***, unload_timeout 15m")
    assert local.notes == ()
    assert found["cmd"].value["command"] == ["vllm", "serve", "--port", "{port}", "--api-key", "***", "--base-url",
                                             "http://***@hub"]
    assert "sekrit-7" not in found["bad.toml"].missing and "'--api-key', '***'" in found["bad.toml"].missing
    everything = json.dumps([i.to_json() for i in found.values()]) + "".join(i.shown() for i in found.values())
    assert "sekrit" not in everything


def test_a_recipe_whose_model_file_is_missing_says_so(paths, write_recipe) -> None:  # noqa: ANN001
    write_recipe("gone", 'model = "/nowhere/m.gguf"\n')
    assert by_key(recipe_items(paths))["gone"].notes == ("the model file /nowhere/m.gguf does not exist",)


def test_no_recipes_folder(tmp_path: Path) -> None:
    paths = Paths(config_dir=tmp_path / "c", log_dir=tmp_path / "l", data_dir=tmp_path / "d")
    (item,) = recipe_items(paths)
    assert item.shown() == "none (the folder does not exist yet)"


def test_an_invalid_settings_file_is_named_and_the_rest_still_reported(paths) -> None:  # noqa: ANN001
    paths.settings_file.write_text('port = "eighty"\napi_key = "sekrit-8"\n')
    settings, error = load_for_report(paths, {"host": "127.0.0.2"})
    assert error is not None and "port" in error and "sekrit-8" not in error
    assert settings.values.host == "127.0.0.2" and settings.values.port == 8777  # the flag, without the file
    report = build_report(paths, {"host": "127.0.0.2"})
    item = report.item("config", "settings_file")
    assert not item.found and item.missing.startswith("invalid settings: ")
    assert report.item("server", "port").value["host"] == "127.0.0.2"


def test_settings_that_do_not_parse_at_all(paths) -> None:  # noqa: ANN001
    paths.settings_file.write_text("port = \n")
    report = build_report(paths)
    assert report.item("config", "settings_file").missing.startswith(f"{paths.settings_file}: not valid TOML")
    assert report.item("remotes", "remotes").missing.startswith("settings.toml does not parse")


def test_settings_in_force_name_what_is_not_a_default(paths, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    paths.settings_file.write_text('global_unload_timeout = "15m"\napi_key = "sekrit-9"\n')
    monkeypatch.setenv("SIESTA_MAX_LOADED_MODELS", "2")
    settings, error = load_for_report(paths, {"port": 9000})
    found = by_key(config_items(paths, settings, error))
    assert found["settings_file"].shown() == f"{paths.settings_file} (valid)"
    shown = found["settings"].shown()
    assert "port = 9000 (flag --port)" in shown and "max_loaded_models = 2 (env SIESTA_MAX_LOADED_MODELS)" in shown
    assert "global_unload_timeout = 15m (file settings.toml)" in shown
    assert "api_key = (set) (file settings.toml)" in shown and "sekrit" not in json.dumps(found["settings"].to_json())


def test_the_config_dir_and_where_it_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = Paths.resolve()
    assert by_key(config_items(default, None, None))["config_dir"].source.startswith("platformdirs.user_config_dir")
    monkeypatch.setenv("SIESTA_CONFIG_DIR", str(tmp_path / "from-env"))
    from_env = Paths.resolve()
    item = by_key(config_items(from_env, None, None))["config_dir"]
    assert item.source == "$SIESTA_CONFIG_DIR" and item.shown() == f"{tmp_path / 'from-env'} (does not exist yet)"
    given = Paths.resolve(tmp_path)
    assert by_key(config_items(given, None, None))["config_dir"].source == "--config-dir"


def test_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    found = by_key(folder_items(Paths.resolve()))
    assert found["log_dir"].source == "platformdirs.user_log_dir"
    assert found["data_dir"].source == "platformdirs.user_data_dir"
    assert found["state_dir"].source == "platformdirs.user_state_dir"
    assert found["engine_cache"].source == "platformdirs.user_cache_dir"
    hub = found["hub_cache"]
    assert hub.source == "huggingface_hub.constants.HF_HUB_CACHE"
    # huggingface_hub reads its environment once, when imported; Siesta's own rule reads it now
    assert hub.value == str(tmp_path / "hub") or hub.notes == (
        f"siesta pull and discover use {tmp_path / 'hub'} ($HF_HUB_CACHE, else $HF_HOME/hub, else "
        "~/.cache/huggingface/hub, read now)",)
