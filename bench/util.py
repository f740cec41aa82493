"""Shared pieces of the benchmark: statistics, the HTTP client, and the processes it runs.

Every process the benchmark starts is registered in :data:`PROCS` and ended in a
``finally`` (and, as a last resort, at interpreter exit): SIGTERM to its process group,
SIGKILL after a grace period, then SIGKILL to any descendant that outlived it.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
FAKE_SERVER = BENCH_DIR / "fake_server.py"

# ---- statistics ---------------------------------------------------------------------------


def pct(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def p50(values: Iterable[float]) -> float:
    return pct(values, 50)


def p99(values: Iterable[float]) -> float:
    return pct(values, 99)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ---- ports, environment ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a Siesta under test: no SIESTA_* from outside, XDG dirs in ``home``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SIESTA_") and k != "LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER"}
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        path = home / name.split("_")[1].lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


# ---- processes --------------------------------------------------------------------------------


class Procs:
    """Every process the benchmark started; :meth:`kill_all` leaves none behind."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen[bytes]] = []
        self.descendants: dict[int, set[int]] = {}

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.items.append(proc)
        return proc

    def note_descendants(self, proc: subprocess.Popen[bytes]) -> None:
        """Remembers the process's current descendants, so a stop can check they are gone."""
        try:
            kids = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.Error:
            return
        self.descendants.setdefault(proc.pid, set()).update(kids)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        self.note_descendants(proc)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for pid in self.descendants.pop(proc.pid, set()):
            _kill_if_alive(pid)
        if proc in self.items:
            self.items.remove(proc)
        return proc.returncode

    def kill_all(self) -> None:
        for proc in list(self.items):
            try:
                self.stop(proc, timeout=10.0)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_if_alive(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            proc.kill()
    except psutil.Error:
        pass


PROCS = Procs()
atexit.register(PROCS.kill_all)


def spawn(argv: list[str], *, log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts ``argv`` in its own session (so its whole group can be signalled), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                env=env, cwd=str(cwd or REPO), start_new_session=True)
    return PROCS.add(proc)


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it has exited, only its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = stat[stat.rfind(b")") + 2: stat.rfind(b")") + 3]
    return state in (b"Z", b"X")


def task_stats(pid: int) -> dict[str, tuple[str, int, int, int]]:
    """Per thread of ``pid``: (name, ns on a CPU, ns runnable but waiting on a run queue, context
    switches), from /proc/PID/task/TID/schedstat and status. Nanoseconds, where psutil's
    ``cpu_times`` count 10 ms ticks: too coarse for an idle process (0.05% of a core over a
    minute is 30 ms)."""
    out: dict[str, tuple[str, int, int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            run, wait, _ = (int(x) for x in Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split())
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except (OSError, ValueError):
            continue
        switches = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
        out[tid] = (f"{name} ({'main' if tid == str(pid) else 'thread'})", run, wait, switches)
    return out


def task_deltas(before: dict[str, tuple[str, int, int, int]], after: dict[str, tuple[str, int, int, int]],
                seconds: float) -> dict[str, Any]:
    """CPU (% of a core), run-queue wait and wake-ups per second of a process between two
    :func:`task_stats`; by thread name as well. A thread that exited in between is not counted."""
    cpu = wait = 0
    by_thread: dict[str, float] = {}
    wakeups: dict[str, float] = {}
    for tid, (name, run, waited, switches) in after.items():
        _, run0, waited0, switches0 = before.get(tid, (name, 0, 0, 0))
        cpu += run - run0
        wait += waited - waited0
        by_thread[name] = by_thread.get(name, 0.0) + 100.0 * (run - run0) / 1e9 / seconds
        wakeups[name] = wakeups.get(name, 0.0) + (switches - switches0) / seconds
    return {"cpu_percent": 100.0 * cpu / 1e9 / seconds, "runqueue_wait_ms": (wait / 1e6),
            "cpu_percent_by_thread": by_thread, "wakeups_per_s": wakeups}


def rss_of(pid: int) -> dict[str, float]:
    """Resident memory of ``pid`` alone (its children not counted), MB: total, anonymous, file-backed."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) / 1024.0
    return {"rss": fields.get("VmRSS", math.nan), "anon": fields.get("RssAnon", math.nan),
            "file": fields.get("RssFile", math.nan)}


def port_of(pid: int) -> int:
    """The ``--port`` of a running server, read from its command line."""
    cmd = psutil.Process(pid).cmdline()
    for i, part in enumerate(cmd):
        if part == "--port" and i + 1 < len(cmd):
            return int(cmd[i + 1])
    raise RuntimeError(f"process {pid} has no --port in {cmd}")


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- the client -----------------------------------------------------------------------------


def new_session() -> aiohttp.ClientSession:
    """The one client configuration used for direct and proxied requests alike."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=120),
        auto_decompress=False,
    )


JSON_HEADERS = {"Content-Type": "application/json"}


def chat_body(model: str, max_tokens: int, *, stream: bool = False, prompt: str = "hello") -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # llama.cpp: always generate max_tokens tokens
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


class StaleConnection(RuntimeError):
    """Siesta answered 502 because its pooled connection to llama-server had been closed."""


def _check_status(url: str, status: int, data: bytes) -> None:
    if status == 502 and b"backend_error" in data and (b"ServerDisconnected" in data or b"ClientOSError" in data):
        raise StaleConnection(f"POST {url}: HTTP 502: {data[:300]!r}")
    if status != 200:
        raise RuntimeError(f"POST {url}: HTTP {status}: {data[:300]!r}")


# Requests retried once, by kind: "direct" (the client's own pooled connection to llama-server was
# dead) and "siesta-502" (Siesta's pooled upstream connection was dead; a bug, see docs/performance.md).
RETRIES: dict[str, int] = {"direct": 0, "siesta-502": 0}


async def timed_post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """Seconds from sending the request to having read the whole answer; raises on a non-200."""
    try:
        return await _timed_post(session, url, body)
    except StaleConnection:
        RETRIES["siesta-502"] += 1
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        RETRIES["direct"] += 1
    return await _timed_post(session, url, body)


async def _timed_post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
        data = await resp.read()
        t1 = time.perf_counter()
        _check_status(url, resp.status, data)
    return t1 - t0


CONTENT_EVENT = re.compile(rb'"delta":\{"content":"')
PREDICTED_N = re.compile(rb'"predicted_n":(\d+)')


async def timed_stream(session: aiohttp.ClientSession, url: str, body: bytes) -> dict[str, float]:
    """One streamed completion: time to first body chunk, to first token, to the end; token count."""
    # llama-server closes a connection after a streamed answer while announcing keep-alive; a
    # pooled connection can be reused before the close is seen, and the request then never
    # reaches the server. Retry once on a new connection, and count it (docs/performance.md).
    try:
        return await _timed_stream(session, url, body)
    except StaleConnection:
        RETRIES["siesta-502"] += 1
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        RETRIES["direct"] += 1
    try:
        return await _timed_stream(session, url, body)
    except aiohttp.ClientError as exc:
        raise RuntimeError(f"POST {url} (stream): {type(exc).__name__}: {exc}") from exc


async def _timed_stream(session: aiohttp.ClientSession, url: str, body: bytes) -> dict[str, float]:
    t0 = time.perf_counter()
    first_chunk = first_token = last = math.nan
    buf = bytearray()
    async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            _check_status(url, resp.status, await resp.read())
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            if math.isnan(first_chunk):
                first_chunk = now
            buf += chunk
            if math.isnan(first_token) and CONTENT_EVENT.search(buf):
                first_token = now
            last = now
    # llama-server holds back a token that ends inside a UTF-8 sequence, so count from its timings
    found = PREDICTED_N.search(buf)
    tokens = int(found.group(1)) if found else len(CONTENT_EVENT.findall(buf))
    return {"ttfc": first_chunk - t0, "ttft": first_token - t0, "total": last - t0, "tokens": tokens,
            "tps": (tokens - 1) / (last - first_token) if tokens > 1 and last > first_token else math.nan}


async def wait_http_ok(session: aiohttp.ClientSession, url: str, timeout: float, *,
                       proc: subprocess.Popen[bytes] | None = None, interval: float = 0.005,
                       log: Path | None = None) -> float:
    """Polls ``url`` until it answers 200; returns the time that took. Fails fast if ``proc`` exits."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    probe = aiohttp.ClientTimeout(total=2.0)
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered\n"
                               + (log_tail(log) if log else ""))
        try:
            async with session.get(url, timeout=probe) as resp:
                await resp.read()
                if resp.status == 200:
                    return time.perf_counter() - t0
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout} s\n" + (log_tail(log) if log else ""))
        await asyncio.sleep(interval)


# ---- Siesta under test ---------------------------------------------------------------------------


def llama_recipe(model: Path, args: list[str], unload_timeout: str | None = None) -> str:
    text = f'backend = "llamacpp"\nmodel = {json.dumps(str(model))}\nargs = {json.dumps(args)}\n'
    if unload_timeout:
        text += f'unload_timeout = "{unload_timeout}"\n'
    return text


def fake_recipe(chunks: int = 16, interval: float = 0.0) -> str:
    cmd = [sys.executable, str(FAKE_SERVER), "--port", "{port}", "--chunks", str(chunks), "--interval", str(interval)]
    return f'backend = "command"\ncommand = {json.dumps(cmd)}\nhealth_path = "/health"\n'


USE_UVLOOP = False  # python -m bench --uvloop: run `siesta serve` on uvloop (a proposal under test)


class Siesta:
    """One ``python -m app serve`` under test, with its own config dir and XDG dirs."""

    def __init__(self, home: Path, recipes: dict[str, str], *, llama_server: Path | None,
                 global_unload_timeout: str = "1h", max_loaded_models: int = 0,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 tray: bool = False) -> None:
        """``tray``: the desktop app (``python -m app`` with no sub-command) instead of ``serve``;
        ``env`` then says where it runs (``DISPLAY`` and ``QT_QPA_PLATFORM``)."""
        self.home = home
        self.tray = tray
        entry = ["-m", "bench.uvloop_serve"] if USE_UVLOOP and not tray else ["-m", "app"]
        self.config_dir = home / "config"
        (self.config_dir / "recipes").mkdir(parents=True, exist_ok=True)
        for name, text in recipes.items():
            (self.config_dir / "recipes" / f"{name}.toml").write_text(text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / ("tray.log" if tray else "siesta.log")
        self.argv = [sys.executable, *entry, "--config-dir", str(self.config_dir), *([] if tray else ["serve"]),
                     "--port", str(self.port), "--global-unload-timeout", global_unload_timeout,
                     "--max-loaded-models", str(max_loaded_models)]
        if llama_server is not None:
            self.argv += ["--llama-server", str(llama_server)]
        self.argv += extra_args or []
        self.env = child_env(home, env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> float:
        """Launches it and waits for ``/api/v1/health``; returns seconds from launch to the first 200."""
        self.started_at = time.perf_counter()
        self.proc = spawn(self.argv, log=self.log, env=self.env)
        await wait_http_ok(session, self.url + "/api/v1/health", timeout, proc=self.proc, log=self.log)
        return time.perf_counter() - self.started_at

    def stop(self) -> None:
        if self.proc is not None:
            PROCS.stop(self.proc)
            self.proc = None

    async def api(self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
        async with session.request(method, self.url + path, json=body) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data}\n{log_tail(self.log)}")
            return data

    async def models(self, session: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        data = await self.api(session, "GET", "/api/v1/models")
        return {m["name"]: m for m in data["models"]}

    async def load(self, session: aiohttp.ClientSession, name: str) -> dict[str, Any]:
        model = await self.api(session, "POST", "/api/v1/load", {"model": name})
        assert self.proc is not None
        PROCS.note_descendants(self.proc)
        return model

    async def unload(self, session: aiohttp.ClientSession, name: str) -> dict[str, Any]:
        return await self.api(session, "POST", "/api/v1/unload", {"model": name})

    async def backend_url(self, session: aiohttp.ClientSession, name: str) -> str:
        """Loads ``name`` and returns the address of its server, for requests that bypass Siesta."""
        model = await self.load(session, name)
        return f"http://127.0.0.1:{port_of(model['pid'])}"


# ---- llama.cpp's router -------------------------------------------------------------------------


class Router:
    """``llama-server --models-dir DIR``: llama.cpp's own on-demand router.

    The same llama-server build, started with ``--models-dir DIR`` and no model, lists the
    GGUFs in DIR and starts a child server per model on its first request. Measured once
    on this machine before the suite existed (urllib client, 16-token completion of the tiny
    model, 200 alternating requests): direct p50 12.4 ms, through the router 15.7 ms (1.26x);
    cold start 43 ms through the router vs 46 ms starting llama-server by hand.
    """

    def __init__(self, home: Path, llama_server: Path, models_dir: Path, args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "router.log"
        self.argv = [str(llama_server), "--models-dir", str(models_dir), "--host", "127.0.0.1",
                     "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc = spawn(self.argv, log=self.log)
        await wait_http_ok(session, self.url + "/health", 30, proc=self.proc, log=self.log)

    def stop(self) -> None:
        if self.proc is not None:
            PROCS.stop(self.proc)
            self.proc = None

    async def status(self, session: aiohttp.ClientSession, name: str) -> dict[str, Any]:
        async with session.get(self.url + "/models") as resp:
            data = await resp.json()
        for item in data["data"]:
            if item["id"] == name:
                return item["status"]
        raise RuntimeError(f"router does not list {name!r}: {data}")

    async def child_url(self, session: aiohttp.ClientSession, name: str) -> str:
        status = await self.status(session, name)
        args = status.get("args", [])
        port = int(args[args.index("--port") + 1])
        return f"http://127.0.0.1:{port}"

    async def unload(self, session: aiohttp.ClientSession, name: str, timeout: float = 15.0) -> None:
        """Asks the router to unload ``name`` and waits until its child process has exited."""
        assert self.proc is not None
        kids = [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        async with session.post(self.url + "/models/unload", json={"model": name}) as resp:
            await resp.read()
        deadline = time.perf_counter() + timeout
        while True:
            status = await self.status(session, name)
            if status.get("value") == "unloaded" and all(process_gone(pid) for pid in kids):
                return
            if time.perf_counter() > deadline:
                raise RuntimeError(f"router did not unload {name!r}: {status}")
            await asyncio.sleep(0.005)


class LlamaServer:
    """A llama-server started by hand (the cold-start baseline)."""

    def __init__(self, home: Path, llama_server: Path, model: Path, args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "llama-by-hand.log"
        self.argv = [str(llama_server), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn(self.argv, log=self.log)

    def stop(self) -> None:
        if self.proc is not None:
            PROCS.stop(self.proc)
            self.proc = None
