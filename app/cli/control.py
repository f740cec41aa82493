"""``siesta load``, ``unload`` and ``timeout``: through the running instance's API, so a
change reaches its countdowns at once; ``timeout`` edits the files when none is running."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from app.cli.client import ApiError
from app.cli.table import format_table
from app.core.config.durations import (
    USE_GLOBAL,
    USE_GLOBAL_WORD,
    DurationError,
    format_duration,
    format_model_timeout,
    parse_duration,
    parse_model_timeout,
)
from app.core.config.endpoint import SettingsError

if TYPE_CHECKING:
    from app.cli.context import Context


def print_model(model: dict[str, Any]) -> int:
    print(format_table([model]))
    return 0


def load_command(ctx: Context) -> int:
    return print_model(ctx.client.call("POST", "/api/v1/load", {"model": ctx.args.model}, timeout=None))


def unload_command(ctx: Context) -> int:
    args = ctx.args
    if args.all == bool(args.model):
        ctx.usage_error("unload takes a model name or --all")
    body = {"all": True} if args.all else {"model": args.model}
    result = ctx.client.call("POST", "/api/v1/unload", body)
    if args.all:
        print("unloaded: " + (", ".join(result["unloaded"]) or "nothing was loaded"))
        return 0
    return print_model(result)


def timeout_command(ctx: Context) -> int:
    args = ctx.args
    if args.global_value is not None:
        if args.model:
            ctx.usage_error("timeout --global takes only a duration")
        return _global_timeout(ctx, args.global_value)
    if not args.model or not args.duration:
        ctx.usage_error(f"usage: siesta timeout MODEL DURATION|{USE_GLOBAL_WORD}, "
                        "or siesta timeout --global DURATION")
    try:
        value = parse_model_timeout(args.duration)
    except DurationError as exc:
        ctx.usage_error(str(exc))
    if ctx.endpoint.given or ctx.client.running():  # a Siesta elsewhere: never this machine's files
        return print_model(ctx.client.call("PATCH", f"/api/v1/models/{quote(args.model, safe='/:')}",
                                           {"unload_timeout": format_model_timeout(value)}))
    from app.core.config.recipes import RecipeError, is_valid_name, read_recipe, write_recipe_timeout
    from app.core.config.toml_edit import TomlEditError

    if "/" in args.model:
        raise ApiError(f"{args.model!r} is a remote's model (REMOTE/MODEL): its timeout is changed through the "
                       "running Siesta, and none is running; start it with `siesta serve`")
    path = ctx.paths.recipe_file(args.model)
    if not is_valid_name(args.model) or not path.exists():
        raise ApiError(f"model {args.model!r} not found: no recipe {path}")
    try:
        read_recipe(path)  # never rewrite a recipe that does not parse
        write_recipe_timeout(path, value)
    except (RecipeError, TomlEditError) as exc:
        raise ApiError(str(exc)) from exc
    done = "removed (global applies)" if value is USE_GLOBAL else format_model_timeout(value)
    print(f"{args.model}: timeout {done} in {path}")
    return 0


def _global_timeout(ctx: Context, raw: str) -> int:
    try:
        value = parse_duration(raw)
    except DurationError as exc:
        ctx.usage_error(str(exc))
    if ctx.endpoint.given or ctx.client.running():
        ctx.client.call("PATCH", "/api/v1/settings", {"global_unload_timeout": format_duration(value)})
    else:
        from app.core.config.toml_edit import TomlEditError, set_toml_key

        try:
            pinned = ctx.settings.fixed_by("global_unload_timeout")
        except SettingsError:
            pinned = None
        if pinned:
            print(f"note: {pinned} overrides settings.toml while it is set", file=sys.stderr)
        try:
            set_toml_key(ctx.paths.settings_file, "global_unload_timeout", format_duration(value), create=True)
        except TomlEditError as exc:
            raise ApiError(str(exc)) from exc
    print(f"global timeout: {format_duration(value)}")
    return 0
