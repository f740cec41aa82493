"""The commands that write recipes without a running instance: ``siesta demo``,
``siesta discover`` and ``siesta import``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from app.cli.client import ApiError
from app.cli.table import size_cell

if TYPE_CHECKING:
    from app.cli.context import Context


def demo_command(ctx: Context) -> int:
    from app.core.config.recipes import is_valid_name
    from app.demo_model import write_tiny_model

    name = ctx.args.name
    if not is_valid_name(name):
        raise ApiError(f"invalid model name {name!r}")
    model_file = ctx.paths.data_dir / "models" / f"{name}.gguf"
    write_tiny_model(model_file)
    recipe = ctx.paths.recipe_file(name)
    if recipe.exists():
        print(f"{recipe} exists; left as it is (model written to {model_file})")
        return 0
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(
        "# A tiny random-weight model made by `siesta demo`: it answers gibberish, fast.\n"
        'backend = "llamacpp"\n'
        f'model = "{model_file}"\n'
        'args = ["--ctx-size", "512", "-t", "1"]\n'
        '# unload_timeout = "5m"   # uncomment to override the global timeout\n',
        encoding="utf-8",
    )
    print(f"created {recipe} for {model_file}")
    return 0


def discover_command(ctx: Context) -> int:
    from app.core.discovery import SOURCE_LABELS, configured_model_paths, create_recipes, discover_models

    extra_dirs = ctx.args.dir
    recipes_dir = ctx.paths.recipes_dir
    found = discover_models(extra_dirs=extra_dirs)
    known = configured_model_paths(recipes_dir)
    new = [m for m in found if os.path.realpath(m.path) not in known]
    if not found:
        print("no GGUF models found (searched the Hugging Face cache, LM Studio, llama.cpp's cache, Ollama"
              + (" and " + ", ".join(map(str, extra_dirs)) if extra_dirs else "") + ")")
        return 0
    for index, m in enumerate(found, 1):
        mark = f"(recipe {known[os.path.realpath(m.path)]})" if m not in new else ""
        print(f"{index:3d}. {m.name:<40} {size_cell(m.size):>9}  {SOURCE_LABELS.get(m.source, m.source)}: "
              f"{m.origin or m.path} {mark}")
    if not new:
        print("every model found already has a recipe")
        return 0
    chosen = new
    if not ctx.args.yes:
        if not sys.stdin.isatty():
            print("run with --yes to create recipes for the new ones, or run in a terminal to choose")
            return 0
        answer = input("create recipes for which? numbers separated by spaces, 'all' or nothing [all]: ").strip()
        if answer and answer != "all":
            picked = {int(tok) for tok in answer.replace(",", " ").split() if tok.isdigit()}
            chosen = [m for i, m in enumerate(found, 1) if i in picked and m in new]
    for path in create_recipes(chosen, recipes_dir):
        print(f"created {path}")
    return 0


def import_command(ctx: Context) -> int:
    from app.core.importers import ImportConfigError, import_config

    source = ctx.args.path
    try:
        result = import_config(source, ctx.paths.recipes_dir)
    except ImportConfigError as exc:
        raise ApiError(str(exc)) from exc
    print(f"imported from {result.kind or 'config'} at {source}:")
    for path in result.created:
        print(f"  created {path}")
    if not result.created:
        print("  no recipe created")
    if result.skipped:
        print("could not be mapped as is:")
        for note in result.skipped:
            print(f"  {note}")
    return 0
