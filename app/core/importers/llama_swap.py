"""Import a llama-swap ``config.yaml`` (a ``models:`` mapping) as ``command`` recipes.

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
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.core.config.durations import format_duration
from app.core.importers.common import ImportConfigError, ImportResult, NotImported, parse_yaml, read_text
from app.core.importers.recipe_writer import RecipeWriter

LLAMA_SWAP_DEFAULT_GROUP = "llama-swap"
NO_HEALTH_CHECK_PATH = "/v1/models"

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
    raise NotImported(f"macro value {value!r} is not a string or a number")


def _expand_macros(text: str, macros: Mapping[str, Any], model_id: str, env: Mapping[str, str]) -> str:
    """Expands ``${name}`` macros until none is left but ``${PORT}``; NotImported when one is unknown."""

    def repl(m: re.Match[str]) -> str:
        name = m[1]
        if name == "PORT":
            return m[0]
        if name == "MODEL_ID":
            return model_id
        if name.startswith("env."):
            if name[4:] in env:
                return env[name[4:]]
            raise NotImported(f"environment variable {name[4:]} (used as ${{{name}}}) is not set")
        if name in macros:
            return _macro_text(macros[name])
        if name == "PID":
            raise NotImported("${PID} can only be used in cmdStop")
        raise NotImported(f"unknown macro ${{{name}}}")

    for _ in range(32):
        expanded = _MACRO.sub(repl, text)
        if expanded == text:
            return text
        text = expanded
    raise NotImported("macros nested too deeply (or refer to themselves)")


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
        raise NotImported(f"cmd cannot be split into arguments: {exc}") from None
    if not argv:
        raise NotImported("cmd is empty")
    return [arg.replace("${PORT}", "{port}") for arg in argv]


def _apply_proxy(argv: list[str], proxy: Any, notes: list[str], macros: Mapping[str, Any],
                 model_id: str, env: Mapping[str, str]) -> list[str]:
    """Checks that Siesta can reach the server the way llama-swap did; fills in ``{port}``."""
    has_port = any("{port}" in arg for arg in argv)
    if proxy is None:
        if not has_port:
            raise NotImported("cmd does not use ${PORT} and no proxy is set, so the server's port is unknown")
        return argv
    if not isinstance(proxy, str):
        raise NotImported(f"proxy {proxy!r} is not a URL")
    url = _expand_macros(proxy.strip(), macros, model_id, env)
    m = _PROXY.match(url)
    if not m:
        raise NotImported(f"proxy {url!r} is not a URL")
    if m["scheme"].lower() != "http":
        raise NotImported(f"proxy {url!r}: Siesta talks plain http to its servers")
    if m["host"].lower() not in _LOCAL_HOSTS:
        raise NotImported(f"proxy {url!r} is on another host; Siesta only starts servers on this computer")
    if m["path"] not in (None, "", "/"):
        notes.append(f"proxy path {m['path']!r} could not be mapped (Siesta forwards /v1/... to the server's root)")
    port = m["port"]
    if port is None or port == "${PORT}":
        if not has_port:
            raise NotImported(f"proxy {url!r} expects ${{PORT}} but cmd does not use it")
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
        raise NotImported(f"the server's port {port} (from proxy) does not appear in cmd, so Siesta cannot choose it")
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
    data = parse_yaml(config_file, read_text(config_file))
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ImportConfigError(f"{config_file}: not a llama-swap config (no 'models:' mapping)")
    result = ImportResult(kind="llama-swap")
    writer = RecipeWriter(recipes_dir, result)
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
                raise NotImported("its settings are not a mapping")
            macros = dict(global_macros)
            if isinstance(cfg.get("macros"), dict):
                macros.update(cfg["macros"])
            cmd = cfg.get("cmd")
            if not isinstance(cmd, str) or not cmd.strip():
                raise NotImported("no cmd")
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
        except NotImported as exc:
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
