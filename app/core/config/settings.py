"""Siesta's settings: CLI flag > environment (``SIESTA_*``) > ``settings.toml`` > default.

Every value remembers where it came from, so the API can show it and refuse a run-time
change to a value that a flag or an environment variable has fixed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, PlainValidator, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.core.config.durations import Timeout, parse_duration, short_repr
from app.core.config.endpoint import DEFAULT_HOST, DEFAULT_PORT, SettingsError, read_settings_file
from app.core.config.memory_limits import MemoryLimit, parse_memory_limit

ENV_PREFIX = "SIESTA_"
TOML_INT_MAX = 2**63 - 1  # the largest integer TOML (settings.toml) can hold
LEMONADE_TIMEOUT_ENV = "LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER"


def _finite_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError("must be a finite duration such as \"10s\", not never")
    return seconds


def _not_bool(value: object) -> object:
    """A count given as true/false is a mistake, though pydantic would read it as 1/0."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


def _host_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


ORIGIN_PATTERN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[^\s/?#@:\[\]*]+)(?::(?P<port>\*|[0-9]{1,5}))?")
"""An Origin (``http://localhost:5173``) or an ``allowed_origins`` pattern, where the host
or the port may be ``*`` (any): ``http://localhost:*``, ``vscode-webview://*``."""


def _origin_patterns(value: list[str]) -> list[str]:
    patterns = []
    for item in value:
        pattern = item.strip().removesuffix("/")
        match = ORIGIN_PATTERN.fullmatch(pattern)
        if match is None or match["port"] not in (None, "*") and not 0 < int(match["port"]) <= 65535:
            raise ValueError(f"{item[:100]!r} is not an origin: write scheme://host or scheme://host:port, where "
                             "host or port may be * (http://localhost:5173, http://localhost:*, vscode-webview://*)")
        patterns.append(pattern)
    return patterns


def _port_or_off(value: object) -> object:
    """``ollama_port``: 0 (or an empty value) means off, as unset does."""
    if isinstance(value, bool):
        raise ValueError("must be a port number (0 = off), not true or false")
    return None if value in (0, "0", "") else value


def _timeout(value: object) -> Timeout:
    return None if value is None else parse_duration(value)


TimeoutField = Annotated[Timeout, BeforeValidator(_timeout)]
FiniteDuration = Annotated[float, BeforeValidator(_finite_duration)]
MemoryLimitField = Annotated[
    MemoryLimit,
    NoDecode,  # the environment's text ("80%", or a JSON table) goes to parse_memory_limit as it is
    PlainValidator(parse_memory_limit),
    PlainSerializer(lambda limit: limit.to_setting()),
]
"""A memory budget or floor (:mod:`app.core.config.memory_limits`): "20GB", "85%", "off" or a table."""

MEMORY_SETTINGS = ("memory_budget", "free_memory_floor")


class Settings(BaseSettings):
    """Every setting of one Siesta instance."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    global_unload_timeout: TimeoutField = 300.0
    max_loaded_models: Annotated[int, BeforeValidator(_not_bool)] = Field(3, ge=0, le=TOML_INT_MAX)
    llama_server: Path | None = None
    stop_timeout: FiniteDuration = 10.0
    load_timeout: FiniteDuration = 300.0
    allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_host_list)] = []
    # Pages whose requests are accepted besides Siesta's own (see app/api/guard.py).
    allowed_origins: Annotated[list[str], NoDecode, BeforeValidator(_host_list), AfterValidator(_origin_patterns)] = []
    notify_idle_unload: bool = False
    notify_crash: bool = True
    memory_budget: MemoryLimitField = parse_memory_limit("90%")
    free_memory_floor: MemoryLimitField = parse_memory_limit("5%")
    notify_memory_pressure: bool = True
    # Streaming chats that wait for a load get its progress as "thinking" (app/api/load_progress.py).
    loading_feedback: bool = False
    api_key: str | None = None
    # A second listener on Ollama's port (11434), same host, same routes (see app/api/server.py).
    ollama_port: Annotated[int | None, BeforeValidator(_port_or_off)] = Field(None, ge=1, le=65535)
    # POST /api/pull from loopback clients, or with the API key (see app/api/ollama/manage.py).
    allow_pull_over_http: bool = True
    engine_releases_url: str = "https://api.github.com/repos/ggml-org/llama.cpp"  # llama.cpp's releases API (or a mirror)

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _LemonadeTimeoutSource(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )


class _LemonadeTimeoutSource(PydanticBaseSettingsSource):
    """The seed's ``LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER`` (seconds, 0 = off) as a lower-priority alias."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        raw = os.environ.get(LEMONADE_TIMEOUT_ENV)
        if raw is None or raw.strip() == "":
            return {}
        try:
            seconds = float(raw)
        except ValueError:
            return {"global_unload_timeout": raw}  # let validation name it
        return {"global_unload_timeout": "never" if seconds <= 0 else seconds}


FIELD_NAMES = tuple(Settings.model_fields)
RUNTIME_SETTABLE = ("global_unload_timeout", "max_loaded_models", "notify_idle_unload", "notify_crash",
                    *MEMORY_SETTINGS, "notify_memory_pressure", "allowed_origins")


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


class LoadedSettings:
    """Settings in force plus where each value came from (``flag``, ``env``, ``file``, ``default``)."""

    def __init__(self, values: Settings, sources: dict[str, str], settings_file: Path) -> None:
        self.values = values
        self.sources = sources
        self.settings_file = settings_file
        # What this run could not do as a setting asks (field -> why, e.g. ollama_port taken).
        self.problems: dict[str, str] = {}

    def fixed_by(self, field: str) -> str | None:
        """The flag or variable that pins ``field`` for this run, or None when it may change."""
        source = self.sources.get(field, "default")
        if source.startswith(("flag ", "env ")):
            return source.split(" ", 1)[1]
        return None

    def describe(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in FIELD_NAMES:
            value = getattr(self.values, name)
            if name == "api_key" and value:
                value = "(set)"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, MemoryLimit):
                value = value.to_setting()
            out[name] = {"value": value, "source": self.sources.get(name, "default")}
        return out


def load_settings(settings_file: Path, flags: dict[str, Any] | None = None) -> LoadedSettings:
    """Builds the settings from flags, environment and ``settings_file``; SettingsError on bad input."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    file_data = read_settings_file(settings_file)
    bound = type(
        "BoundSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": settings_file})},
    )
    try:
        values = bound(**flags)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, flags, file_data, settings_file)) from None
    sources: dict[str, str] = {}
    for name in FIELD_NAMES:
        if name in flags:
            sources[name] = f"flag {flag_name(name)}"
        elif env_name(name) in os.environ:
            sources[name] = f"env {env_name(name)}"
        elif name == "global_unload_timeout" and os.environ.get(LEMONADE_TIMEOUT_ENV, "").strip():
            sources[name] = f"env {LEMONADE_TIMEOUT_ENV}"
        elif name in file_data:
            sources[name] = "file settings.toml"
        else:
            sources[name] = "default"
    return LoadedSettings(values, sources, settings_file)


def _explain(exc: ValidationError, flags: dict[str, Any], file_data: dict[str, Any], path: Path) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        if field in flags:
            where = f"flag {flag_name(field)}"
        elif env_name(field) in os.environ:
            where = f"environment variable {env_name(field)}"
        elif field == "global_unload_timeout" and LEMONADE_TIMEOUT_ENV in os.environ:
            where = f"environment variable {LEMONADE_TIMEOUT_ENV}"
        elif field in file_data:
            where = f"{path}, key {field}"
        else:
            where = field
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message} (got {short_repr(error.get('input'))})")
    return "invalid settings: " + "; ".join(lines)


def validate_setting(field: str, value: Any) -> Any:
    """Validates one setting's new value as the file would hold it; ValueError names the field."""
    if field not in FIELD_NAMES:
        raise ValueError(f"unknown setting {field!r}")
    try:
        checked = Settings.model_validate({field: value}, context=None)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{field}: {message} (got {short_repr(value)})") from None
    return getattr(checked, field)
