"""The network side: Siesta's port (free, or held: by a running Siesta, by this one, or by
another program), and each remote of settings.toml with whether it answers.

The port is tried the way the front door listens (each address the host resolves to,
``SO_REUSEADDR``, IPv6 sockets v6-only) and closed at once. When it is held, the holder is
asked ``GET /api/v1/health`` (a Siesta answers with its version and config dir) and looked
up among the listening sockets (:func:`psutil.net_connections`; another user's process
shows without its pid). Each remote is asked its kind's cheap ``GET`` (the probe Siesta
itself uses) with its key, if it has one; the key is never shown, only whether it is set
and where it comes from.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config.endpoint import SettingsError, client_url, read_settings_file
from app.core.config.redact import redact_args
from app.core.doctor.report import Item, found, missing
from app.core.remotes.config import RemoteConfig, api_key_env, parse_remotes

__all__ = ["port_item", "remote_items", "bind_problem", "Holder", "port_holder"]

HEALTH_TIMEOUT = 2.0
REMOTE_TIMEOUT = 3.0


def bind_problem(host: str, port: int) -> OSError | None:
    """The error listening on ``host:port`` would meet now, or None when it is free."""
    bind_host = None if host in ("", "*") else host
    try:
        infos = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"{host!r} does not resolve: {exc.strerror or exc}")
    for family, kind, proto, _name, address in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        try:
            if os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError as exc:
            return exc
        finally:
            sock.close()
    return None


@dataclass(frozen=True)
class Holder:
    """Who holds a port: the process (when visible) and, for a Siesta, what it says of itself."""

    pid: int | None
    process: str | None  # "python3 -m app serve": its name and first arguments (secrets replaced)
    siesta: dict[str, Any] | None  # its /api/v1/health answer (version, config_dir), or None
    health: str  # what /api/v1/health said, in words


def port_holder(host: str, port: int, api_key: str | None) -> Holder:
    siesta, health = _health(host, port, api_key)
    pid, process = _listener(port)
    return Holder(pid, process, siesta, health)


def _health(host: str, port: int, api_key: str | None) -> tuple[dict[str, Any] | None, str]:
    url = client_url(host, port) + "/api/v1/health"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(request, timeout=HEALTH_TIMEOUT) as response:
            body = response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return None, f"GET /api/v1/health: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"GET /api/v1/health: {reason}"
    try:
        data = json.loads(body)
    except ValueError:
        return None, "GET /api/v1/health: not JSON"
    if isinstance(data, dict) and data.get("status") == "ok" and "version" in data:
        return {"version": data.get("version"), "config_dir": data.get("config_dir")}, "a Siesta answers"
    return None, "GET /api/v1/health: not Siesta's answer"


def _listener(port: int) -> tuple[int | None, str | None]:
    try:
        import psutil

        connections = psutil.net_connections(kind="tcp")
    except Exception:  # noqa: BLE001 - AccessDenied on macOS, or anything psutil meets
        return None, None
    for conn in connections:
        if conn.status == "LISTEN" and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                proc = psutil.Process(conn.pid)
                name = proc.name()
                command = " ".join(redact_args(proc.cmdline()[1:4]))
            except Exception:  # noqa: BLE001 - gone, or not ours to read
                return conn.pid, None
            return conn.pid, f"{name} {command}" if command else name
    return None, None


def port_item(host: str, port: int, source: str, api_key: str | None, *, own_pid: int | None = None) -> Item:
    """Whether Siesta could listen on ``host:port`` now, and who holds it if not."""
    own_pid = os.getpid() if own_pid is None else own_pid
    where = f"{host}:{port}"
    value: dict[str, Any] = {"host": host, "port": port}
    problem = bind_problem(host, port)
    source = f"{source}; tried with bind()"
    if problem is None:
        return found("port", "port", {**value, "state": "free"}, source,
                     text=f"{where}: free (no Siesta runs there now)")
    if problem.errno == errno.EACCES:
        return missing("port", "port", f"{where}: not allowed to listen there ({problem.strerror}; ports below "
                       "1024 need privileges)", source)
    if problem.errno != errno.EADDRINUSE:
        return missing("port", "port", f"{where}: cannot listen there: {problem.strerror or problem}", source)
    holder = port_holder(host, port, api_key)
    value.update(pid=holder.pid, process=holder.process, siesta=holder.siesta)
    process = f"{holder.process}, pid {holder.pid}" if holder.process else f"pid {holder.pid}" if holder.pid else ""
    source += f", GET /api/v1/health{', psutil.net_connections' if holder.pid else ''}"
    if holder.siesta is not None:
        mine = holder.pid == own_pid
        who = "this Siesta" if mine else f"a running Siesta {holder.siesta.get('version')}"
        text = f"{where}: in use by {who}" + (f" ({process})" if process and not mine else "")
        if holder.siesta.get("config_dir"):
            text += f", config dir {holder.siesta['config_dir']}"
        return found("port", "port", {**value, "state": "this siesta" if mine else "siesta"}, source, text=text)
    who = f"another program ({process})" if process else \
        "another program (its process is not visible here: another user's?)"
    return found("port", "port", {**value, "state": "other", "health": holder.health}, source,
                 text=f"{where}: held by {who}; Siesta cannot listen there ({holder.health})")


# ---- remotes -------------------------------------------------------------------------------------

def remote_items(settings_file: Path, environ: Mapping[str, str] | None = None,
                 timeout: float = REMOTE_TIMEOUT) -> Iterable[Item]:
    environ = os.environ if environ is None else environ
    try:
        data = read_settings_file(settings_file)
    except SettingsError as exc:
        yield missing("remotes", "remotes", f"settings.toml does not parse: {exc}", str(settings_file))
        return
    remotes, errors = parse_remotes(data, settings_file, environ)
    if not remotes and not errors:
        yield found("remotes", "remotes", [], f"{settings_file} [remotes]", text="none")
        return
    answers = asyncio.run(_probe_all(list(remotes.values()), timeout)) if remotes else {}
    for name, config in remotes.items():
        ok, detail = answers[name]
        key_source = None
        if config.api_key:
            key_source = f"${api_key_env(name)}" if environ.get(api_key_env(name)) else "settings.toml"
        value = {**config.describe(), "key_source": key_source, "answers": ok, "detail": detail}
        key = f"key set, from {key_source}" if key_source else "no key"
        yield found(name, name, value, f"{settings_file} [remotes.{name}]; {detail.split(':')[0]}",
                    text=f"{config.kind} at {config.url} ({key}): {'answers' if ok else 'does not answer'} "
                         f"({detail})")
    for error in errors:
        remote = error.split("[remotes.", 1)[-1].split("]", 1)[0] if "[remotes." in error else "remotes"
        yield missing(f"invalid:{remote}", remote, f"left out: {error.split(': ', 1)[-1]}", str(settings_file))


async def _probe_all(remotes: list[RemoteConfig], timeout: float) -> dict[str, tuple[bool, str]]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(_probe(config, http, timeout) for config in remotes))
    return {config.name: result for config, result in zip(remotes, results, strict=True)}


async def _probe(config: RemoteConfig, http: Any, timeout: float) -> tuple[bool, str]:
    from app.core.remotes.engine_api import RemoteRefused, RemoteUnreachable
    from app.core.remotes.kinds import engine_for

    engine = engine_for(config, http)
    what = f"GET {engine.probe_path}"
    try:
        await engine.call("GET", engine.probe_path, what=what, timeout=timeout)
    except RemoteUnreachable as exc:
        return False, f"{what}: {exc.reason}"
    except RemoteRefused as exc:
        return True, f"{what}: answered HTTP {exc.status}: {str(exc).split(f'HTTP {exc.status}: ', 1)[-1]}"
    except Exception as exc:  # noqa: BLE001 - whatever else the connection meets is its answer
        return False, f"{what}: {type(exc).__name__}: {exc}"
    return True, f"{what}: OK"
