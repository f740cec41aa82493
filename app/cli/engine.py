"""``siesta engine info|install|update|rollback``: the llama-server Siesta runs.

``install`` takes a prebuilt llama-server from llama.cpp's releases (:mod:`app.core.engine.install`)
with a progress bar; ``--from-source`` (or the older ``--gpu``) builds one instead
(:mod:`app.core.engine.build`). Where no prebuilt build fits, or there is no network, it
says so and prints the source-build command.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.cli.context import Context

INTERRUPTED = 130


def engine_command(ctx: Context) -> int:
    command = ctx.args.engine_command
    if command == "info":
        return info(ctx)
    if command == "update":
        return update(ctx)
    if command == "rollback":
        return rollback(ctx)
    if ctx.args.from_source or ctx.args.gpu is not None:
        return build_from_source(ctx)
    return install(ctx)


def info(ctx: Context) -> int:
    from app.core.engine import locate as engine
    from app.core.engine.install import installed

    engines = installed(ctx.paths.data_dir)
    status = engine.engine_status(ctx.paths, ctx.settings)
    if status.path is None:
        print("no llama-server found. Install one with `siesta engine install` (a prebuilt llama.cpp release), "
              "or set llama_server in settings.toml.")
        return 1
    if not status.usable:
        print(f"{status.path} (set by {status.configured_by}) is not an executable file. Install one with "
              "`siesta engine install`, or set llama_server to a llama-server that runs.")
        return 1
    version = engine.llama_server_version_sync(status.path)
    active = next((e for e in engines if e.active and e.binary == status.path), None)
    if status.configured_by:
        by = f" (set by {status.configured_by})"
    elif active is not None:
        by = f" (installed engine {active.name}: llama.cpp {active.tag}, backend {active.backend})"
    else:
        by = ""
    print(f"{status.path}{by}\n{version.text}")
    if engines:
        print("installed engines:")
        for e in engines:
            mark = "active" if e.active else ("previous" if e.previous else "")
            print(f"  {e.name:<16} {mark:<9} backend {e.backend:<7} llama.cpp {e.tag:<7} {e.version}")
    return 0 if version.ok else 1


class _Bars:
    """One progress bar per downloaded file, on stderr."""

    def __init__(self) -> None:
        from app.cli.pull import ProgressBar

        self._make = lambda: ProgressBar(sys.stderr)
        self.current: Any = None
        self.name = ""

    def update(self, done: int, total: int, what: str) -> None:
        if what != self.name:
            self.end()
            self.name = what
            self.current = self._make()
            print(f"downloading {what}", file=sys.stderr, flush=True)
        self.current.update(done, total)

    def end(self) -> None:
        if self.current is not None:
            self.current.end()


def _with_cancel(run: Callable[[threading.Event], Any]) -> Any:
    """Runs ``run(cancel)`` with Ctrl-C setting ``cancel`` (a second Ctrl-C stops at once)."""
    cancel = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        return run(cancel)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _report(result: Any) -> None:
    for message in result.messages:
        print(f"note: {message}", file=sys.stderr)
    e = result.engine
    print(f"llama-server ready: {e.binary}\nllama.cpp {e.tag}, backend {e.backend} ({result.reason}), "
          f"version {e.version}")


def _prebuilt(ctx: Context, run: Callable[[Any, threading.Event], Any], backend: str) -> int:
    from app.core.engine.install import Cancelled, InstallError
    from app.core.engine.release import NoBuild, Offline, ReleaseError, source_build_command

    bars = _Bars()
    try:
        result = _with_cancel(lambda cancel: run(bars.update, cancel))
    except (Cancelled, KeyboardInterrupt):
        bars.end()
        print("siesta: cancelled; the active engine is unchanged", file=sys.stderr)
        return INTERRUPTED
    except Offline as exc:
        bars.end()
        print(f"siesta: no network access to llama.cpp's releases ({exc}).\n"
              f"Build llama-server from source instead: {source_build_command(backend)}", file=sys.stderr)
        return 1
    except NoBuild as exc:
        bars.end()
        print(f"siesta: {exc}.\nBuild it from source instead: {source_build_command(exc.backend)}", file=sys.stderr)
        return 1
    except (ReleaseError, InstallError) as exc:
        bars.end()
        print(f"siesta: {exc}\nThe active engine is unchanged.", file=sys.stderr)
        return 1
    bars.end()
    if result is None:
        print("the active engine is already llama.cpp's latest release")
        return 0
    _report(result)
    return 0


def install(ctx: Context) -> int:
    from app.core.engine.install import install as do_install
    from app.core.engine.release import DEFAULT_TAG

    backend = ctx.args.backend or "auto"
    url = ctx.settings.values.engine_releases_url
    return _prebuilt(ctx, lambda progress, cancel: do_install(
        ctx.paths.data_dir, url, backend=backend, tag=ctx.args.tag or DEFAULT_TAG, no_verify=ctx.args.no_verify,
        progress=progress, cancel=cancel), backend)


def update(ctx: Context) -> int:
    from app.core.engine.install import installed
    from app.core.engine.install import update as do_update

    url = ctx.settings.values.engine_releases_url
    active = next((e.backend for e in installed(ctx.paths.data_dir) if e.active), "cpu")
    return _prebuilt(ctx, lambda progress, cancel: do_update(
        ctx.paths.data_dir, url, no_verify=ctx.args.no_verify, progress=progress, cancel=cancel), active)


def rollback(ctx: Context) -> int:
    from app.core.engine.install import InstallError
    from app.core.engine.install import rollback as do_rollback

    try:
        e = do_rollback(ctx.paths.data_dir)
    except InstallError as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 1
    print(f"active engine: {e.name} (llama.cpp {e.tag}, backend {e.backend}, version {e.version})\n{e.binary}")
    return 0


def build_from_source(ctx: Context) -> int:
    from app.core.engine import locate as engine
    from app.core.engine.build import EngineBuildError, build_llama_server, copy_cached_build
    from app.core.engine.build import default_cache_dir as build_cache_dir
    from app.core.engine.install import deactivate

    gpu = ctx.args.gpu or (ctx.args.backend if ctx.args.backend not in (None, "auto", "metal") else None)
    if gpu is None:
        gpu = "cpu"
        toolkits = engine.gpu_toolkits()
        if toolkits:
            print(f"found GPU toolkit(s): {', '.join(toolkits)}; building for the CPU. "
                  f"To use one: siesta engine install --from-source --backend {toolkits[0]}", file=sys.stderr)
    dest = engine.engine_dir(ctx.paths)
    width = 40

    def progress(pct: int, line: str) -> None:
        filled = width * pct // 100
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {line[:60]:<60}")
        sys.stderr.flush()

    try:
        copied = copy_cached_build(dest) if gpu == "cpu" else None
        if copied is not None:
            print(f"copied the llama-server already built for the tests ({build_cache_dir()}): nothing to compile",
                  file=sys.stderr)
        binary = copied or build_llama_server(dest, gpu=gpu, progress=progress)
    except EngineBuildError as exc:
        print(f"\nsiesta: {exc}", file=sys.stderr)
        return 1
    print(f"\nllama-server ready: {binary}")
    was = deactivate(ctx.paths.data_dir)
    if was:
        print(f"it replaces the installed engine {was} (back to it: siesta engine rollback)")
    return 0
