"""Recipe files: reading, every kind of bad input, and comment-keeping atomic rewrites."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.config import atomic_write
from app.core.config.durations import USE_GLOBAL
from app.core.config.recipes import MAX_RECIPE_BYTES, RecipeError, read_recipe, write_recipe_timeout
from app.core.config.toml_edit import TomlEditError, set_toml_key

USER_RECIPE = """\
# My daily coding model
backend = "llamacpp"                 # or "command"
model = "~/models/qwen3-4b-q4_k_m.gguf"   # ~ expanded
args = ["--ctx-size", "8192"]        # extra llama-server arguments
flavour = "spicy"                    # a key Siesta does not know

[env]  # a table at the end
FOO = "bar"
"""


def test_reads_the_documented_recipe(tmp_path: Path):
    path = tmp_path / "coder.toml"
    path.write_text(USER_RECIPE)
    recipe = read_recipe(path)
    assert recipe.name == "coder" and recipe.backend == "llamacpp"
    assert recipe.model == Path.home() / "models/qwen3-4b-q4_k_m.gguf"
    assert recipe.args == ("--ctx-size", "8192")
    assert recipe.has_unload_timeout is False and recipe.unknown_keys == ("flavour",)
    assert dict(recipe.env) == {"FOO": "bar"}


def test_relative_model_path_is_relative_to_the_recipe(tmp_path: Path):
    path = tmp_path / "r.toml"
    path.write_text('model = "../m/x.gguf"\n')
    assert read_recipe(path).model == (tmp_path.parent / "m/x.gguf").resolve()


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("a", "model = [1\n", "not valid TOML"),
        ("a", 'backend = "ollama"\nmodel = "x"\n', "'backend'"),
        ("a", "model = 5\n", "'model'"),
        ("a", 'model = "x"\nargs = "--ctx-size 8"\n', "'args'"),
        ("a", 'model = "x"\nunload_timeout = "soon"\n', "'unload_timeout'"),
        ("a", 'model = "x"\npreload = "yes"\n', "'preload'"),
        ("a", 'model = "x"\ngroup = 3\n', "'group'"),
        ("a", 'backend = "command"\ncommand = ["srv"]\n', "{port}"),
        ("a", 'backend = "command"\ncommand = []\n', "'command'"),
        ("a", 'backend = "command"\ncommand = ["s", "{port}"]\nhealth_path = "health"\n', "'health_path'"),
        ("a", 'backend = "command"\ncommand = ["s", "{port}"]\nenv = { A = [1] }\n', "'env'"),
        ("bad name", 'model = "x"\n', "invalid model name"),
        ("semi;colon", 'model = "x"\n', "invalid model name"),
    ],
)
def test_bad_recipes_name_the_file_and_field(tmp_path: Path, name, text, needle):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        read_recipe(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_binary_and_enormous_files_are_refused(tmp_path: Path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\x00\xff\xfe" * 100)
    with pytest.raises(RecipeError, match="not a text file|not valid TOML"):
        read_recipe(binary)
    huge = tmp_path / "huge.toml"
    huge.write_text('model = "x"\n# ' + "x" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(RecipeError, match="at most"):
        read_recipe(huge)


def test_timeout_rewrite_keeps_comments_order_and_unknown_keys(tmp_path: Path):
    path = tmp_path / "coder.toml"
    path.write_text(USER_RECIPE)
    write_recipe_timeout(path, 900)
    text = path.read_text()
    assert text.replace('unload_timeout = "15m"\n', "") == USER_RECIPE
    assert text.index("unload_timeout") < text.index("[env]")  # a top-level key, not inside [env]
    assert read_recipe(path).unload_timeout == 900
    write_recipe_timeout(path, None)
    assert 'unload_timeout = "never"' in path.read_text()
    write_recipe_timeout(path, USE_GLOBAL)
    assert path.read_text() == USER_RECIPE


def test_rewrite_follows_symlinks_and_keeps_permissions(tmp_path: Path):
    real = tmp_path / "dotfiles" / "coder.toml"
    real.parent.mkdir()
    real.write_text(USER_RECIPE)
    os.chmod(real, 0o600)
    link = tmp_path / "coder.toml"
    link.symlink_to(real)
    write_recipe_timeout(link, 60)
    assert link.is_symlink()
    assert 'unload_timeout = "1m"' in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in real.parent.iterdir()) == ["coder.toml"]  # no temp file left


def test_never_rewrites_a_file_it_failed_to_parse(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_bytes(b"# mine\nmodel = [oops\n")
    with pytest.raises(TomlEditError) as info:
        write_recipe_timeout(path, 60)
    assert info.value.kind == "invalid"
    assert path.read_bytes() == b"# mine\nmodel = [oops\n"


@pytest.mark.parametrize("failing_step", ["fsync", "replace"])
def test_failed_write_leaves_the_file_intact(tmp_path: Path, monkeypatch, failing_step):
    """Root ignores file modes, so the failure (a full or read-only disk) is injected at the write."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    path = folder / "coder.toml"
    path.write_text(USER_RECIPE)

    def fail(*args, **kwargs):
        raise OSError(28 if failing_step == "fsync" else 30, os.strerror(28 if failing_step == "fsync" else 30))

    monkeypatch.setattr(atomic_write.os, failing_step, fail)
    with pytest.raises(TomlEditError) as info:
        set_toml_key(path, "unload_timeout", "5m")
    assert info.value.kind == "io" and str(path) in str(info.value)
    assert path.read_text() == USER_RECIPE
    assert sorted(p.name for p in folder.iterdir()) == ["coder.toml"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_recipe_loader_never_raises_anything_but_recipe_error(tmp_path: Path, data: bytes):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    try:
        read_recipe(path)
    except RecipeError:
        pass
