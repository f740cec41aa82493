"""``python -m bench``: Siesta's benchmark suite, each figure beside its baseline in the same run.

    python -m bench                 # full run (a few minutes); rewrites docs/performance.md
    python -m bench --quick         # ~1 minute smoke run; writes bench/results/quick.md only
    python -m bench --only latency,fake --no-doc

Needs a llama-server binary (``--llama-server``, ``SIESTA_LLAMA_SERVER``, or the one
``scripts/build-llama-server.sh`` cached) and the ``gguf`` package for the tiny model and
the reload figures' ~300 MB synthetic one (written once into ``~/.cache/siesta-bench``).
The tray app's figures (``idle``, ``traystart``, ``gui``, ``tray``) run it on Xvfb with
trayer as the tray, as ``scripts/screenshots.sh`` does; without those they are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

FIGURES = ["latency", "ollama", "fake", "stream", "rps", "cold", "unload", "reload", "idle", "startup", "traystart", "memory",
           "relief", "gui", "tray"]
X_FIGURES = {"traystart", "gui", "tray"}  # need Xvfb and trayer (as scripts/screenshots.sh)


def _find_llama_server(given: str | None) -> Path | None:
    if given:
        return Path(given)
    if os.environ.get("SIESTA_LLAMA_SERVER"):
        return Path(os.environ["SIESTA_LLAMA_SERVER"])
    from app.core.config.paths import Paths, engine_cache_dir
    from app.core.engine.locate import find_llama_server

    return find_llama_server(None, Paths.resolve().data_dir, engine_cache_dir())


def _machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def _versions(llama_server: Path) -> str:
    import aiohttp

    try:
        out = subprocess.run([str(llama_server), "--version"], capture_output=True, text=True, timeout=10)
        llama = next((l for l in (out.stdout + out.stderr).splitlines() if l.startswith("version")), "?")
    except OSError:
        llama = "?"
    return f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, llama-server {llama.split(':', 1)[-1].strip()}"


async def run(args: argparse.Namespace) -> int:
    from app.demo_model import write_tiny_model

    from . import figures as F
    from . import idle_figures as I
    from . import memory_figures as M
    from . import ollama_figures as O
    from . import relief_figures as P
    from . import reload_figures as R
    from . import report, tray_startup
    from . import stream_figures as S
    from . import tray_figures as T
    from .util import PROCS, Router, Siesta, fake_recipe, llama_recipe, new_session

    started = time.perf_counter()
    load_before = os.getloadavg()
    if args.uvloop:
        from . import util

        util.USE_UVLOOP = True
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    unknown = only - set(FIGURES)
    if unknown:
        print(f"unknown figure(s): {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    llama_server = _find_llama_server(args.llama_server)
    if llama_server is None or not llama_server.is_file():
        print("no llama-server found: pass --llama-server PATH, set SIESTA_LLAMA_SERVER, or build one with "
              "scripts/build-llama-server.sh", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="siesta-bench-"))
    models_dir = work / "models"
    model_file = write_tiny_model(models_dir / f"{F.MODEL}.gguf")
    skipped: list[str] = []
    main_figures_ran = False
    errors: list[str] = []
    print(f"siesta bench ({'quick' if args.quick else 'full'}): llama-server {llama_server}, work dir {work}",
          flush=True)
    session = new_session()
    ctx = F.Ctx(session=session, work=work, llama_server=llama_server, model_file=model_file,
                models_dir=models_dir, quick=args.quick)

    async def step(name: str, coro_fn, *a) -> None:  # noqa: ANN001
        if name not in only:
            return
        print(f"[{time.perf_counter() - started:5.0f} s] {name}", flush=True)
        try:
            await coro_fn(ctx, *a)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the others
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    try:
        main_figures = {"latency", "ollama", "fake", "stream", "rps", "cold", "unload"} & only
        main_figures_ran = bool(main_figures)
        if main_figures:
            recipes = {
                F.MODEL: llama_recipe(model_file, F.LLAMA_ARGS),
                "tiny1s": llama_recipe(model_file, F.LLAMA_ARGS, unload_timeout="1s"),
                "fake": fake_recipe(),
                "paced": fake_recipe(chunks=S.PACED_TOKENS, interval=S.PACED_INTERVAL),
            }
            siesta = Siesta(work / "siesta", recipes, llama_server=llama_server, global_unload_timeout="1h")
            router = Router(work, llama_server, models_dir, F.LLAMA_ARGS)
            try:
                await siesta.start(session)
                if {"latency", "stream", "cold"} & only:
                    await router.start(session)
                await step("latency", F.completion_latency, siesta, router)
                await step("ollama", O.ollama_latency, siesta)
                if "fake" in only:
                    await siesta.unload(session, F.MODEL)
                await step("fake", F.fake_overhead, siesta)
                await step("stream", S.streaming, siesta, router)
                await step("rps", F.throughput, siesta)
                await step("cold", F.cold_start, siesta, router)
                if "unload" in only:
                    await siesta.unload(session, F.MODEL)
                await step("unload", F.unload_precision, siesta)
            finally:
                router.stop()
                siesta.stop()
        await step("reload", R.reload_after_idle)
        desktop = T.tray_app_exists() and all(shutil.which(tool) for tool in ("Xvfb", "trayer"))
        await step("idle", I.idle, desktop)
        await step("startup", F.startup)
        if desktop:
            await step("traystart", tray_startup.tray_startup)
        await step("memory", M.memory)
        await step("relief", P.relief)
        if desktop:
            await step("gui", T.gui_loop_lag)
            await step("tray", T.tray_memory)
        else:
            for name in sorted(X_FIGURES & only):
                skipped.append(f"{name}: needs the tray app (app/ui/app.py), Xvfb and trayer "
                               "(apt-get install xvfb trayer)")
            if "idle" in only:
                skipped.append("idle: the tray app's rows (no Xvfb or trayer); `siesta serve` measured alone")
    finally:
        await session.close()
        PROCS.kill_all()

    from .util import RETRIES

    ctx.notes["retries"] = dict(RETRIES)
    if main_figures_ran:
        ctx.add(F.Row("reliability", "requests through Siesta answered 502 (stale upstream connection)",
                      RETRIES["siesta-502"], "", target="0", ok=RETRIES["siesta-502"] == 0,
                      note="retried once by the benchmark; see docs/performance.md"))
    runtime = time.perf_counter() - started
    print()
    print(report.text_table(ctx.rows))
    for item in skipped:
        print(f"skipped: {item}")
    for item in errors:
        print(f"ERROR: {item}")
    print(f"\nruntime {runtime:.0f} s")

    results_dir = Path(__file__).resolve().parent / "results"
    results_dir.mkdir(exist_ok=True)
    kind = "quick" if args.quick else "full"
    meta = {
        "command": "python -m bench" + (" --quick" if args.quick else "") + (" --uvloop" if args.uvloop else "") + (f" --only {args.only}" if args.only else ""),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "runtime": runtime, "machine": _machine(), "versions": _versions(llama_server), "skipped": skipped,
        "errors": errors, "loadavg": {"before": load_before, "after": os.getloadavg()},
    }
    (results_dir / f"{kind}.json").write_text(json.dumps({
        "meta": meta, "rows": [r.__dict__ | {"relation": r.relation} for r in ctx.rows],
        "samples": ctx.samples, "notes": ctx.notes}, indent=1, default=str))
    write_doc = args.doc is not None or not (args.quick or args.no_doc or args.only or args.uvloop)
    doc = Path(args.doc) if args.doc else Path(__file__).resolve().parent.parent / "docs" / "performance.md"
    if args.no_doc:
        write_doc = False
    plot_path = (Path(__file__).resolve().parent / "plots" / "latency.svg") if write_doc else results_dir / f"{kind}-latency.svg"
    plotted = report.plot(ctx.samples, plot_path)
    plot_rel = os.path.relpath(plotted, doc.parent if write_doc else results_dir) if plotted else None
    section = report.generated_section(ctx.rows, meta, plot_rel, ctx.notes)
    if write_doc:
        report.write_doc(doc, section, report.TEMPLATE.format(begin=report.BEGIN, end=report.END))
        print(f"wrote {doc} and {plotted}")
    else:
        (results_dir / f"{kind}.md").write_text(section + "\n")
        print(f"wrote {results_dir / f'{kind}.md'}" + (f" and {plotted}" if plotted else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run (fewer repetitions, 20 s idle CPU)")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(FIGURES))
    parser.add_argument("--llama-server", help="llama-server binary (default: SIESTA_LLAMA_SERVER or the build cache)")
    parser.add_argument("--doc", help="write the results into this Markdown file (default for a full run: "
                                      "docs/performance.md)")
    parser.add_argument("--no-doc", action="store_true", help="print the table only (and bench/results/)")
    parser.add_argument("--uvloop", action="store_true",
                        help="run `siesta serve` on uvloop (evaluates a proposal; needs `pip install uvloop`)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir (logs of every process)")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
