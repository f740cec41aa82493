"""``siesta engine info`` and ``siesta engine install``: the llama-server Siesta runs,
through :mod:`app.core.engine` as the tray app's dialogs do."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Context


def engine_command(ctx: Context) -> int:
    if ctx.args.engine_command == "info":
        return info(ctx)
    return install(ctx)


def info(ctx: Context) -> int:
    from app.core import engine

    status = engine.engine_status(ctx.paths, ctx.settings)
    if status.path is None:
        print("no llama-server found. Build one with `siesta engine install` "
              "(about 10 minutes on 2 cores), or set llama_server in settings.toml.")
        return 1
    if not status.usable:
        print(f"{status.path} (set by {status.configured_by}) is not an executable file. Build one with "
              "`siesta engine install`, or set llama_server to a llama-server that runs.")
        return 1
    version = engine.llama_server_version_sync(status.path)
    by = f" (set by {status.configured_by})" if status.configured_by else ""
    print(f"{status.path}{by}\n{version.text}")
    return 0 if version.ok else 1


def install(ctx: Context) -> int:
    from app.core import engine
    from app.core.engine_build import EngineBuildError, build_llama_server

    gpu = ctx.args.gpu
    if gpu is None:
        gpu = "cpu"
        toolkits = engine.gpu_toolkits()
        if toolkits:
            print(f"found GPU toolkit(s): {', '.join(toolkits)}; building for the CPU. "
                  f"To use one: siesta engine install --gpu {toolkits[0]}", file=sys.stderr)
    dest = engine.engine_dir(ctx.paths)
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
