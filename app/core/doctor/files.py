"""Siesta's files: the config dir, settings.toml and the settings in force, the folders it
writes (logs, data, state, the engine build cache, the Hugging Face Hub cache), and every
recipe as read, or why it does not parse. Recipes' arguments, commands and environments are
shown with their secrets replaced (:mod:`app.core.config.redact`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import platformdirs

from app.core.config.durations import format_duration, format_model_timeout
from app.core.config.paths import APP_NAME, Paths, engine_cache_dir
from app.core.config.recipes import Recipe, RecipeError, read_recipe, scan_recipe_files
from app.core.config.redact import redact_args, redact_env, redact_text
from app.core.config.settings import LoadedSettings
from app.core.doctor.report import Item, found, missing

__all__ = ["config_items", "folder_items", "recipe_items"]


def _where(path: Path) -> str:
    if path.is_dir():
        return str(path)
    return f"{path} (does not exist yet)" if not path.exists() else f"{path} (not a folder)"


def _dir_source(path: Path, default: str, what: str) -> str:
    return f"platformdirs.{what}" if path == Path(default) else "given for this run"


def config_dir_source(paths: Paths, environ: Mapping[str, str]) -> str:
    if paths.config_dir == Path(platformdirs.user_config_dir(APP_NAME)):
        return "platformdirs.user_config_dir (no --config-dir, no $SIESTA_CONFIG_DIR)"
    env = environ.get("SIESTA_CONFIG_DIR")
    if env and Path(env).expanduser() == paths.config_dir:
        return "$SIESTA_CONFIG_DIR"
    return "--config-dir"


def config_items(paths: Paths, settings: LoadedSettings | None, settings_error: str | None,
                 environ: Mapping[str, str] | None = None) -> Iterable[Item]:
    environ = os.environ if environ is None else environ
    yield found("config_dir", "config dir", str(paths.config_dir), config_dir_source(paths, environ),
                text=_where(paths.config_dir))
    file = paths.settings_file
    if settings_error is not None:
        yield missing("settings_file", "settings.toml", settings_error, str(file))
    elif file.is_file():
        yield found("settings_file", "settings.toml", str(file), "read with tomllib", text=f"{file} (valid)")
    else:
        yield found("settings_file", "settings.toml", None, str(file),
                    text="none (every setting comes from a flag, the environment or its default)")
    if settings is not None:
        described = settings.describe()
        changed = {name: d for name, d in described.items() if d["source"] != "default"}
        text = ", ".join(f"{name} = {_setting_text(name, d['value'])} ({d['source']})"
                         for name, d in changed.items()) or "all defaults"
        yield found("settings", "settings in force", described,
                    "flags > SIESTA_* environment > settings.toml > defaults", text=text)


DURATIONS = ("global_unload_timeout", "stop_timeout", "load_timeout")


def _setting_text(name: str, value: object) -> str:
    if name in DURATIONS and (value is None or isinstance(value, (int, float))):
        return format_duration(value)
    return str(value)


def folder_items(paths: Paths, environ: Mapping[str, str] | None = None) -> Iterable[Item]:
    environ = os.environ if environ is None else environ
    yield found("log_dir", "log dir", str(paths.log_dir),
                _dir_source(paths.log_dir, platformdirs.user_log_dir(APP_NAME), "user_log_dir"),
                text=_where(paths.log_dir))
    yield found("data_dir", "data dir", str(paths.data_dir),
                _dir_source(paths.data_dir, platformdirs.user_data_dir(APP_NAME), "user_data_dir"),
                text=_where(paths.data_dir))
    state = paths.state_dir or paths.data_dir / "state"
    yield found("state_dir", "state dir", str(state),
                _dir_source(state, platformdirs.user_state_dir(APP_NAME), "user_state_dir")
                if paths.state_dir is not None else "the data dir's state/", text=_where(state))
    cache = engine_cache_dir()
    yield found("engine_cache", "engine build cache", str(cache),
                "$SIESTA_ENGINE_CACHE" if environ.get("SIESTA_ENGINE_CACHE") else "platformdirs.user_cache_dir",
                text=_where(cache))
    yield _hub_cache(environ)


def _hub_cache(environ: Mapping[str, str]) -> Item:
    from app.core.discovery import default_hf_hub_cache

    ours = default_hf_hub_cache(env=environ)
    try:
        from huggingface_hub import constants
    except ImportError:
        return found("hub_cache", "Hub cache", str(ours), "$HF_HUB_CACHE, else $HF_HOME/hub, else "
                     "~/.cache/huggingface/hub (huggingface_hub is not installed)", text=_where(ours))
    theirs = Path(constants.HF_HUB_CACHE).expanduser()
    notes = [] if theirs == ours else [f"siesta pull and discover use {ours} ($HF_HUB_CACHE, else $HF_HOME/hub, "
                                       "else ~/.cache/huggingface/hub, read now)"]
    return found("hub_cache", "Hub cache", str(theirs), "huggingface_hub.constants.HF_HUB_CACHE",
                 text=_where(theirs), notes=notes)


def recipe_items(paths: Paths) -> Iterable[Item]:
    files = scan_recipe_files(paths.recipes_dir)
    if not paths.recipes_dir.is_dir():
        yield found("recipes", "recipes", [], str(paths.recipes_dir), text="none (the folder does not exist yet)")
        return
    broken = 0
    out: list[Item] = []
    for file in files:
        try:
            recipe = read_recipe(file)
        except RecipeError as exc:
            broken += 1
            message = str(exc).removeprefix(f"{file}: ")
            out.append(missing(file.name, file.name, f"does not parse: {message}", str(file)))
            continue
        out.append(_recipe(recipe))
    yield found("recipes", "recipes", {"folder": str(paths.recipes_dir), "count": len(files), "broken": broken},
                str(paths.recipes_dir),
                text=f"{len(files)} in {paths.recipes_dir}"
                + (f", {broken} that {'does' if broken == 1 else 'do'} not parse" if broken else ""))
    yield from out


def _recipe(recipe: Recipe) -> Item:
    value: dict[str, object] = {"name": recipe.name, "backend": recipe.backend}
    parts = [recipe.backend]
    notes = []
    if recipe.backend == "llamacpp":
        value["model"] = str(recipe.model)
        parts.append(f"model {recipe.model}")
        if recipe.model is not None and not recipe.model.is_file():
            notes.append(f"the model file {recipe.model} does not exist")
        args = redact_args(recipe.args)
        value["args"] = args
        if args:
            parts.append("args " + " ".join(args))
    else:
        command = redact_args(recipe.command)
        value["command"] = command
        parts.append("command " + " ".join(command))
        if recipe.args:
            value["args"] = redact_args(recipe.args)
    if recipe.env:
        env = redact_env(dict(recipe.env))
        value["env"] = env
        parts.append("env " + " ".join(f"{k}={v}" for k, v in env.items()))
    value["unload_timeout"] = format_model_timeout(recipe.unload_timeout) if recipe.has_unload_timeout else None
    if recipe.has_unload_timeout:
        parts.append(f"unload_timeout {format_model_timeout(recipe.unload_timeout)}")
    if recipe.unknown_keys:
        notes.append("unknown keys: " + ", ".join(recipe.unknown_keys))
    return found(recipe.name, recipe.name, value, recipe.path.name, text=redact_text(", ".join(parts)), notes=notes)

