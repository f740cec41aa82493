"""The ``siesta`` command line: its sub-commands and which options each one takes.

Every option is accepted before or after the sub-command where it means something:

* ``--config-dir`` and ``-v/--verbose`` on every sub-command;
* every setting flag (``--host``, ``--port``, ``--global-unload-timeout``, ...) on
  ``serve`` and on the bare form (the tray app);
* ``--host`` and ``--port`` on the commands that talk to the running instance (``ps``,
  ``load``, ``unload``, ``timeout``; its API key comes from the environment only);
* ``--connect URL`` and ``--api-key KEY`` on those commands and on the bare form: they
  act on a Siesta elsewhere (the bare form starts the tray app as its client);
* ``--llama-server`` on ``engine`` and its sub-commands;
* ``--host``, ``--port`` and ``--llama-server`` on ``doctor`` (the Siesta it describes).

The top-level parser gives each option its default; a sub-parser's options default to
:data:`argparse.SUPPRESS`, so a sub-command never overwrites a flag given before it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app import __version__
from app.core.config.durations import USE_GLOBAL_WORD

SETTING_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("host", {"help": "address to listen on (default 127.0.0.1)"}),
    ("port", {"type": int, "help": "port to listen on (default 8777)"}),
    ("global_unload_timeout", {"help": "idle time before a model is unloaded: 90s, 5m, 1h30m, never (default 5m)"}),
    ("max_loaded_models", {"type": int, "help": "most models loaded at once; 0 = no limit (default 3)"}),
    ("llama_server", {"help": "path of the llama-server binary"}),
    ("stop_timeout", {"help": "graceful stop before kill (default 10s)"}),
    ("load_timeout", {"help": "longest wait for a model to become ready (default 5m)"}),
    ("allowed_hosts", {"help": "extra Host names to accept, comma-separated"}),
    ("memory_budget", {"metavar": "LIMIT",
                       "help": "most memory Siesta's models may use on each device: a size (20GB), a share of "
                               "the device (85%%), off, or per device 'ram: 16GB, gpu0: 90%%' (default 90%%)"}),
    ("free_memory_floor", {"metavar": "LIMIT",
                           "help": "free memory to keep on each device for other programs; same forms "
                                   "(default 5%%)"}),
    ("engine_releases_url", {"metavar": "URL",
                             "help": "llama.cpp's GitHub releases API, or a mirror of it "
                                     "(default https://api.github.com/repos/ggml-org/llama.cpp)"}),
]
ALL_SETTINGS = tuple(field for field, _ in SETTING_FLAGS)
CLIENT_SETTINGS = ("host", "port")  # where the running instance listens
CLIENT_HELP = {"host": "address of the running Siesta (default: as its settings say)",
               "port": "port of the running Siesta (default: as its settings say)"}
ENGINE_SETTINGS = ("llama_server", "engine_releases_url")
DOCTOR_SETTINGS = ("host", "port", "llama_server")
CONNECT_COMMANDS = (None, "ps", "load", "unload", "timeout")
"""The bare form (the tray app) and the client commands: what ``--connect`` can drive."""


def _add_common(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    # A sub-command's defaults would overwrite flags given before it, so it has none.
    parser.add_argument("--config-dir", default=argparse.SUPPRESS if sub else None,
                        help="folder of settings.toml and recipes/ (default: SIESTA_CONFIG_DIR or the user config dir)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if sub else False,
                        help="log more")


def _add_setting_flags(parser: argparse.ArgumentParser, fields: Iterable[str] = ALL_SETTINGS, *,
                       sub: bool = False, help_for: dict[str, str] | None = None) -> None:
    default = argparse.SUPPRESS if sub else None
    wanted = set(fields)
    for field, kwargs in SETTING_FLAGS:
        if field in wanted:
            if help_for and field in help_for:
                kwargs = {**kwargs, "help": help_for[field]}
            parser.add_argument("--" + field.replace("_", "-"), dest=field, default=default, **kwargs)


def _add_connect(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    default = argparse.SUPPRESS if sub else None
    parser.add_argument("--connect", metavar="URL", default=default,
                        help="act on the Siesta at URL (http://HOST:PORT; HOST alone means port 8777) instead of "
                             "this machine's; with no command, start the tray app as its client")
    parser.add_argument("--api-key", metavar="KEY", default=default,
                        help="the API key of the Siesta --connect names (default: SIESTA_API_KEY)")


def _sub_command(sub: Any, name: str, help: str, settings: Iterable[str] = (), **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, **kwargs)
    _add_common(parser, sub=True)
    client = tuple(settings) == CLIENT_SETTINGS
    _add_setting_flags(parser, settings, sub=True, help_for=CLIENT_HELP if client else None)
    if client:
        _add_connect(parser, sub=True)
    return parser


def version_text(data_dir: Path | None = None) -> str:
    """Siesta's version, and the active engine as ``siesta engine install`` recorded it (its
    llama.cpp tag and backend): never by running ``llama-server --version``, which takes
    seconds on CUDA builds."""
    from app.core.config.paths import Paths
    from app.core.engine.install import installed

    active = next((e for e in installed(data_dir or Paths.resolve().data_dir) if e.active), None)
    engine = (f"llama.cpp {active.tag}, {active.backend} (siesta engine install)" if active else
              "none installed by `siesta engine install` (`siesta engine info` shows the llama-server in use)")
    return f"siesta {__version__}\nengine: {engine}"


class _ShowVersion(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siesta", description="Runs local model servers on demand and unloads them when idle.")
    parser.add_argument("--version", action=_ShowVersion,
                        help="show Siesta's version and the llama.cpp engine it runs, and exit")
    _add_common(parser, sub=False)
    _add_setting_flags(parser)
    _add_connect(parser, sub=False)
    sub = parser.add_subparsers(dest="command")

    _sub_command(sub, "serve", "run the manager and its HTTP API headless", ALL_SETTINGS)

    ps = _sub_command(sub, "ps", "list models with state, memory and time left", CLIENT_SETTINGS)
    ps.add_argument("--watch", action="store_true", help="keep the table up to date")
    ps.add_argument("--json", action="store_true", help="print the API's JSON")

    load = _sub_command(sub, "load", "load a model now; returns when it is ready", CLIENT_SETTINGS)
    load.add_argument("model")

    unload = _sub_command(sub, "unload", "unload a model (or --all)", CLIENT_SETTINGS)
    unload.add_argument("model", nargs="?")
    unload.add_argument("--all", action="store_true")

    timeout = _sub_command(sub, "timeout", "set a model's idle timeout (or --global)", CLIENT_SETTINGS)
    timeout.add_argument("model", nargs="?", help="model name")
    timeout.add_argument("duration", nargs="?",
                         help=f'90s, 5m, 1h30m, never, or "{USE_GLOBAL_WORD}" for the global timeout')
    timeout.add_argument("--global", dest="global_value", metavar="DURATION", help="set the global timeout")

    demo = _sub_command(sub, "demo", "create a tiny demo model and its recipe 'tiny'")
    demo.add_argument("--name", default="tiny")

    discover = _sub_command(sub, "discover", "find GGUF models on this computer and create recipes for them")
    discover.add_argument("--dir", action="append", type=Path, default=[], help="also search this folder (repeatable)")
    discover.add_argument("--yes", action="store_true", help="create recipes for every model found, without asking")

    importer = _sub_command(sub, "import", "import a llama-swap config.yaml or Lemonade's user_models.json")
    importer.add_argument("path", type=Path)

    pull = _sub_command(sub, "pull", "download a GGUF model from the Hugging Face Hub and create its recipe")
    pull.add_argument("ref", metavar="ORG/REPO[:QUANT]",
                      help="a Hub repo, with a quant tag (Q4_K_M, Q8_0, ...) or a file: ORG/REPO/FILE.gguf")
    pull.add_argument("--name", help="the recipe's name (default: the repo's name and the quant, like tiny-q8_0)")

    engine = _sub_command(sub, "engine", "the llama-server Siesta uses: show, install, update or roll it back",
                          ENGINE_SETTINGS)
    engine_sub = engine.add_subparsers(dest="engine_command", required=True)
    _sub_command(engine_sub, "info", "installed engines, the active one, its backend and version", ENGINE_SETTINGS)
    install = _sub_command(engine_sub, "install", "install a prebuilt llama-server from llama.cpp's releases "
                           "(or build one with --from-source) into Siesta's data dir", ENGINE_SETTINGS)
    install.add_argument("--backend", choices=["auto", "cpu", "vulkan", "cuda", "rocm", "metal"], default=None,
                         help="GPU backend (default auto: CUDA on NVIDIA, ROCm on AMD, Vulkan on other GPUs, "
                              "Metal on Apple Silicon, else the CPU)")
    install.add_argument("--tag", metavar="bNNNN|latest", default=None,
                         help="llama.cpp release (default: the one this Siesta pins)")
    install.add_argument("--no-verify", action="store_true", help="install an asset with no known sha256 digest")
    install.add_argument("--from-source", action="store_true",
                         help="build llama-server from source (needs cmake and a C++ compiler; ~10 minutes)")
    install.add_argument("--gpu", choices=["cpu", "cuda", "vulkan", "rocm"], default=None,
                         help="build from source for this backend (same as --from-source --backend GPU)")
    update = _sub_command(engine_sub, "update", "install the latest llama.cpp release beside the active engine "
                          "and switch to it", ENGINE_SETTINGS)
    update.add_argument("--no-verify", action="store_true", help="install an asset with no known sha256 digest")
    _sub_command(engine_sub, "rollback", "switch back to the previous engine", ENGINE_SETTINGS)

    doctor = _sub_command(sub, "doctor", "what a bug report needs: versions, llama-server, GPUs, tray, folders, "
                          "port, remotes, recipes (secrets hidden)", DOCTOR_SETTINGS)
    doctor.add_argument("--json", action="store_true", help="print the report as JSON, for tools")
    return parser


def connect_conflict(args: argparse.Namespace) -> str | None:
    """Why ``--connect`` / ``--api-key`` cannot go with the rest of the command line, or None."""
    connect, key = getattr(args, "connect", None), getattr(args, "api_key", None)
    if connect is None and key is None:
        return None
    if args.command not in CONNECT_COMMANDS:
        return "--connect and --api-key go with ps, load, unload, timeout, or no command (the tray app)"
    if connect is None:
        return None if args.command is not None else "--api-key goes with --connect"
    given = sorted(flags(args))
    if given:
        names = ", ".join("--" + f.replace("_", "-") for f in given)
        return f"--connect names the Siesta to use; {names} cannot be given with it"
    return None


def flags(args: argparse.Namespace) -> dict[str, Any]:
    """The setting flags given on the command line, wherever they were given."""
    return {field: getattr(args, field) for field in ALL_SETTINGS if getattr(args, field, None) is not None}
