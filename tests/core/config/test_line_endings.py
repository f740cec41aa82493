"""Rewriting a recipe or settings file keeps its line endings (a file edited on Windows uses CRLF)."""

from __future__ import annotations

import pytest

from app.core.config.recipes import USE_GLOBAL, write_recipe_timeout
from app.core.config.toml_edit import set_toml_key

CRLF_RECIPE = (
    b'# My coding model\r\n'
    b'backend = "command"\r\n'
    b'command = ["my-server",\r\n'
    b'           "--port", "{port}"]  # wrapped\r\n'
    b'unload_timeout = "5m"\r\n'
    b'\r\n'
    b'[env]\r\n'
    b'CUDA_VISIBLE_DEVICES = "1"\r\n'
)


def _lone_lf(data: bytes) -> int:
    return data.count(b"\n") - data.count(b"\r\n")


@pytest.mark.parametrize(("timeout", "expected"), [
    (600, b'unload_timeout = "10m"\r\n'),
    (None, b'unload_timeout = "never"\r\n'),
])
def test_changing_a_timeout_keeps_crlf(tmp_path, timeout, expected):
    path = tmp_path / "coder.toml"
    path.write_bytes(CRLF_RECIPE)
    write_recipe_timeout(path, timeout)
    data = path.read_bytes()
    assert _lone_lf(data) == 0, data
    assert data == CRLF_RECIPE.replace(b'unload_timeout = "5m"\r\n', expected)


def test_removing_and_adding_a_key_keeps_crlf(tmp_path):
    path = tmp_path / "coder.toml"
    path.write_bytes(CRLF_RECIPE)
    write_recipe_timeout(path, USE_GLOBAL)
    assert path.read_bytes() == CRLF_RECIPE.replace(b'unload_timeout = "5m"\r\n', b"")
    write_recipe_timeout(path, 90)  # a new key: tomlkit writes it with "\n" of its own
    data = path.read_bytes()
    assert _lone_lf(data) == 0, data
    assert b'unload_timeout = "1m30s"\r\n' in data
    assert data.startswith(b'# My coding model\r\nbackend = "command"\r\n')


def test_a_crlf_file_without_a_final_newline_gets_crlf_for_the_new_key(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_bytes(b'# settings\r\nport = 9000')
    set_toml_key(path, "global_unload_timeout", "10m")
    data = path.read_bytes()
    assert _lone_lf(data) == 0, data
    assert data.startswith(b"# settings\r\nport = 9000\r\n")


def test_lf_files_stay_lf(tmp_path):
    path = tmp_path / "coder.toml"
    lf = CRLF_RECIPE.replace(b"\r\n", b"\n")
    path.write_bytes(lf)
    write_recipe_timeout(path, 600)
    assert path.read_bytes() == lf.replace(b'"5m"', b'"10m"')


def test_a_mixed_file_keeps_each_existing_line_as_it_was(tmp_path):
    path = tmp_path / "coder.toml"
    mixed = b'# written on Windows\r\nbackend = "command"\ncommand = ["x", "{port}"]\r\nunload_timeout = "5m"\n'
    path.write_bytes(mixed)
    write_recipe_timeout(path, 600)
    assert path.read_bytes() == mixed.replace(b'"5m"', b'"10m"')
