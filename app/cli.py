"""The ``siesta`` command: ``serve`` runs the manager headless; the other commands talk to
the running instance through its HTTP API (so changes reach running countdowns at once),
or edit the files directly when none is running. With no command, the tray app starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import http.client


from app import __version__
from app.core.durations import DurationError, format_countdown, format_duration, parse_duration
from app.core.paths import Paths
from app.core.endpoint import Endpoint, SettingsError, resolve_endpoint

if TYPE_CHECKING:
    from app.core.settings import LoadedSettings

log = logging.getLogger("siesta")

SETTING_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("host", {"help": "address to listen on (default 127.0.0.1)"}),
    ("port", {"type": int, "help": "port to listen on (default 8777)"}),
    ("global_unload_timeout", {"help": "idle time before a model is unloaded: 90s, 5m, 1h30m, never (default 5m)"}),
    ("max_loaded_models", {"type": int, "help": "most models loaded at once; 0 = no limit (default 3)"}),
    ("llama_server", {"help": "path of the llama-server binary"}),
    ("stop_timeout", {"help": "graceful stop before kill (default 10s)"}),
    ("load_timeout", {"help": "longest wait for a model to become ready (default 5m)"}),
    ("allowed_hosts", {"help": "extra Host names to accept, comma-separated"}),
]


def _add_setting_flags(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    # A sub-command's defaults would overwrite flags given before it, so it has none.
    default = argparse.SUPPRESS if sub else None
    for field, kwargs in SETTING_FLAGS:
        parser.add_argument("--" + field.replace("_", "-"), dest=field, default=default, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siesta", description="Runs local model servers on demand and unloads them when idle.")
    parser.add_argument("--version", action="version", version=f"siesta {__version__}")
    parser.add_argument("--config-dir", help="folder of settings.toml and recipes/ (default: SIESTA_CONFIG_DIR or the user config dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    _add_setting_flags(parser)
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the manager and its HTTP API headless")
    _add_setting_flags(serve, sub=True)

    ps = sub.add_parser("ps", help="list models with state, memory and time left")
    ps.add_argument("--watch", action="store_true", help="keep the table up to date")
    ps.add_argument("--json", action="store_true", help="print the API's JSON")

    load = sub.add_parser("load", help="load a model now; returns when it is ready")
    load.add_argument("model")

    unload = sub.add_parser("unload", help="unload a model (or --all)")
    unload.add_argument("model", nargs="?")
    unload.add_argument("--all", action="store_true")

    timeout = sub.add_parser("timeout", help="set a model's idle timeout (or --global)")
    timeout.add_argument("model", nargs="?", help="model name")
    timeout.add_argument("duration", nargs="?", help='90s, 5m, 1h30m, never, or "default" for the global timeout')
    timeout.add_argument("--global", dest="global_value", metavar="DURATION", help="set the global timeout")

    demo = sub.add_parser("demo", help="create a tiny demo model and its recipe 'tiny'")
    demo.add_argument("--name", default="tiny")

    discover = sub.add_parser("discover", help="find GGUF models on this computer and create recipes for them")
    discover.add_argument("--dir", action="append", type=Path, default=[], help="also search this folder (repeatable)")
    discover.add_argument("--yes", action="store_true", help="create recipes for every model found, without asking")

    importer = sub.add_parser("import", help="import a llama-swap config.yaml or Lemonade's user_models.json")
    importer.add_argument("path", type=Path)

    engine = sub.add_parser("engine", help="the llama-server Siesta uses: show it, or build one")
    engine_sub = engine.add_subparsers(dest="engine_command", required=True)
    engine_sub.add_parser("info", help="which llama-server is used, and its version")
    install = engine_sub.add_parser("install", help="build llama-server from source into Siesta's data dir")
    install.add_argument("--gpu", choices=["cpu", "cuda", "vulkan", "rocm"], default=None,
                         help="GPU backend to build (default cpu; detected toolkits are suggested)")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, field) for field, _ in SETTING_FLAGS if getattr(args, field, None) is not None}


def _settings(args: argparse.Namespace, paths: Paths) -> LoadedSettings:
    from app.core.settings import load_settings

    return load_settings(paths.settings_file, _flags(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("watchfiles", "gguf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    paths = Paths.resolve(args.config_dir)
    command = args.command
    try:
        # The client commands read only host, port and key (fast); the rest read everything.
        settings = _settings(args, paths) if command in ("serve", None, "engine") else None
        endpoint = resolve_endpoint(paths.settings_file, _flags(args))
    except SettingsError as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 2
    if command == "serve":
        return _serve(paths, settings)
    if command is None:
        try:
            from app.ui.app import run_tray_app
        except ImportError:
            parser.print_help()
            return 0
        return run_tray_app(paths, settings)
    client = ApiClient(endpoint)
    try:
        if command == "ps":
            return _ps(client, watch=args.watch, as_json=args.json)
        if command == "load":
            return _print_model(client.call("POST", "/api/v1/load", {"model": args.model}, timeout=None))
        if command == "unload":
            if args.all == bool(args.model):
                parser.error("unload takes a model name or --all")
            body = {"all": True} if args.all else {"model": args.model}
            result = client.call("POST", "/api/v1/unload", body)
            if args.all:
                print("unloaded: " + (", ".join(result["unloaded"]) or "nothing was loaded"))
                return 0
            return _print_model(result)
        if command == "timeout":
            return _timeout(parser, client, paths, args)
        if command == "demo":
            return _demo(paths, args.name)
        if command == "engine":
            return _engine(paths, settings, args)
        if command == "discover":
            return _discover(paths, args.dir, assume_yes=args.yes)
        if command == "import":
            return _import(paths, args.path)
    except ApiError as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 1
    except NotRunning as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 3
    return 0


# ---- serve ------------------------------------------------------------------------------

def _serve(paths: Paths, settings: LoadedSettings) -> int:
    import asyncio

    from app.runtime import PortInUse

    try:
        return asyncio.run(serve(paths, settings))
    except PortInUse as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def serve(paths: Paths, settings: LoadedSettings, stop: asyncio.Event | None = None) -> int:
    """Runs Siesta headless until SIGINT/SIGTERM (or ``stop``); then unloads everything."""
    import asyncio

    from app.runtime import SiestaRuntime

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    async with SiestaRuntime(paths, settings):
        await stop.wait()
        log.info("shutting down: unloading every model")
    return 0


# ---- talking to the running instance -----------------------------------------------------

class NotRunning(Exception):
    pass


class ApiError(Exception):
    pass


class ApiClient:
    """A small client for the running instance's management API.

    It uses the standard library's http.client: `siesta ps` must answer in well under
    0.3 s, and creating an httpx client alone cost 0.15 s here (httpcore imports its
    async backends on first use); these are single local calls with nothing to pool.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.host, self.port = endpoint.connect_host, endpoint.port
        self.base_url = endpoint.base_url
        self.headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}

    def open(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = 30.0) -> http.client.HTTPResponse:
        import http.client

        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            return conn.getresponse()
        except ConnectionRefusedError:
            raise NotRunning(f"no Siesta is running at {self.base_url} (start one with `siesta serve`)") from None
        except OSError as exc:
            raise ApiError(f"{method} {path} failed: {exc}") from exc

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = 30.0) -> Any:
        resp = self.open(method, path, body, timeout)
        text = resp.read().decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError:
            raise ApiError(f"{method} {path}: HTTP {resp.status}: {text[:200]}") from None
        if resp.status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            message = err.get("message", text)
            if err.get("log_tail"):
                message += "\n--- log tail ---\n" + err["log_tail"]
            raise ApiError(message)
        return data

    def running(self) -> bool:
        try:
            self.call("GET", "/api/v1/health", timeout=2.0)
            return True
        except NotRunning:
            return False


def _fmt_bytes(value: int | None) -> str:
    if not value:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value} B"
        value /= 1024  # type: ignore[assignment]
    return "-"


def format_table(models: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [("NAME", "STATE", "IN-FLIGHT", "MEMORY", "TIMEOUT (source)", "UNLOADS IN")]
    for m in models:
        timeout = format_duration(m["unload_timeout"]) if m.get("state") != "failed" or m.get("backend") else "-"
        if m.get("unload_at") is not None:
            left = format_countdown(m["unload_at"] - now)
        elif m["state"] == "ready" and m["unload_timeout"] is None:
            left = "never"
        elif m["state"] == "ready" and m["in_flight"]:
            left = "(busy)"
        else:
            left = "-"
        state = m["state"] + (" (stale)" if m.get("stale") else "")
        rows.append((m["name"], state, str(m["in_flight"]), _fmt_bytes(m.get("memory")),
                     f"{timeout} ({m['timeout_source']})", left))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    errors = [f"  {m['name']}: {m['error']}" for m in models if m.get("error")]
    return "\n".join(lines + (["", "errors:"] + errors if errors else []))


def _ps(client: ApiClient, *, watch: bool, as_json: bool) -> int:
    try:
        models = client.call("GET", "/api/v1/models")["models"]
    except NotRunning as exc:
        print(f"siesta: {exc}")
        return 3
    if as_json:
        print(json.dumps(models, indent=2))
        return 0
    if not watch:
        print(format_table(models) if models else "no recipes yet: add one to the recipes folder, or run `siesta demo`")
        return 0
    return _watch(client, {m["name"]: m for m in models})


def _watch(client: ApiClient, models: dict[str, dict[str, Any]]) -> int:
    """Redraws the table on every event, and once a second for the countdowns."""
    import threading

    lock = threading.Lock()

    def reader() -> None:
        resp = client.open("GET", "/api/v1/events", timeout=None)
        for raw in resp:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("data: "):
                event = json.loads(line[6:])
                with lock:
                    if event["reason"] == "removed":
                        models.pop(event["model"]["name"], None)
                    else:
                        models[event["model"]["name"]] = event["model"]

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            with lock:
                table = format_table(sorted(models.values(), key=lambda m: m["name"]))
            sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
            sys.stdout.flush()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0


def _print_model(model: dict[str, Any]) -> int:
    print(format_table([model]))
    return 0


def _timeout(parser: argparse.ArgumentParser, client: ApiClient, paths: Paths, args: argparse.Namespace) -> int:
    if args.global_value is not None:
        if args.model:
            parser.error("timeout --global takes only a duration")
        try:
            value = parse_duration(args.global_value)
        except DurationError as exc:
            parser.error(str(exc))
        if client.running():
            client.call("PATCH", "/api/v1/settings", {"global_unload_timeout": format_duration(value)})
        else:
            from app.core.toml_edit import TomlEditError, set_toml_key

            try:
                pinned = _settings(args, paths).fixed_by("global_unload_timeout")
            except SettingsError:
                pinned = None
            if pinned:
                print(f"note: {pinned} overrides settings.toml while it is set", file=sys.stderr)
            try:
                set_toml_key(paths.settings_file, "global_unload_timeout", format_duration(value), create=True)
            except TomlEditError as exc:
                raise ApiError(str(exc)) from exc
        print(f"global timeout: {format_duration(value)}")
        return 0
    if not args.model or not args.duration:
        parser.error("usage: siesta timeout MODEL DURATION|default, or siesta timeout --global DURATION")
    raw = args.duration
    if raw != "default":
        try:
            raw = format_duration(parse_duration(raw))
        except DurationError as exc:
            parser.error(str(exc))
    if client.running():
        model = client.call("PATCH", f"/api/v1/models/{args.model}", {"unload_timeout": raw})
        return _print_model(model)
    from app.core.recipes import RecipeError, is_valid_name, read_recipe, write_recipe_timeout
    from app.core.toml_edit import TomlEditError

    path = paths.recipe_file(args.model)
    if not is_valid_name(args.model) or not path.exists():
        raise ApiError(f"model {args.model!r} not found: no recipe {path}")
    try:
        read_recipe(path)
        write_recipe_timeout(path, None if raw == "default" else parse_duration(raw), remove=raw == "default")
    except (RecipeError, TomlEditError) as exc:
        raise ApiError(str(exc)) from exc
    print(f"{args.model}: timeout {'removed (global applies)' if raw == 'default' else raw} in {path}")
    return 0


def _engine(paths: Paths, settings: LoadedSettings, args: argparse.Namespace) -> int:
    from app.core.backend import find_llama_server
    from app.core.engine_build import EngineBuildError, answers_version, build_llama_server, detect_gpu_toolkits
    from app.core.paths import engine_cache_dir

    if args.engine_command == "info":
        found = find_llama_server(settings.values.llama_server, paths.data_dir, engine_cache_dir())
        if found is None:
            print("no llama-server found. Build one with `siesta engine install` "
                  "(about 10 minutes on 2 cores), or set llama_server in settings.toml.")
            return 1
        version = subprocess.run([str(found), "--version"], capture_output=True, text=True, timeout=30)
        text = (version.stdout + version.stderr).strip().splitlines()
        print(f"{found}\n" + ("\n".join(text[-2:]) if text else "(no version output)"))
        return 0 if answers_version(found) else 1
    gpu = args.gpu
    toolkits = detect_gpu_toolkits()
    if gpu is None:
        gpu = "cpu"
        if toolkits:
            print(f"found GPU toolkit(s): {', '.join(toolkits)}; building for the CPU. "
                  f"To use one: siesta engine install --gpu {toolkits[0]}", file=sys.stderr)
    dest = paths.data_dir / "engine"
    width = 40

    def progress(pct: int, line: str) -> None:
        filled = width * pct // 100
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {line[:60]:<60}")
        sys.stderr.flush()

    try:
        binary = build_llama_server(dest, gpu=gpu, progress=progress)
    except EngineBuildError as exc:
        print(f"\nsiesta: {exc}", file=sys.stderr)
        return 1
    print(f"\nllama-server ready: {binary}")
    return 0


def _discover(paths: Paths, extra_dirs: list[Path], *, assume_yes: bool) -> int:
    from app.core.discovery import SOURCE_LABELS, configured_model_paths, create_recipes, discover_models

    found = discover_models(extra_dirs=extra_dirs)
    known = configured_model_paths(paths.recipes_dir)
    new = [m for m in found if os.path.realpath(m.path) not in known]
    if not found:
        print("no GGUF models found (searched the Hugging Face cache, LM Studio, llama.cpp's cache, Ollama"
              + (" and " + ", ".join(map(str, extra_dirs)) if extra_dirs else "") + ")")
        return 0
    for index, m in enumerate(found, 1):
        mark = f"(recipe {known[os.path.realpath(m.path)]})" if m not in new else ""
        print(f"{index:3d}. {m.name:<40} {_fmt_bytes(m.size):>9}  {SOURCE_LABELS.get(m.source, m.source)}: "
              f"{m.origin or m.path} {mark}")
    if not new:
        print("every model found already has a recipe")
        return 0
    chosen = new
    if not assume_yes:
        if not sys.stdin.isatty():
            print("run with --yes to create recipes for the new ones, or run in a terminal to choose")
            return 0
        answer = input("create recipes for which? numbers separated by spaces, 'all' or nothing [all]: ").strip()
        if answer and answer != "all":
            picked = {int(tok) for tok in answer.replace(",", " ").split() if tok.isdigit()}
            chosen = [m for i, m in enumerate(found, 1) if i in picked and m in new]
    for path in create_recipes(chosen, paths.recipes_dir):
        print(f"created {path}")
    return 0


def _import(paths: Paths, source: Path) -> int:
    from app.core.importers import ImportConfigError, import_config

    try:
        result = import_config(source, paths.recipes_dir)
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


def _demo(paths: Paths, name: str) -> int:
    from app.core.recipes import is_valid_name
    from app.demo_model import write_tiny_model

    if not is_valid_name(name):
        raise ApiError(f"invalid model name {name!r}")
    model_file = paths.data_dir / "models" / f"{name}.gguf"
    write_tiny_model(model_file)
    recipe = paths.recipe_file(name)
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


if __name__ == "__main__":
    raise SystemExit(main())
