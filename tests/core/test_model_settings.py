"""Model settings written to a recipe: ``recipes.write_recipe_settings`` (comments and
unknown keys and args kept, each llama-server argument form edited where it was written)
and ``ModelManager.set_model_settings`` (stale while running, reload now)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.core.config.recipes import read_recipe, write_recipe_settings
from app.core.errors import PersistError
from app.core.models.llama_args import LlamaArgs, with_value
from app.core.models.model import ModelState

pytestmark = pytest.mark.timeout(60)

RECIPE = """\
# my model, tuned by hand
backend = "llamacpp"
model = "tiny.gguf"  # next to this file
args = [
  "-c", "4096",  # context
  "--mlock",     # keep it in RAM
  "-ngl", "99",
]
# my own note
unload_timeout = "5m"
custom_key = "kept"
"""


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


def test_model_settings_keep_comments_unknown_keys_and_unknown_args(tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    args = with_value(list(read_recipe(path).args), "ctx_size", 8192)
    write_recipe_settings(path, args=args)
    text = path.read_text()
    for kept in ("# my model, tuned by hand", "# next to this file", "# context", "# keep it in RAM",
                 "# my own note", 'custom_key = "kept"', 'unload_timeout = "5m"', 'model = "tiny.gguf"'):
        assert kept in text
    assert tomllib.loads(text)["args"] == ["-c", "8192", "--mlock", "-ngl", "99"]
    assert text.count("\n") == RECIPE.count("\n")  # edited in place: same lines


@pytest.mark.parametrize(("before", "option", "value", "after"), [
    (["-c", "4096"], "ctx_size", 8192, ["-c", "8192"]),
    (["--ctx-size=4096"], "ctx_size", 2048, ["--ctx-size=2048"]),
    (["-ngl", "99"], "n_gpu_layers", "auto", ["-ngl", "auto"]),
    (["--n-gpu-layers=auto"], "n_gpu_layers", 12, ["--n-gpu-layers=12"]),
    (["-t", "4"], "threads", 8, ["-t", "8"]),
    (["-np", "2"], "parallel", 1, ["-np", "1"]),
    (["--threads", "4", "--x"], "threads", None, ["--x"]),
    (["--x"], "ctx_size", 1024, ["--x", "--ctx-size", "1024"]),
])
def test_model_settings_edit_each_argument_form_in_place(tmp_path: Path, before, option, value, after) -> None:
    path = _recipe(tmp_path, 'model = "tiny.gguf"\nargs = [' + ", ".join(f'"{a}"' for a in before) + "]  # mine\n")
    write_recipe_settings(path, args=with_value(before, option, value))
    assert read_recipe(path).args == tuple(after)
    assert "# mine" in path.read_text()
    assert LlamaArgs.parse(after).get(option) == (LlamaArgs.parse([]).get(option) if value is None else value)


def test_model_settings_model_and_memory_estimate(tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    write_recipe_settings(path, model=tmp_path / "other.gguf", memory_estimate=6 * 1024 ** 3)
    recipe = read_recipe(path)
    assert recipe.model == tmp_path / "other.gguf" and recipe.memory_estimate == 6 * 1024 ** 3
    assert 'memory_estimate = "6GB"' in path.read_text() and "# next to this file" in path.read_text()
    write_recipe_settings(path, memory_estimate=None)  # empty: automatic again
    assert read_recipe(path).memory_estimate is None and "memory_estimate" not in path.read_text()
    write_recipe_settings(path, args=["-c", "4096"])  # memory_estimate left alone by default
    assert read_recipe(path).args == ("-c", "4096")


async def test_model_settings_stale_while_running_then_reload_now(manager_factory, write_recipe) -> None:
    path = write_recipe("a", fake=[])
    path.write_text(path.read_text() + "# a comment of mine\n")
    manager = await manager_factory()
    model = manager.get("a")
    await manager.load("a")
    first_pid = model.pid
    await manager.set_model_settings("a", args=["--chunks", "7"])
    assert model.stale and model.pid == first_pid and model.state is ModelState.READY
    assert "# a comment of mine" in path.read_text()
    await manager.set_model_settings("a", args=["--chunks", "8"], reload_now=True)
    assert model.state is ModelState.READY and not model.stale and model.pid != first_pid
    assert model.last_unload_reason is None and model.recipe.args == ("--chunks", "8")


async def test_model_settings_reload_now_when_unloaded_only_writes(manager_factory, write_recipe) -> None:
    write_recipe("a", fake=[])
    manager = await manager_factory()
    model = await manager.set_model_settings("a", args=["-c", "1"], memory_estimate=512 * 1024 ** 2,
                                             reload_now=True)
    assert model.state is ModelState.UNLOADED and not model.stale
    assert model.recipe.args == ("-c", "1") and model.recipe.memory_estimate == 512 * 1024 ** 2


async def test_model_settings_invalid_recipe_is_left_unchanged(manager_factory, write_recipe) -> None:
    path = write_recipe("a", fake=[])
    manager = await manager_factory()
    bad = "backend = [broken\n"
    path.write_text(bad)
    manager._reload_recipe_file(path)
    with pytest.raises(PersistError) as err:
        await manager.set_model_settings("a", args=["-c", "1"])
    assert err.value.kind == "invalid" and path.read_text() == bad
