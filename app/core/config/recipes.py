"""Recipe files: one model each, ``recipes/<name>.toml``, read with ``tomllib``.

A recipe says how to start a model's server (``backend = "llamacpp"`` with a GGUF, or
``backend = "command"`` with any OpenAI-compatible server) and the model's own idle
timeout, group and preload flag. Only ``unload_timeout`` is ever written back, through
:func:`app.core.config.toml_edit.set_toml_key`, which keeps the user's comments.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.config.durations import (
    USE_GLOBAL,
    DurationError,
    ModelTimeout,
    format_model_timeout,
    parse_duration,
)
from app.core.config.redact import redact_text
from app.core.config.sizes import SizeError, parse_size
from app.core.config.toml_edit import set_toml_key, set_toml_keys

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
# A recipe's file is NAME.toml, and a file name has at most 255 bytes on the common file
# systems (the pattern allows ASCII only: a byte a character).
NAME_MAX = 255 - len(".toml")
MAX_RECIPE_BYTES = 256 * 1024
BACKENDS = ("llamacpp", "command")
KNOWN_KEYS = {
    "backend", "model", "args", "unload_timeout", "group", "preload",
    "command", "health_path", "env", "description", "memory_estimate", "loading_feedback",
}


class RecipeError(Exception):
    """A recipe that cannot be used; the message names the file and the field. It repeats
    what the field holds (a whole command line), and is shown in logs, the health answer and
    503s, so any secret in it is replaced (:func:`~app.core.config.redact.redact_text`)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))


@dataclass(frozen=True)
class Recipe:
    """One model's recipe as read from its file."""

    name: str
    path: Path
    backend: str
    model: Path | None = None
    args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    health_path: str = "/health"
    env: tuple[tuple[str, str], ...] = ()
    unload_timeout: ModelTimeout = USE_GLOBAL
    group: str | None = None
    preload: bool = False
    memory_estimate: int | None = None  # bytes the user says the model needs when loaded
    loading_feedback: bool | None = None  # this model's own loading_feedback (None: the setting's)
    unknown_keys: tuple[str, ...] = field(default=(), compare=False)

    @property
    def has_unload_timeout(self) -> bool:
        """Whether the recipe sets a timeout of its own (else the global one applies)."""
        return self.unload_timeout is not USE_GLOBAL

    @property
    def launch_key(self) -> tuple[Any, ...]:
        """What a running server was started from; a change makes that server stale."""
        return (self.backend, self.model, self.args, self.command, self.health_path, self.env)


def is_valid_name(name: str) -> bool:
    return (len(name) <= NAME_MAX and bool(NAME_PATTERN.fullmatch(name)) and name not in (".", "..")
            and not name.startswith("."))


def recipe_name(path: Path) -> str:
    return path.stem


def read_recipe(path: Path) -> Recipe:
    """Reads and checks one recipe file; RecipeError names the file and what is wrong."""
    name = recipe_name(path)
    if not is_valid_name(name):
        raise RecipeError(
            f"{path}: invalid model name {name!r}: use letters, digits, '.', '_' and '-' only"
        )
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: file is {size} bytes; a recipe may be at most {MAX_RECIPE_BYTES}")
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (expected UTF-8 TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from exc
    return parse_recipe(name, path, data)


def parse_recipe(name: str, path: Path, data: dict[str, Any]) -> Recipe:
    """Checks a recipe's table; relative model paths are taken relative to the file."""

    def fail(key: str, expected: str) -> RecipeError:
        return RecipeError(f"{path}: field {key!r}: expected {expected}, got {data.get(key)!r}")

    backend = data.get("backend", "llamacpp")
    if backend not in BACKENDS:
        raise fail("backend", "one of " + ", ".join(repr(b) for b in BACKENDS))

    def str_list(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise fail(key, "a list of strings")
        return tuple(str(v) for v in value)

    args = str_list("args")
    model: Path | None = None
    command: tuple[str, ...] = ()
    if backend == "llamacpp":
        raw_model = data.get("model")
        if not isinstance(raw_model, str) or not raw_model.strip():
            raise fail("model", "the path of a GGUF file (a string)")
        model = Path(raw_model).expanduser()
        if not model.is_absolute():
            model = (path.parent / model).resolve()
    else:
        command = str_list("command")
        if not command:
            raise fail("command", 'a non-empty list such as ["server", "--port", "{port}"]')
        if not any("{port}" in part for part in command):
            raise fail("command", 'a command that takes the port as "{port}"')

    health_path = data.get("health_path", "/health")
    if not isinstance(health_path, str) or not health_path.startswith("/"):
        raise fail("health_path", 'a path starting with "/"')
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, (str, int, float)) for v in env.values()):
        raise fail("env", "a table of strings")
    timeout: ModelTimeout = USE_GLOBAL
    if "unload_timeout" in data:
        try:
            timeout = parse_duration(data["unload_timeout"])
        except DurationError as exc:
            raise RecipeError(f"{path}: field 'unload_timeout': {exc}") from None
    group = data.get("group")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise fail("group", "a non-empty string")
    preload = data.get("preload", False)
    if not isinstance(preload, bool):
        raise fail("preload", "true or false")
    loading_feedback = data.get("loading_feedback")
    if loading_feedback is not None and not isinstance(loading_feedback, bool):
        raise fail("loading_feedback", "true or false")
    memory_estimate: int | None = None
    if "memory_estimate" in data:
        try:
            memory_estimate = parse_size(data["memory_estimate"])
        except SizeError as exc:
            raise RecipeError(f"{path}: field 'memory_estimate': {exc}") from None
    return Recipe(
        name=name,
        path=path,
        backend=backend,
        model=model,
        args=args,
        command=command,
        health_path=health_path,
        env=tuple(sorted((str(k), str(v)) for k, v in env.items())),
        unload_timeout=timeout,
        group=group,
        preload=preload,
        memory_estimate=memory_estimate,
        loading_feedback=loading_feedback,
        unknown_keys=tuple(sorted(set(data) - KNOWN_KEYS)),
    )


def write_recipe_timeout(path: Path, timeout: ModelTimeout) -> None:
    """Sets ``unload_timeout`` in a recipe (:data:`USE_GLOBAL` removes the key), keeping its
    comments. The one write path for the manager and the CLI's offline edit."""
    set_toml_key(path, "unload_timeout", None if timeout is USE_GLOBAL else format_model_timeout(timeout))


UNCHANGED: Any = object()
"""For :func:`write_recipe_settings`: leave ``memory_estimate`` as it is."""


def _size_text(size: int) -> str | int:
    """A byte count as a recipe writes it: ``"6GB"``, ``"512MB"`` when exact, else the bytes."""
    for unit, power in (("GB", 3), ("MB", 2)):
        if size and size % 1024 ** power == 0:
            return f"{size // 1024 ** power}{unit}"
    return size


def write_recipe_settings(path: Path, *, args: list[str] | tuple[str, ...] | None = None,
                          model: Path | None = None, memory_estimate: int | None | Any = UNCHANGED) -> None:
    """Writes a recipe's load settings in one atomic edit that keeps its comments and every
    other key: ``args`` (None: unchanged; an existing array is edited item by item),
    ``model`` (None: unchanged) and ``memory_estimate`` (bytes; None removes the key, so
    the estimate is automatic; :data:`UNCHANGED`: left alone). TomlEditError when the file
    cannot be edited; then nothing is written."""
    values: dict[str, Any] = {}
    if args is not None:
        values["args"] = [str(a) for a in args]
    if model is not None:
        values["model"] = str(model)
    if memory_estimate is not UNCHANGED:
        values["memory_estimate"] = None if memory_estimate is None else _size_text(parse_size(memory_estimate))
    if values:
        set_toml_keys(path, values)


def scan_recipe_files(recipes_dir: Path) -> list[Path]:
    """The recipe files in a folder, sorted by name; none when the folder is missing."""
    try:
        return sorted(p for p in recipes_dir.glob("*.toml") if not p.name.startswith("."))
    except OSError:
        return []
