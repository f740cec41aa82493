"""The ``siesta`` command: ``serve`` runs the manager headless; the other commands talk to
the running instance through its HTTP API (so changes reach running countdowns at once),
or edit the files directly when none is running. With no command, the tray app starts.

Modules: ``parser`` (every sub-command and the options each takes), ``context`` (what a
command runs with: arguments, paths, settings and the client, read on demand),
``client`` (the HTTP client of the running instance), ``table`` (the model table), and
the commands: ``run`` (``serve`` and the bare tray-app form), ``ps`` (ps, ps --watch),
``control`` (load, unload, timeout), ``recipes`` (demo, discover, import), ``pull``,
``engine``, ``doctor``.

``siesta ps`` must stay fast (about 0.15 s): importing this package reads only argparse,
the durations and the endpoint; each command's module is imported when it runs, and
imports what else it needs then.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.cli.client import ApiClient, ApiError, NotRunning
from app.cli.context import Context
from app.cli.parser import SETTING_FLAGS, build_parser, connect_conflict, flags
from app.cli.table import format_table
from app.core.config.endpoint import SettingsError
from app.core.config.paths import Paths

if TYPE_CHECKING:
    from app.cli.run import serve

__all__ = ["main", "build_parser", "serve", "format_table", "ApiClient", "ApiError", "NotRunning",
           "SETTING_FLAGS", "flags"]

_flags = flags  # the name tests and older callers use

# Each command's module is imported only when that command runs (``siesta ps`` stays fast).
COMMANDS: dict[str | None, tuple[str, str]] = {
    None: ("run", "tray_command"),
    "serve": ("run", "serve_command"),
    "ps": ("ps", "ps_command"),
    "load": ("control", "load_command"),
    "unload": ("control", "unload_command"),
    "timeout": ("control", "timeout_command"),
    "demo": ("recipes", "demo_command"),
    "discover": ("recipes", "discover_command"),
    "import": ("recipes", "import_command"),
    "pull": ("pull", "pull_command"),
    "engine": ("engine", "engine_command"),
    "doctor": ("doctor", "doctor_command"),
}


def command_handler(command: str | None) -> Callable[[Context], int]:
    """The function that runs a sub-command (None: the bare form, the tray app)."""
    module, name = COMMANDS[command]
    handler: Callable[[Context], int] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return handler


def __getattr__(name: str) -> Any:
    if name == "serve":  # app.cli.serve(paths, settings, stop): headless Siesta, for tests and benchmarks
        from app.cli.run import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    conflict = connect_conflict(args)
    if conflict:
        parser.error(conflict)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("watchfiles", "gguf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx = Context(parser, args, Paths.resolve(args.config_dir))
    try:
        return command_handler(args.command)(ctx)
    except SettingsError as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 1
    except NotRunning as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
