"""Settings: flag > environment > settings.toml > default, with sources, and the Lemonade alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config.settings import SettingsError, load_settings


def test_precedence_and_sources(tmp_path: Path, monkeypatch):
    file = tmp_path / "settings.toml"
    file.write_text('port = 9000\nhost = "127.0.0.2"\nmax_loaded_models = 1\nglobal_unload_timeout = "10m"\n')
    monkeypatch.setenv("SIESTA_PORT", "9100")
    monkeypatch.setenv("SIESTA_MAX_LOADED_MODELS", "2")
    loaded = load_settings(file, {"port": 9200})
    values = loaded.values
    assert (values.port, values.max_loaded_models, values.host, values.stop_timeout) == (9200, 2, "127.0.0.2", 10)
    assert values.global_unload_timeout == 600
    assert loaded.sources["port"] == "flag --port"
    assert loaded.sources["max_loaded_models"] == "env SIESTA_MAX_LOADED_MODELS"
    assert loaded.sources["host"] == "file settings.toml"
    assert loaded.sources["stop_timeout"] == "default"
    assert loaded.fixed_by("port") == "--port" and loaded.fixed_by("host") is None


def test_defaults(tmp_path: Path):
    values = load_settings(tmp_path / "missing.toml").values
    assert (values.host, values.port, values.global_unload_timeout, values.max_loaded_models) == ("127.0.0.1", 8777, 300, 3)
    assert values.stop_timeout == 10 and values.allowed_hosts == []


@pytest.mark.parametrize(("lemonade", "siesta", "expected", "source"), [
    ("0", None, None, "env LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER"),
    ("120", None, 120, "env LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER"),
    ("120", "5m", 300, "env SIESTA_GLOBAL_UNLOAD_TIMEOUT"),
    ("", None, 300, "default"),
])
def test_lemonade_timer_is_an_alias_and_siesta_name_wins(tmp_path, monkeypatch, lemonade, siesta, expected, source):
    monkeypatch.setenv("LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER", lemonade)
    if siesta:
        monkeypatch.setenv("SIESTA_GLOBAL_UNLOAD_TIMEOUT", siesta)
    loaded = load_settings(tmp_path / "none.toml")
    assert loaded.values.global_unload_timeout == expected
    assert loaded.sources["global_unload_timeout"] == source


def test_zero_global_timeout_means_unload_at_once_but_lemonade_zero_means_never(tmp_path, monkeypatch):
    monkeypatch.setenv("SIESTA_GLOBAL_UNLOAD_TIMEOUT", "0")
    assert load_settings(tmp_path / "x.toml").values.global_unload_timeout == 0


@pytest.mark.parametrize(("text", "needle"), [
    ("port = [1\n", "not valid TOML"),
    ('port = "abc"\n', "key port"),
    ('global_unload_timeout = "soon"\n', "key global_unload_timeout"),
    ("max_loaded_models = -1\n", "key max_loaded_models"),
    ('stop_timeout = "never"\n', "key stop_timeout"),
])
def test_bad_settings_file_names_file_and_key(tmp_path: Path, text, needle):
    file = tmp_path / "settings.toml"
    file.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(file)
    assert str(file) in str(info.value) and needle in str(info.value)


def test_bad_env_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SIESTA_PORT", "eighty")
    with pytest.raises(SettingsError, match="SIESTA_PORT"):
        load_settings(tmp_path / "x.toml")


def test_allowed_hosts_from_env_comma_list(tmp_path, monkeypatch):
    monkeypatch.setenv("SIESTA_ALLOWED_HOSTS", "box.local, other")
    assert load_settings(tmp_path / "x.toml").values.allowed_hosts == ["box.local", "other"]


def test_client_endpoint_follows_the_same_order_as_the_settings(tmp_path: Path, monkeypatch):
    from app.core.config.endpoint import resolve_endpoint

    file = tmp_path / "settings.toml"
    file.write_text('port = 9000\nhost = "0.0.0.0"\napi_key = "k1"\n')
    for flags, env in (({}, {}), ({"port": 9200}, {"SIESTA_PORT": "9100"}), ({}, {"SIESTA_PORT": "9100"})):
        monkeypatch.delenv("SIESTA_PORT", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        endpoint = resolve_endpoint(file, flags)
        full = load_settings(file, flags).values
        assert (endpoint.host, endpoint.port, endpoint.api_key) == (full.host, full.port, full.api_key)
    assert endpoint.base_url == "http://127.0.0.1:9100"  # a wildcard bind is reached on loopback
    monkeypatch.delenv("SIESTA_PORT")
    file.write_text("port = 70000\n")
    with pytest.raises(SettingsError, match="key port"):
        resolve_endpoint(file, {})
