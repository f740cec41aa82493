"""Import the models of another model manager as Siesta recipes: llama-swap or Lemonade.

:func:`import_config` reads one configuration and writes one recipe per model it can
carry over. It returns an :class:`ImportResult`: the recipe files created, and a list of
``"name: reason"`` lines for everything that could not be carried over. A line that says
``not imported`` means the whole model was left out; any other line names a setting that
was dropped or changed while the model itself was imported. Lines about the configuration
as a whole are named after the file (``config.yaml: ...``) or the group
(``group NAME: ...``).

Decisions where the source formats and Siesta differ:

* **Existing recipes are never overwritten, and never duplicated.** A model whose recipe
  name is already taken is skipped (``not imported: recipes/NAME.toml already exists``),
  so running the same import twice changes nothing. Two models of one import whose names
  clean up to the same recipe name get ``-2``, ``-3``, ... instead.
* **Names.** A model's name becomes its recipe name when it is a valid one (letters,
  digits, ``.``, ``_``, ``-``); otherwise it is cleaned up with
  :func:`app.core.discovery.recipe_name_for` and the change is reported, because clients
  must then ask for the new name.
* Every recipe starts with a comment saying what it was imported from, and is checked
  with Siesta's own recipe parser before it is written (atomically).

llama-swap (``config.yaml``, a ``models:`` mapping):

* ``cmd`` becomes a ``command`` recipe: comment lines are removed, global and per-model
  ``macros`` (and ``${MODEL_ID}``, ``${env.VAR}``) are expanded, ``\\`` line
  continuations are joined, the text is split like a shell would (``shlex``), and
  ``${PORT}`` becomes ``{port}``. A model with an unknown macro is not imported.
* ``proxy``: the default (``http://localhost:${PORT}``) needs nothing. A proxy on this
  computer with a fixed port whose number appears in ``cmd`` (``--port 8999``) has that
  number replaced by ``{port}`` (reported); when ``cmd`` already takes ``${PORT}``, a
  fixed proxy port is ignored (reported). A proxy to another host, or a ``cmd`` that does
  not take the port, cannot work under Siesta: not imported.
* ``checkEndpoint`` becomes ``health_path``. ``none`` (no health check) has no Siesta
  equivalent, since Siesta always waits for a 200; it becomes ``/v1/models``, which every
  OpenAI-compatible server answers once it is ready, and this is reported.
* ``ttl``: n > 0 becomes ``unload_timeout`` of n seconds, 0 becomes ``never``, -1 or
  absent leaves the key out. ``globalTTL`` is a global setting: reported, never written
  into a recipe.
* Groups (top-level ``groups:`` or ``routing.router.settings.groups``): a group with
  ``swap: true`` (the default: one member at a time) means what a Siesta ``group`` means,
  so its members get ``group = "NAME"``. Its ``exclusive`` (unloading every other group)
  and ``persistent`` flags have no equivalent and are reported. A ``swap: false`` group
  lets its members run together, which is what Siesta does without a group: its members
  get no group, and this is reported. Models in no group form llama-swap's default group,
  which runs one model at a time; they get ``group = "llama-swap"`` so that stays true.
  The ``matrix`` router has no equivalent: reported, and no groups are written.
* ``hooks.on_startup.preload`` sets ``preload = true``; ``env`` (``"K=V"`` strings)
  becomes the ``env`` table; ``description`` is kept. ``aliases``, ``useModelName``,
  ``filters``, ``unlisted``, ``metadata``, ``cmdStop`` and the rest are reported.

Lemonade (a folder, or its ``user_models.json``, with ``recipe_options.json`` beside it
when present):

* Only ``recipe: llamacpp`` models are imported; others are reported with their engine.
* ``checkpoint`` ``org/repo:file.gguf`` or ``org/repo:QUANT`` is looked up in the Hugging
  Face hub cache under ``home`` (``models--org--repo/snapshots/<rev>/``; the newest
  snapshot that has it wins). When no GGUF is found the model is skipped with reason
  ``model file not found in the Hugging Face cache: CHECKPOINT``, so no broken recipe is
  left behind. An ``mmproj`` from the same repo becomes ``--mmproj PATH``.
* From ``recipe_options.json`` (keyed ``user.NAME``): ``ctx_size`` becomes
  ``args = ["--ctx-size", "N"]``, ``llamacpp_args`` (one string) is split and appended.
  ``auto_evict: true`` with ``evict_idle_timeout`` becomes ``unload_timeout``;
  ``auto_evict: false`` (never evict this model) becomes ``unload_timeout = "never"``;
  ``auto_evict`` null or absent leaves the key out (the global timeout applies).
  ``llamacpp_backend`` is reported (Siesta runs one llama-server build), as are options
  of built-in models, which are not user models.

No Qt here; ``siesta import PATH`` and the tray menu both use :func:`import_config`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .discovery import (
    hf_hub_caches, is_gguf_file, recipe_name_for, render_recipe, write_new_recipe,
)
from .durations import DurationError, format_duration, parse_duration
from .recipes import RecipeError, is_valid_name

__all__ = [
    "ImportResult", "ImportConfigError", "import_config", "detect_format",
    "import_llama_swap", "import_lemonade", "find_import_candidates",
    "LLAMA_SWAP_DEFAULT_GROUP",
]

MAX_CONFIG_BYTES = 4 * 1024 * 1024
LLAMA_SWAP_DEFAULT_GROUP = "llama-swap"
NO_HEALTH_CHECK_PATH = "/v1/models"


@dataclass
class ImportResult:
    """What an import did: the recipe files it created, and ``"name: reason"`` lines for
    what it could not carry over (``"name: not imported: ..."`` for a whole model)."""

    created: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: reason"
    kind: str = ""  # "llama-swap" | "lemonade"


class ImportConfigError(Exception):
    """The configuration cannot be read at all: missing, unreadable, or not a known format."""


class _NotImported(Exception):
    """One model cannot be imported; the message is the reason."""


# ---------------------------------------------------------------------------- detection


def detect_format(path: Path) -> tuple[str, Path]:
    """``("llama-swap", config file)`` or ``("lemonade", user_models.json)`` for ``path``.

    ``path`` may be a llama-swap YAML file, a Lemonade ``user_models.json`` (or its
    ``recipe_options.json``), or a folder holding one of them.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "user_models.json").is_file():
            return "lemonade", path / "user_models.json"
        for name in ("config.yaml", "config.yml"):
            if (path / name).is_file():
                return "llama-swap", path / name
        raise ImportConfigError(
            f"{path}: no Lemonade user_models.json or llama-swap config.yaml in this folder"
        )
    if not path.is_file():
        raise ImportConfigError(f"{path}: file not found")
    lower = path.name.lower()
    if lower == "recipe_options.json":
        sibling = path.with_name("user_models.json")
        if sibling.is_file():
            return "lemonade", sibling
        raise ImportConfigError(f"{path}: Lemonade's recipe_options.json needs user_models.json beside it")
    if lower.endswith(".json"):
        return "lemonade", path
    if lower.endswith((".yaml", ".yml")):
        return "llama-swap", path
    text = _read_text(path)
    try:
        json.loads(text)
        return "lemonade", path
    except ValueError:
        pass
    data = _parse_yaml(path, text)
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        return "llama-swap", path
    raise ImportConfigError(f"{path}: not a llama-swap config.yaml or a Lemonade user_models.json")


def import_config(
    path: Path,
    recipes_dir: Path,
    *,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ImportResult:
    """Imports a llama-swap config or a Lemonade folder into ``recipes_dir``.

    ``home`` (default: the user's home) is where Lemonade's Hugging Face cache is looked
    up; ``env`` (default ``os.environ``) supplies ``HF_HOME``-style variables and
    llama-swap's ``${env.VAR}`` macros. Raises ImportConfigError when the file cannot be
    read or is neither format; problems with single models go into ``skipped``.
    """
    kind, file = detect_format(path)
    if kind == "lemonade":
        return import_lemonade(file, recipes_dir, home=home, env=env)
    return import_llama_swap(file, recipes_dir, env=env)


def find_import_candidates(home: Path | None = None) -> list[Path]:
    """Existing configurations in their usual places, for a menu to offer first."""
    home = Path.home() if home is None else home
    candidates = [
        home / ".cache" / "lemonade" / "user_models.json",
        home / ".config" / "lemonade" / "user_models.json",
        home / ".config" / "llama-swap" / "config.yaml",
        home / "llama-swap" / "config.yaml",
    ]
    return [p for p in candidates if p.is_file()]


# ---------------------------------------------------------------------------- shared


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ImportConfigError(f"{path}: file is {size} bytes; too large for a configuration")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImportConfigError(f"{path}: not a text file (expected UTF-8)") from None
    except OSError as exc:
        raise ImportConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml  # PyYAML; only needed for llama-swap

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ImportConfigError(f"{path}: not valid YAML: {exc}") from exc


class _Writer:
    """Picks recipe names for one import and writes the recipes, filling an ImportResult."""

    def __init__(self, recipes_dir: Path, result: ImportResult) -> None:
        self.recipes_dir = recipes_dir
        self.result = result
        self._taken: set[str] = set()

    def name_for(self, source_name: str) -> str:
        base = source_name if is_valid_name(source_name) else recipe_name_for(source_name)
        n, name = 1, base
        while name.lower() in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name.lower())
        return name

    def write(self, source_name: str, name: str, comments: list[str], fields: dict[str, Any],
              notes: list[str]) -> None:
        """Writes one recipe; on success, the model's notes go into ``skipped``."""
        text = render_recipe(comments, fields)
        try:
            created = write_new_recipe(self.recipes_dir, name, text, suffix=False)
        except RecipeError as exc:
            self.result.skipped.append(f"{source_name}: not imported: {exc}")
            return
        except OSError as exc:
            self.result.skipped.append(f"{source_name}: not imported: cannot write the recipe: {exc.strerror or exc}")
            return
        if created is None:
            self.result.skipped.append(
                f"{source_name}: not imported: recipes/{name}.toml already exists (left unchanged)"
            )
        else:
            self.result.created.append(created)
            if name != source_name:
                self.result.skipped.append(
                    f"{source_name}: imported as {name!r} (a recipe name may use letters, digits, "
                    f"'.', '_' and '-'); clients must ask for {name!r}"
                )
            self.result.skipped.extend(f"{source_name}: {note}" for note in notes)


# ---------------------------------------------------------------------------- llama-swap

_MACRO = re.compile(r"\$\{([^}]*)\}")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}
_PROXY = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[^\]]*\]|[^/:]*)"
                    r"(?::(?P<port>\$\{PORT\}|\d+))?(?P<path>/.*)?$")

# Top-level keys that only concern llama-swap's own logging, UI or port pool.
_QUIET_TOP = {
    "logLevel", "logTimeFormat", "logToStdout", "metricsMaxInMemory", "captureBuffer", "ui",
    "performance", "startPort", "sendLoadingState", "includeAliasesInList", "store", "macros",
    "models", "groups", "hooks", "routing",
}
_TOP_REASONS = {
    "globalTTL": "a global setting: set Siesta's global_unload_timeout instead",
    "healthCheckTimeout": "a global setting: set Siesta's load_timeout instead",
    "unloadTimeout": "a global setting: set Siesta's stop_timeout instead",
    "apiKeys": "set SIESTA_API_KEY instead (Siesta has one key)",
    "peers": "Siesta does not forward to remote servers",
    "profiles": "Siesta has no profiles",
    "selectors": "Siesta has no virtual model names",
    "upstream": "Siesta has no /upstream passthrough",
}
_MODEL_REASONS = {
    "aliases": "Siesta has no model aliases",
    "useModelName": "Siesta passes the requested model name through unchanged",
    "filters": "Siesta does not rewrite request parameters",
    "unlisted": "Siesta lists every model",
    "metadata": "Siesta has no per-model metadata",
    "capabilities": "Siesta has no per-model capabilities",
    "cmdStop": "Siesta stops a server with SIGTERM, then a kill after stop_timeout",
    "unloadTimeout": "the graceful stop time is the global stop_timeout",
    "concurrencyLimit": "Siesta has no per-model request limit",
    "sendLoadingState": "Siesta has no loading-state messages",
    "timeouts": "Siesta has no per-model proxy timeouts",
    "compat": "Siesta has no compatibility settings",
}
_MODEL_MAPPED = {"cmd", "macros", "proxy", "checkEndpoint", "ttl", "env", "description", "name"}


def _macro_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise _NotImported(f"macro value {value!r} is not a string or a number")


def _expand_macros(text: str, macros: Mapping[str, Any], model_id: str, env: Mapping[str, str]) -> str:
    """Expands ``${name}`` macros until none is left but ``${PORT}``; _NotImported when one is unknown."""

    def repl(m: re.Match[str]) -> str:
        name = m[1]
        if name == "PORT":
            return m[0]
        if name == "MODEL_ID":
            return model_id
        if name.startswith("env."):
            if name[4:] in env:
                return env[name[4:]]
            raise _NotImported(f"environment variable {name[4:]} (used as ${{{name}}}) is not set")
        if name in macros:
            return _macro_text(macros[name])
        if name == "PID":
            raise _NotImported("${PID} can only be used in cmdStop")
        raise _NotImported(f"unknown macro ${{{name}}}")

    for _ in range(32):
        expanded = _MACRO.sub(repl, text)
        if expanded == text:
            return text
        text = expanded
    raise _NotImported("macros nested too deeply (or refer to themselves)")


def _split_cmd(cmd: str, macros: Mapping[str, Any], model_id: str, env: Mapping[str, str]) -> list[str]:
    """llama-swap's ``cmd`` as an argument list, with ``${PORT}`` as ``{port}``."""
    lines = [line for line in cmd.splitlines() if not line.strip().startswith("#")]
    text = _expand_macros("\n".join(lines), macros, model_id, env)
    joined = []
    for line in text.splitlines():
        stripped = line.rstrip()
        joined.append(stripped[:-1] + " " if stripped.endswith("\\") else line)
    try:
        argv = shlex.split("\n".join(joined), comments=False, posix=True)
    except ValueError as exc:
        raise _NotImported(f"cmd cannot be split into arguments: {exc}") from None
    if not argv:
        raise _NotImported("cmd is empty")
    return [arg.replace("${PORT}", "{port}") for arg in argv]


def _apply_proxy(argv: list[str], proxy: Any, notes: list[str], macros: Mapping[str, Any],
                 model_id: str, env: Mapping[str, str]) -> list[str]:
    """Checks that Siesta can reach the server the way llama-swap did; fills in ``{port}``."""
    has_port = any("{port}" in arg for arg in argv)
    if proxy is None:
        if not has_port:
            raise _NotImported("cmd does not use ${PORT} and no proxy is set, so the server's port is unknown")
        return argv
    if not isinstance(proxy, str):
        raise _NotImported(f"proxy {proxy!r} is not a URL")
    url = _expand_macros(proxy.strip(), macros, model_id, env)
    m = _PROXY.match(url)
    if not m:
        raise _NotImported(f"proxy {url!r} is not a URL")
    if m["scheme"].lower() != "http":
        raise _NotImported(f"proxy {url!r}: Siesta talks plain http to its servers")
    if m["host"].lower() not in _LOCAL_HOSTS:
        raise _NotImported(f"proxy {url!r} is on another host; Siesta only starts servers on this computer")
    if m["path"] not in (None, "", "/"):
        notes.append(f"proxy path {m['path']!r} could not be mapped (Siesta forwards /v1/... to the server's root)")
    port = m["port"]
    if port is None or port == "${PORT}":
        if not has_port:
            raise _NotImported(f"proxy {url!r} expects ${{PORT}} but cmd does not use it")
        return argv
    if has_port:
        notes.append(f"proxy port {port} ignored: cmd takes ${{PORT}}, and Siesta sends requests to that port")
        return argv
    # A fixed port: let Siesta choose it instead, where cmd names it.
    replaced = False
    out = []
    for i, arg in enumerate(argv):
        new = arg
        if arg == port and i > 0 and argv[i - 1].startswith("-"):
            new = "{port}"
        elif arg.endswith("=" + port):
            new = arg[: -len(port)] + "{port}"
        elif arg.startswith(port + ":"):
            new = "{port}" + arg[len(port):]
        replaced |= new != arg
        out.append(new)
    if not replaced:
        raise _NotImported(f"the server's port {port} (from proxy) does not appear in cmd, so Siesta cannot choose it")
    notes.append(f"fixed port {port} replaced by {{port}} (Siesta picks a free port for each load)")
    return out


def _ttl_timeout(ttl: Any, notes: list[str]) -> str | None:
    if ttl is None:
        return None
    try:
        if isinstance(ttl, bool):
            raise ValueError
        seconds = int(str(ttl).strip())
    except ValueError:
        notes.append(f"ttl {ttl!r} could not be mapped (expected whole seconds)")
        return None
    if seconds > 0:
        return format_duration(float(seconds))
    if seconds == 0:
        return "never"
    return None  # -1: the global timeout applies


def _program_missing(program: str) -> bool:
    if os.sep in program or (os.altsep and os.altsep in program):
        return not os.path.exists(program)
    return shutil.which(program) is None


def _llama_swap_groups(data: dict[str, Any], models: dict[str, Any], label: str,
                       result: ImportResult) -> dict[str, str | None] | None:
    """Model id -> Siesta group (None: no group) for the models in a group; None for the matrix router."""
    routing = data.get("routing") if isinstance(data.get("routing"), dict) else {}
    router = routing.get("router") if isinstance(routing.get("router"), dict) else {}
    if router.get("use") == "matrix":
        result.skipped.append(
            f"{label}: routing matrix could not be mapped (Siesta groups let one member run at a time); "
            "models imported without groups"
        )
        return None
    settings = router.get("settings") if isinstance(router.get("settings"), dict) else {}
    groups = settings.get("groups")
    if not isinstance(groups, dict):
        groups = data.get("groups") if isinstance(data.get("groups"), dict) else {}
    membership: dict[str, str | None] = {}
    for group_name, cfg in groups.items():
        group_name = str(group_name)
        if not isinstance(cfg, dict):
            result.skipped.append(f"group {group_name}: not a mapping, ignored")
            continue
        swap = cfg.get("swap", True) is not False
        exclusive = cfg.get("exclusive", True) is not False
        members = cfg.get("members") if isinstance(cfg.get("members"), list) else []
        if swap:
            if exclusive:
                result.skipped.append(
                    f"group {group_name}: exclusive (loading a member unloads every other group) could not be "
                    f"mapped; members share group = {group_name!r}, so one of them runs at a time"
                )
        else:
            result.skipped.append(
                f"group {group_name}: swap: false (members run together) is Siesta's behaviour without a group; "
                "members imported without a group"
                + ("; exclusive (loading a member unloads every other group) could not be mapped" if exclusive else "")
            )
        if cfg.get("persistent"):
            result.skipped.append(
                f"group {group_name}: persistent (other groups cannot unload its members) could not be mapped"
            )
        for member in members:
            member = str(member)
            if member not in models:
                result.skipped.append(f"group {group_name}: member {member!r} is not a model in this file")
            elif member in membership:
                result.skipped.append(f"group {group_name}: {member} is already in another group; kept the first")
            else:
                membership[member] = group_name if swap else None
    return membership


def import_llama_swap(config_file: Path, recipes_dir: Path, *, env: Mapping[str, str] | None = None) -> ImportResult:
    """Imports every model of a llama-swap ``config.yaml`` as a ``command`` recipe (see the module doc)."""
    env = os.environ if env is None else env
    config_file = Path(config_file)
    data = _parse_yaml(config_file, _read_text(config_file))
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ImportConfigError(f"{config_file}: not a llama-swap config (no 'models:' mapping)")
    result = ImportResult(kind="llama-swap")
    writer = _Writer(recipes_dir, result)
    label = config_file.name
    models: dict[str, Any] = {str(k): v for k, v in data["models"].items()}
    global_macros = data.get("macros") if isinstance(data.get("macros"), dict) else {}

    for key in data:
        if key in _TOP_REASONS:
            value = data[key]
            extra = ""
            if key == "globalTTL":
                extra = f" ({_ttl_timeout(value, []) or 'never'} for models without a ttl)" if value not in (None, -1) else ""
            result.skipped.append(f"{label}: {key}{extra} could not be mapped: {_TOP_REASONS[key]}")
        elif key not in _QUIET_TOP:
            result.skipped.append(f"{label}: {key} could not be mapped")

    membership = _llama_swap_groups(data, models, label, result)
    hooks = data.get("hooks") if isinstance(data.get("hooks"), dict) else {}
    startup = hooks.get("on_startup") if isinstance(hooks.get("on_startup"), dict) else {}
    preload_list = startup.get("preload") if isinstance(startup.get("preload"), list) else []
    preload = {str(p) for p in preload_list}
    for name in sorted(preload - set(models)):
        result.skipped.append(f"{label}: preload of {name!r} could not be mapped: no such model in this file")
    if membership is not None and any(mid not in membership for mid in models):
        result.skipped.append(
            f"group {LLAMA_SWAP_DEFAULT_GROUP}: models in no llama-swap group run one at a time there; "
            f"they were given group = {LLAMA_SWAP_DEFAULT_GROUP!r} so that stays true"
        )

    for model_id, cfg in models.items():
        notes: list[str] = []
        try:
            if not isinstance(cfg, dict):
                raise _NotImported("its settings are not a mapping")
            macros = dict(global_macros)
            if isinstance(cfg.get("macros"), dict):
                macros.update(cfg["macros"])
            cmd = cfg.get("cmd")
            if not isinstance(cmd, str) or not cmd.strip():
                raise _NotImported("no cmd")
            argv = _split_cmd(cmd, macros, model_id, env)
            argv = _apply_proxy(argv, cfg.get("proxy"), notes, macros, model_id, env)
            fields: dict[str, Any] = {"backend": "command", "command": argv}

            check = cfg.get("checkEndpoint")
            if isinstance(check, str) and check.strip():
                check = check.strip()
                if check.lower() == "none":
                    fields["health_path"] = NO_HEALTH_CHECK_PATH
                    notes.append(
                        f"checkEndpoint none (no health check) could not be mapped: Siesta always waits for a 200; "
                        f"health_path = {NO_HEALTH_CHECK_PATH!r}"
                    )
                else:
                    fields["health_path"] = check if check.startswith("/") else "/" + check
            elif check is not None:
                notes.append(f"checkEndpoint {check!r} could not be mapped")

            env_table = _env_table(cfg.get("env"), notes, macros, model_id, env)
            if env_table:
                fields["env"] = env_table
            timeout = _ttl_timeout(cfg.get("ttl"), notes)
            if timeout is not None:
                fields["unload_timeout"] = timeout
            if membership is not None:
                group = membership.get(model_id, LLAMA_SWAP_DEFAULT_GROUP)
                if group:
                    fields["group"] = group
            if model_id in preload:
                fields["preload"] = True
            if isinstance(cfg.get("description"), str) and cfg["description"].strip():
                fields["description"] = cfg["description"]

            for key, value in cfg.items():
                if key in _MODEL_MAPPED:
                    continue
                if key in ("aliases", "unlisted", "concurrencyLimit", "metadata", "filters", "cmdStop",
                           "sendLoadingState", "capabilities", "unloadTimeout") and not value:
                    continue  # empty or off: nothing lost
                reason = _MODEL_REASONS.get(key)
                notes.append(f"{key} could not be mapped" + (f" ({reason})" if reason else ""))
            if _program_missing(argv[0]):
                notes.append(f"program not found on this computer: {argv[0]!r} (fix the recipe's command before loading)")
        except _NotImported as exc:
            result.skipped.append(f"{model_id}: not imported: {exc}")
            continue
        name = writer.name_for(model_id)
        display = f" ({cfg['name']})" if isinstance(cfg.get("name"), str) and cfg["name"].strip() else ""
        comments = [f"Imported from llama-swap model {model_id!r}{display} in {config_file.resolve()}"]
        writer.write(model_id, name, comments, fields, notes)
    return result


def _env_table(raw: Any, notes: list[str], macros: Mapping[str, Any], model_id: str,
               env: Mapping[str, str]) -> dict[str, str]:
    table: dict[str, str] = {}
    if raw is None:
        return table
    items: list[Any]
    if isinstance(raw, dict):
        items = [f"{k}={_macro_text(v)}" for k, v in raw.items()]
    elif isinstance(raw, list):
        items = raw
    else:
        notes.append(f"env {raw!r} could not be mapped (expected a list of \"NAME=value\")")
        return table
    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            notes.append(f"env entry {item!r} could not be mapped (expected \"NAME=value\")")
            continue
        k, v = item.split("=", 1)
        table[k.strip()] = _expand_macros(v, macros, model_id, env)
    return table


# ---------------------------------------------------------------------------- Lemonade

_USER_MODEL_QUIET = {"checkpoint", "recipe", "mmproj", "labels", "source", "size", "reasoning", "vision",
                     "suggested", "downloaded", "model_name", "name"}
_LABEL_ARGS = {"embeddings": "--embeddings", "reranking": "--reranking"}


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except ValueError as exc:
        raise ImportConfigError(f"{path}: not valid JSON: {exc}") from exc


def _snapshots(repo: str, home: Path, env: Mapping[str, str]) -> list[Path]:
    """The snapshot folders of a hub repo, newest first, across the hub caches."""
    folder = "models--" + repo.replace("/", "--")
    out: list[tuple[float, Path]] = []
    for hub in hf_hub_caches(home, env):
        try:
            revisions = [p for p in (hub / folder / "snapshots").iterdir() if p.is_dir()]
        except OSError:
            continue
        for rev in revisions:
            try:
                out.append((rev.stat().st_mtime, rev))
            except OSError:
                continue
    out.sort(key=lambda t: (-t[0], str(t[1])))
    return [p for _, p in out]


def _safe_relative(text: str) -> bool:
    parts = Path(text).parts
    return bool(parts) and not Path(text).is_absolute() and ".." not in parts and not text.startswith("~")


def _first_shard_ok(path: Path) -> bool:
    m = re.search(r"-(\d{5})-of-\d{5}\.gguf$", path.name, re.IGNORECASE)
    return m is None or int(m[1]) == 1


def _resolve_checkpoint(checkpoint: str, home: Path, env: Mapping[str, str]) -> Path | None:
    """The GGUF file a Lemonade checkpoint names, in the hub cache; None when not there."""
    local = Path(checkpoint).expanduser() if checkpoint.startswith(("/", "~")) else None
    if local is not None:
        return local if local.suffix.lower() == ".gguf" and is_gguf_file(local) else None
    repo, _, variant = checkpoint.partition(":")
    repo, variant = repo.strip(), variant.strip()
    if repo.count("/") != 1 or not all(repo.split("/")):
        return None
    for snapshot in _snapshots(repo, home, env):
        if variant.lower().endswith(".gguf"):
            if not _safe_relative(variant):
                return None
            candidate = snapshot / variant
            if is_gguf_file(candidate):
                return candidate
            continue
        files = sorted(
            p for p in snapshot.rglob("*")
            if p.name.lower().endswith(".gguf") and "mmproj" not in p.name.lower() and _first_shard_ok(p)
        )
        if variant:
            pattern = re.compile(r"(?<![a-z0-9])" + re.escape(variant.lower()) + r"(?![a-z0-9])")
            files = [p for p in files if pattern.search(str(p.relative_to(snapshot)).lower())]
        elif len(files) > 1:
            continue  # no variant and several files: ambiguous
        for candidate in files:
            if is_gguf_file(candidate):
                return candidate
    return None


def _resolve_mmproj(repo: str, mmproj: str, home: Path, env: Mapping[str, str]) -> Path | None:
    if not _safe_relative(mmproj):
        return None
    for snapshot in _snapshots(repo, home, env):
        if is_gguf_file(snapshot / mmproj):
            return snapshot / mmproj
    return None


def import_lemonade(
    user_models: Path,
    recipes_dir: Path,
    *,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ImportResult:
    """Imports Lemonade's llama.cpp user models (with ``recipe_options.json`` beside the
    file, when present) as ``llamacpp`` recipes (see the module doc)."""
    home = Path.home() if home is None else Path(home)
    env = os.environ if env is None else env
    user_models = Path(user_models)
    models = _load_json(user_models)
    if not isinstance(models, dict):
        raise ImportConfigError(f"{user_models}: not Lemonade's user_models.json (expected an object of models)")
    result = ImportResult(kind="lemonade")
    writer = _Writer(recipes_dir, result)
    options_file = user_models.with_name("recipe_options.json")
    options: dict[str, Any] = {}
    if options_file.is_file():
        try:
            loaded = _load_json(options_file)
            if isinstance(loaded, dict):
                options = loaded
            else:
                result.skipped.append(f"{options_file.name}: not an object of options; ignored")
        except ImportConfigError as exc:
            result.skipped.append(f"{options_file.name}: ignored: {exc}")

    for key in options:
        prefix, _, rest = str(key).partition(".")
        if prefix == "user" and rest in models:
            continue
        if prefix == "user":
            result.skipped.append(f"{key}: not imported: options for a model that is not in {user_models.name}")
        else:
            result.skipped.append(f"{key}: not imported: options for a Lemonade {prefix or 'other'} model "
                                  "(only user models are imported)")

    for model_name, entry in models.items():
        model_name = str(model_name)
        notes: list[str] = []
        try:
            if not isinstance(entry, dict):
                raise _NotImported("its settings are not an object")
            recipe = entry.get("recipe")
            if recipe != "llamacpp":
                raise _NotImported(
                    f"recipe {recipe!r} is not llamacpp (Siesta runs llama.cpp models; use a command recipe by hand)"
                    if recipe else "no recipe given"
                )
            checkpoint = entry.get("checkpoint")
            if not isinstance(checkpoint, str) or not checkpoint.strip():
                raise _NotImported("no checkpoint given")
            checkpoint = checkpoint.strip()
            model_file = _resolve_checkpoint(checkpoint, home, env)
            if model_file is None:
                raise _NotImported(f"model file not found in the Hugging Face cache: {checkpoint}")
            args: list[str] = []
            mmproj = entry.get("mmproj")
            if isinstance(mmproj, str) and mmproj.strip():
                found = _resolve_mmproj(checkpoint.partition(":")[0], mmproj.strip(), home, env)
                if found is not None:
                    args += ["--mmproj", str(Path(os.path.abspath(found)))]
                else:
                    notes.append(f"mmproj {mmproj!r} could not be mapped: not found in the Hugging Face cache")
            labels = entry.get("labels") if isinstance(entry.get("labels"), list) else []
            for label, flag in _LABEL_ARGS.items():
                if label in labels:
                    args.append(flag)
            for key in entry:
                if key not in _USER_MODEL_QUIET:
                    notes.append(f"{key} could not be mapped")

            opts = options.get(f"user.{model_name}")
            fields: dict[str, Any] = {"backend": "llamacpp", "model": str(Path(os.path.abspath(model_file)))}
            if isinstance(opts, dict):
                args += _lemonade_options(opts, fields, notes)
            elif opts is not None:
                notes.append("its recipe_options entry is not an object; ignored")
            if args:
                fields["args"] = args
            # keep the documented key order: backend, model, args, unload_timeout
            fields = {k: fields[k] for k in ("backend", "model", "args", "unload_timeout") if k in fields}
        except _NotImported as exc:
            result.skipped.append(f"{model_name}: not imported: {exc}")
            continue
        name = writer.name_for(model_name)
        comments = [f"Imported from Lemonade user model 'user.{model_name}' ({checkpoint}) in {user_models.resolve()}"]
        writer.write(model_name, name, comments, fields, notes)
    return result


def _lemonade_options(opts: dict[str, Any], fields: dict[str, Any], notes: list[str]) -> list[str]:
    """Reads one model's recipe_options: returns llama-server args; sets unload_timeout."""
    args: list[str] = []
    ctx = opts.get("ctx_size")
    if ctx is not None:
        if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0:
            args += ["--ctx-size", str(ctx)]
        else:
            notes.append(f"ctx_size {ctx!r} could not be mapped (expected a positive whole number)")
    extra = opts.get("llamacpp_args")
    if isinstance(extra, str) and extra.strip():
        try:
            args += shlex.split(extra)
        except ValueError as exc:
            notes.append(f"llamacpp_args {extra!r} could not be mapped: {exc}")
    elif isinstance(extra, list) and all(isinstance(a, str) for a in extra):
        args += extra
    elif extra not in (None, ""):
        notes.append(f"llamacpp_args {extra!r} could not be mapped")
    backend = opts.get("llamacpp_backend")
    if backend:
        notes.append(f"llamacpp_backend {backend!r} could not be mapped "
                     "(Siesta runs one llama-server build: set llama_server)")
    auto_evict = opts.get("auto_evict")
    idle = opts.get("evict_idle_timeout")
    if auto_evict is True:
        if idle is None:
            notes.append("auto_evict without evict_idle_timeout: the global timeout applies")
        else:
            try:
                fields["unload_timeout"] = format_duration(parse_duration(idle))
            except DurationError as exc:
                notes.append(f"evict_idle_timeout could not be mapped: {exc}")
    elif auto_evict is False:
        fields["unload_timeout"] = "never"
    elif auto_evict is not None:
        notes.append(f"auto_evict {auto_evict!r} could not be mapped (expected true, false or null)")
    elif idle is not None:
        notes.append("evict_idle_timeout ignored: auto_evict is not set, so Lemonade's global setting applied; "
                     "the global timeout applies")
    for key in opts:
        if key not in ("ctx_size", "llamacpp_args", "llamacpp_backend", "auto_evict", "evict_idle_timeout"):
            notes.append(f"{key} could not be mapped")
    return args
