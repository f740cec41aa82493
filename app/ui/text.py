"""Every sentence the GUI shows about a model, as pure functions of the core's snapshots.

The tray menu, its tooltip, the models window and the settings dialog all word a model's
state the same way because they all call these. No Qt here: the tests check the exact
text without a display. ``now`` is wall-clock seconds (the manager's clock), the same
clock as a snapshot's ``unload_at`` and ``loading_since``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from app.core.config import sizes
from app.core.config.durations import USE_GLOBAL, format_countdown
from app.ui.timeout_scale import short_label

Snapshot = dict[str, Any]

# Overall states of the tray icon, in rising order of urgency.
ICON_EMPTY = "empty"      # nothing loaded
ICON_LOADED = "loaded"    # models loaded, all idle
ICON_BUSY = "busy"        # a model serving requests, loading or unloading
ICON_ERROR = "error"      # a model crashed or failed to load

OCCUPYING = ("loading", "ready", "unloading")


def format_bytes(value: int | float | None) -> str:
    """Memory for people, in binary units like ``ps``: ``"1.2 GB"``, ``"230 MB"``, ``"9.5 MB"``
    (the core's one formatter, shared with the CLI)."""
    return sizes.format_bytes(value)


def is_shown_in_menu(snapshot: Snapshot) -> bool:
    """Whether a model belongs in the tray's list of loaded models: it holds a server, or
    its server crashed or failed to load (so the error and its log are one click away).
    A recipe that cannot be read is not "loaded"; the Load model submenu lists it."""
    state = snapshot["state"]
    if state in OCCUPYING:
        return True
    return state == "failed" and has_usable_recipe(snapshot)


def has_usable_recipe(snapshot: Snapshot) -> bool:
    return snapshot.get("backend") is not None


def shell_exit_code(code: int | None) -> int | None:
    """An exit status as a shell reports it: a process killed by signal N (a negative
    return code in Python) shows as 128 + N, so a segfault is 139 and SIGKILL 137."""
    if code is None:
        return None
    return 128 - code if code < 0 else code


def failure_text(snapshot: Snapshot) -> str:
    """``"crashed: exit 139"``, ``"load failed: exit 1"``, ``"invalid recipe"`` ..."""
    error = snapshot.get("error") or ""
    code = shell_exit_code(snapshot.get("exit_code"))
    if not has_usable_recipe(snapshot):
        return "invalid recipe"
    if error.startswith("crashed"):
        text = f"crashed: exit {code}" if code is not None else "crashed"
    elif error.startswith("load failed"):
        text = f"load failed: exit {code}" if code is not None else "load failed"
    else:
        text = "failed"
    if snapshot.get("crash_loop"):
        text += " (crash loop)"
    return text


def status_text(snapshot: Snapshot, now: float | None = None) -> str:
    """A model's live state in a few words, as the menu and the tables show it:
    ``"idle, unloads in 4:12"``, ``"busy (2 requests)"``, ``"loading... ~40%"`` (of its last
    load time; ``"loading... 12 s"`` on a first load),
    ``"kept loaded"``, ``"crashed: exit 139"``, ``"unloading..."``, ``"not loaded"``."""
    now = time.time() if now is None else now
    state = snapshot["state"]
    if state == "failed":
        return failure_text(snapshot)
    if state == "loading":
        return "loading... " + load_progress(snapshot, now)
    if state == "unloading":
        return "unloading..."
    if state == "unloaded":
        return unloaded_note(snapshot, now) or "not loaded"
    busy = snapshot.get("in_flight", 0)
    if busy:
        return f"busy ({busy} request{'s' if busy != 1 else ''})"
    if snapshot.get("waiting", 0):
        return "busy"
    if is_routed_only(snapshot):
        return "available"
    unload_at = snapshot.get("unload_at")
    if unload_at is not None:
        return f"idle, unloads in {format_countdown(unload_at - now)}"
    if snapshot.get("unload_timeout", 0) is None:
        return "kept loaded"
    return "idle"


def load_progress(snapshot: Snapshot, now: float) -> str:
    """How far a load has come: ``"~40%"`` of the model's last load time, or the seconds since
    it began (``"12 s"``) on a first load, or once it takes longer than the last one did."""
    since = snapshot.get("loading_since")
    elapsed = max(0.0, now - since) if isinstance(since, (int, float)) else 0.0
    last = snapshot.get("last_load_seconds")
    if isinstance(last, (int, float)) and last >= 1.0 and elapsed < last:
        return f"~{int(100 * elapsed / last)}%"
    return f"{int(elapsed)} s"


def unloaded_note(snapshot: Snapshot, now: float | None = None) -> str:
    """Why a model that is not loaded went, when that matters to the user (until it loads
    again): ``"unloaded 2 min ago to give memory back"``; ``""`` otherwise."""
    if snapshot.get("state") != "unloaded" or snapshot.get("last_unload_reason") != "memory_pressure":
        return ""
    at = snapshot.get("unloaded_at")
    if not isinstance(at, (int, float)):
        return "unloaded to give memory back"
    return f"unloaded {ago_text((time.time() if now is None else now) - at)} to give memory back"


def ago_text(seconds: float) -> str:
    """``"just now"``, ``"2 min ago"``, ``"3 h ago"``, ``"2 days ago"``."""
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // (24 * 60)} days ago"


def memory_text(snapshot: Snapshot) -> str:
    """A loaded model's memory in a few words: ``"1.2 GB"``, or with its GPU memory
    ``"410 MB + 6.1 GB VRAM"``; ``""`` while unknown."""
    ram = format_bytes(snapshot.get("memory"))
    vram = snapshot.get("vram")
    if vram:  # (a model wholly on the GPU holds no RAM worth naming: Ollama reports 0)
        return f"{ram} + {format_bytes(vram)} VRAM" if snapshot.get("memory") else f"{format_bytes(vram)} VRAM"
    return ram


def estimate_text(snapshot: Snapshot) -> str:
    """What a model is expected to need when loaded: ``"needs ~6.2 GB"`` (``"measured"``
    figures without the tilde), ``""`` when unknown."""
    estimate = snapshot.get("memory_estimate")
    if not estimate:
        return ""
    approx = "" if snapshot.get("memory_estimate_source") == "measured" else "~"
    return f"needs {approx}{format_bytes(estimate)}"


def menu_label(snapshot: Snapshot, now: float | None = None, *, short: bool = False) -> str:
    """One model's line in the tray menu: ``"tiny (1.2 GB): idle, unloads in 4:12"``, with
    its VRAM when it has some (``"qwen (0.4 GB + 6.1 GB VRAM): busy"``); the memory is left
    out while it is unknown (``"qwen: loading... 12 s"``). ``short``: a remote model by the
    remote's own name for it (``"qwen"``, not ``"gpubox/qwen"``), under its remote's heading."""
    memory = memory_text(snapshot)
    shown = snapshot.get("remote_model") if short and snapshot.get("remote") else None
    name = (shown or snapshot["name"]) + (f" ({memory})" if memory else "")
    return f"{name}: {status_text(snapshot, now)}"


def device_line(device: dict[str, Any]) -> str:
    """One GPU in the tray menu: ``"GPU 0: 14.2 GB of 24.0 GB used, 9.6 GB by Siesta"``, or where
    its figures cannot be read ``"GPU 1 (Intel Arc Graphics): size not known"``; the part "by
    Siesta" only while Siesta's models hold memory there."""
    label = "GPU " + str(device.get("id", "gpu?")).removeprefix("gpu")
    total, used, models = device.get("total"), device.get("used"), device.get("models")
    if total is None or used is None:
        text = f"{label} ({device.get('name') or device.get('kind')}): size not known"
    else:
        text = f"{label}: {format_bytes(used)} of {format_bytes(total)} used"
    if models:
        text += f", {format_bytes(models)} by Siesta"
    return text


def ram_line(ram: dict[str, Any]) -> str:
    """The machine's RAM in the tray menu: ``"RAM: 12.1 GB of 31.3 GB used, 717 MB by Siesta"``;
    ``""`` when it cannot be read."""
    total, available, models = ram.get("total"), ram.get("available"), ram.get("models")
    if not total or available is None:
        return ""
    text = f"RAM: {format_bytes(total - available)} of {format_bytes(total)} used"
    if models:
        text += f", {format_bytes(models)} by Siesta"
    return text


def countdown_text(snapshot: Snapshot, now: float | None = None) -> str:
    """Just the time left before an idle unload (``"4:12"``), or ``""`` when none is running."""
    unload_at = snapshot.get("unload_at")
    if unload_at is None:
        return ""
    now = time.time() if now is None else now
    return format_countdown(unload_at - now)


def clock_time(when: float) -> str:
    """A wall-clock time of day for the tooltip: ``"14:32"``."""
    return time.strftime("%H:%M", time.localtime(math.ceil(when)))


def tooltip_text(snapshots: Iterable[Snapshot]) -> str:
    """The tray tooltip: ``"Siesta: 2 models loaded, 5.1 GB; tiny unloads at 14:32"``.

    Written from events only, so it gives the next unload as a time of day rather than a
    countdown that would go stale between events.
    """
    models = list(snapshots)
    loaded = [m for m in models if m["state"] in ("ready", "unloading") and not is_routed_only(m)]
    loading = [m for m in models if m["state"] == "loading"]
    failed = [m for m in models if m["state"] == "failed" and has_usable_recipe(m)]
    if loaded:
        count = f"{len(loaded)} model{'s' if len(loaded) != 1 else ''} loaded"
        known = [m["memory"] for m in loaded if m.get("memory")]
        head = f"{count}, {format_bytes(sum(known))}" if known else count
    else:
        head = "no models loaded"
    parts = [head]
    pending = [m for m in loaded if m.get("unload_at") is not None]
    if pending:
        first = min(pending, key=lambda m: m["unload_at"])
        parts.append(f"{first['name']} unloads at {clock_time(first['unload_at'])}")
    busy = [m["name"] for m in loaded if m.get("in_flight")]
    if busy:
        parts.append(", ".join(busy) + " busy")
    if loading:
        parts.append(", ".join(m["name"] for m in loading) + " loading")
    for m in failed:
        parts.append(f"{m['name']} {failure_text(m)}")
    return "Siesta: " + "; ".join(parts)


def overall_state(snapshots: Iterable[Snapshot]) -> str:
    """Which tray icon to show: error > busy (serving, loading, unloading) > loaded > empty."""
    models = list(snapshots)
    if any(m["state"] == "failed" and has_usable_recipe(m) for m in models):
        return ICON_ERROR
    if any(_is_busy(m) for m in models):
        return ICON_BUSY
    if any(m["state"] == "ready" and not is_routed_only(m) for m in models):
        return ICON_LOADED
    return ICON_EMPTY


def _is_busy(m: Snapshot) -> bool:
    if m["state"] in ("loading", "unloading"):
        return True
    return m["state"] == "ready" and bool(m.get("in_flight") or m.get("waiting"))


def timeout_choice(snapshot: Snapshot) -> tuple[bool, Any]:
    """What the model's recipe says about its timeout: ``(True, None)`` when it has no
    ``unload_timeout`` (the global one applies), else ``(False, seconds or None)``."""
    if "recipe_unload_timeout" in snapshot:
        return False, snapshot["recipe_unload_timeout"]
    return True, None


NEVER = "never"
"""The menus' key for "keep loaded" (``None`` cannot key a menu item's data)."""


def timeout_key(snapshot: Snapshot) -> Any:
    """The timeout choice a model's recipe makes, as the menus key it: :data:`USE_GLOBAL`
    (no ``unload_timeout``: the global one applies), :data:`NEVER`, or seconds."""
    use_global, value = timeout_choice(snapshot)
    if use_global:
        return USE_GLOBAL
    return NEVER if value is None else value


def notification_for(event: dict[str, Any], *, notify_idle: bool, notify_crash: bool,
                     notify_pressure: bool = False) -> tuple[str, str] | None:
    """The desktop notification (title, message) an event deserves, if any."""
    reason = event["reason"]
    model = event["model"]
    if reason == "memory_given_back" and notify_pressure:
        # one per pressure episode: it names every model the episode unloaded so far (a later
        # round's notification replaces the earlier one on the desktop)
        gone = [f"{u['name']} ({format_bytes(u['bytes'])})" for u in (event.get("detail") or {}).get("unloaded", [])]
        if not gone:
            return None
        names = gone[0] if len(gone) == 1 else ", ".join(gone[:-1]) + " and " + gone[-1]
        return "Memory given back", f"Unloaded {names} for other programs."
    if reason == "memory_pressure_kept" and notify_pressure:
        why = "is busy" if model.get("in_flight") or model.get("waiting") else "is kept loaded"
        return "Could not free memory", f"Another program needs memory, but {model['name']} {why}."
    if reason == "idle" and model["state"] == "unloaded" and notify_idle:
        return "Model unloaded", f"{model['name']} was idle and has been unloaded."
    if reason == "crashed" and notify_crash:
        extra = " It crashed repeatedly; load it by hand to try again." if model.get("crash_loop") else ""
        return f"{model['name']} crashed", f"{failure_text(model)}. See its log for details.{extra}"
    return None


def short_state(snapshot: Snapshot, now: float | None = None) -> str:
    """A model's state without its countdown, for tables that show the countdown apart:
    ``"idle"``, ``"busy (2 requests)"``, ``"loading... 12 s"``, ``"not loaded"``, ``"crashed: exit 139"``."""
    if snapshot["state"] == "ready" and not snapshot.get("in_flight") and not snapshot.get("waiting"):
        return "idle"
    return status_text(snapshot, now)


# ---- other machines and engines: one group of models each ---------------------------------------

HERE = "This computer"
"""The heading of this machine's own models, above the remotes' groups."""

KIND_NAMES = {"siesta": "Siesta", "ollama": "Ollama", "llama.cpp-router": "llama.cpp router",
              "lemonade": "Lemonade", "openai": "OpenAI-compatible server"}

# The port each engine listens on unless told otherwise: left out where it is the one used.
_USUAL_PORTS = {"siesta": 8777, "ollama": 11434, "llama.cpp-router": 8080, "lemonade": 13305}

PROBLEM_CHARS = 110
"""The longest problem line a menu shows (its tooltip has the whole reason)."""


def is_routed_only(snapshot: Snapshot) -> bool:
    """A remote model Siesta only routes to: it cannot load, unload or time it out (``openai``)."""
    return snapshot.get("can_load") is False


def remote_address(url: str | None, kind: str | None = None) -> str:
    """Where a remote is, in a few characters: ``"192.168.1.20"`` for a Siesta at
    ``http://192.168.1.20:8777`` (its usual port left out), ``"127.0.0.1:9000"``,
    ``"api.example.com"`` for ``https://api.example.com/v1``."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or url
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    usual = {"http": 80, "https": 443}.get(parts.scheme)
    where = host if port is None or port in (usual, _USUAL_PORTS.get(kind or "")) else f"{host}:{port}"
    path = parts.path.rstrip("/").removesuffix("/v1")
    return where + path


def group_memory(snapshots: Iterable[Snapshot]) -> str:
    """What a group's models hold together, worded as one model's memory is (``"1.2 GB"``,
    ``"410 MB + 6.1 GB VRAM"``); ``""`` while none holds any that is known."""
    ram = vram = 0
    for s in snapshots:
        ram += s.get("memory") or 0
        vram += s.get("vram") or 0
    return memory_text({"memory": ram or None, "vram": vram or None})


def remote_problem(remote: Mapping[str, Any]) -> str | None:
    """Why a remote cannot be used now, in one sentence that says it is being tried again:
    ``"gpubox — cannot reach http://192.168.1.20:8777: connection refused; trying again"``;
    None while it answers (or is being reached for the first time)."""
    name, url, status = remote.get("name", "?"), remote.get("url") or "", remote.get("status")
    error = str(remote.get("error") or "").strip()
    if status == "unreachable":
        reason = error.split(" is unreachable: ", 1)[-1] if error else "no answer"
        return f"{name} — cannot reach {url}: {reason}; trying again"
    if status == "error":
        detail = error.removeprefix(f"remote {name!r}: ") or "an error"
        return f"{name} — {url} answered: {detail}; trying again"
    return None


def group_title(remote: Mapping[str, Any] | None, snapshots: Iterable[Snapshot], *, here: str = HERE) -> str:
    """The heading of a group of models: ``"This computer · 9.6 GB VRAM"`` (``remote`` None;
    ``here`` names the machine), ``"gpubox — Siesta at 192.168.1.20 · 6.1 GB"``, with the
    memory its models hold together; for a remote that cannot be used, why
    (:func:`remote_problem`), shortened to :data:`PROBLEM_CHARS`."""
    memory = group_memory(snapshots)
    tail = f" · {memory}" if memory else ""
    if remote is None:
        return here + tail
    problem = remote_problem(remote)
    if problem is not None:
        return problem if len(problem) <= PROBLEM_CHARS else problem[:PROBLEM_CHARS - 1].rstrip() + "…"
    kind = str(remote.get("kind") or "")
    what = KIND_NAMES.get(kind, kind or "remote")
    where = remote_address(remote.get("url"), kind)
    head = f"{remote.get('name', '?')} — {what}" + (f" at {where}" if where else "")
    if remote.get("status") == "connecting":
        return head + ": connecting..."
    return head + tail


def model_groups(snapshots: Iterable[Snapshot],
                 remotes: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any] | None, list[Snapshot]]]:
    """The models by machine or engine, in the order the menu and the window show them:
    this computer's (``None``) first, then each remote's in name order, each with its
    models in the order given. A remote with no model listed (one that cannot be reached
    lists none) still has its group. Without remotes: one group, this computer's."""
    models = list(snapshots)
    described: dict[str, Mapping[str, Any]] = {str(r.get("name")): r for r in remotes}
    for s in models:  # a model listed a moment before its remote is described
        if s.get("remote") and s["remote"] not in described:
            described[s["remote"]] = {"name": s["remote"], "kind": s.get("remote_kind"), "url": None,
                                      "status": s.get("remote_status") or "ok"}
    groups: list[tuple[Mapping[str, Any] | None, list[Snapshot]]] = [
        (None, [s for s in models if not s.get("remote")])]
    for name in sorted(described):
        groups.append((described[name], [s for s in models if s.get("remote") == name]))
    return groups


def menu_models(snapshots: Iterable[Snapshot], limit: int) -> tuple[list[Snapshot], int]:
    """The models of one group the tray menu lists (:func:`is_shown_in_menu`) and how many
    more it leaves out: every model that holds a server, and of those Siesta only routes to
    (which an OpenAI server may have by the hundred) the busy ones, and the rest while the
    group stays within ``limit`` lines."""
    shown = [s for s in snapshots if is_shown_in_menu(s)]
    routed = [s for s in shown if is_routed_only(s)]
    if len(shown) <= limit or not routed:
        return shown, 0
    room = max(0, limit - (len(shown) - len(routed)))
    idle = [s for s in routed if not (s.get("in_flight") or s.get("waiting"))]
    left_out = {s["name"] for s in idle[room:]} if len(routed) > room else set()
    return [s for s in shown if s["name"] not in left_out], len(left_out)


def use_global_label(snapshot: Snapshot, global_timeout: Any) -> str:
    """The "Use global" choice of a model's timeout, with the global timeout it means: this
    Siesta's, or for another Siesta's model that Siesta's (known while the model uses it)."""
    if snapshot.get("remote_kind") != "siesta":
        return f"Use global ({short_label(global_timeout)})"
    if snapshot.get("timeout_source") == "global":
        return f"Use global ({short_label(snapshot.get('unload_timeout'))})"
    return f"Use {snapshot.get('remote')}'s global"


def timeout_tip(snapshot: Snapshot) -> str:
    """Where a model's idle timeout is kept, for the control that sets it."""
    head = "How long the model may sit idle before it is unloaded"
    remote = snapshot.get("remote")
    if not remote:
        return f"{head} (saved in its recipe)"
    if snapshot.get("remote_kind") == "siesta":
        return f"{head} (saved in its recipe on {remote})"
    return f"{head} (saved in settings.toml, [remotes.{remote}.timeouts])"


ROUTED_ONLY_NOTE = "Siesta only routes requests to it: it cannot load, unload or time it out"


# ---- first run: finding models, importing configurations, the engine ----------------------------

SOURCE_SHORT = {
    "huggingface": "Hugging Face",
    "lmstudio": "LM Studio",
    "llama.cpp": "llama.cpp cache",
    "ollama": "Ollama",
    "folder": "Folder",
}

NO_RECIPES_MENU = "No models yet"
ENGINE_MISSING_MENU = "llama-server not found"


def home_relative(path: str, home: str | None) -> str:
    """``/home/ann/models/x`` as ``~/models/x`` when ``home`` is ``/home/ann``."""
    if home:
        home = home.rstrip("/")
        if path == home:
            return "~"
        if path.startswith(home + "/"):
            return "~" + path[len(home):]
    return path


def found_where(source: str, origin: str, home: str | None = None) -> str:
    """Where discovery found a model, for the "Where" column: ``"Hugging Face: Qwen/Qwen2.5-GGUF"``,
    ``"Ollama: llama3.2:latest"``, ``"Folder: ~/models"``."""
    label = SOURCE_SHORT.get(source, source)
    if not origin:
        return label
    if origin.startswith("/"):
        origin = home_relative(origin, home)
    return f"{label}: {origin}"


def found_summary(new: int, known: int, folders: int = 0) -> str:
    """The line above the list of found models."""
    places = "the usual places" + (f" and {folders} chosen folder{'s' if folders != 1 else ''}" if folders else "")
    if not new and not known:
        return (f"No GGUF models found in {places}. Use \"Add folder...\" to look in a folder of your own, "
                "or download a model with LM Studio, Ollama or llama.cpp first.")
    total = new + known
    head = f"Found {total} model{'s' if total != 1 else ''} in {places}"
    if known and not new:
        return head + ("; it already has a recipe." if total == 1 else "; every one already has a recipe.")
    if known:
        return head + f"; {known} already {'has a recipe' if known == 1 else 'have recipes'}. Tick the ones to add."
    return head + ". Tick the ones to add."


def recipes_created_text(names: list[str]) -> str:
    if not names:
        return "No recipe was created."
    count = len(names)
    return (f"Created {count} recipe{'s' if count != 1 else ''}: {', '.join(names)}. "
            "Load a model from the tray menu's \"Load model\", or just ask for it by name through the API.")


def split_import_notes(skipped: Iterable[str]) -> tuple[list[str], list[str]]:
    """An import's ``skipped`` lines as ``(models not imported, settings changed or dropped)``."""
    left_out, changed = [], []
    for line in skipped:
        (left_out if ": not imported: " in line else changed).append(line)
    return left_out, changed


def import_headline(kind: str, created: int, not_imported: int) -> str:
    source = {"llama-swap": "llama-swap", "lemonade": "Lemonade"}.get(kind, kind or "the configuration")
    made = f"{created} recipe{'s' if created != 1 else ''}" if created else "no recipe"
    text = f"Imported from {source}: {made} created"
    if not_imported:
        text += f", {not_imported} model{'s' if not_imported != 1 else ''} left out"
    return text + "."


def build_progress(line: str) -> tuple[int, str] | None:
    """A progress line of ``python -m app.core.engine.build`` (``"[ 42%] text"``) as
    ``(42, "text")``; None for any other line."""
    line = line.strip()
    if not line.startswith("["):
        return None
    head, sep, rest = line.partition("%]")
    if not sep:
        return None
    try:
        pct = int(head[1:].strip())
    except ValueError:
        return None
    return max(0, min(100, pct)), rest.strip()


def version_text(output: str) -> str:
    """What ``llama-server --version`` printed, in one line: ``"0.5.0-dev (build 1, commit 0c1e570)"``."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("version:"):
            return line.split(":", 1)[1].strip()
    return lines[0][:120] if lines else "(no version printed)"


def engine_needed(snapshots: Iterable[Snapshot]) -> bool:
    """Whether a missing llama-server matters now: with no recipes yet (the models a new
    user adds will need it) or with any recipe that runs a GGUF through llama-server (here:
    another Siesta's llama.cpp models run on that machine)."""
    models = [m for m in snapshots if not m.get("remote")]
    return not models or any(m.get("backend") == "llamacpp" for m in models)


def engine_problem(path: str | None, usable: bool, configured_by: str | None) -> str | None:
    """Why Siesta cannot run llama-server, in plain words, or None when it can."""
    if usable and path:
        return None
    if configured_by and path:
        return (f"llama-server not found: Siesta is set to use {path} (by {configured_by}), "
                "but that is not an executable file, so models cannot load.")
    return ("llama-server not found. Siesta runs GGUF models with llama.cpp's llama-server: "
            "install it (Siesta downloads llama.cpp's prebuilt one for your GPU), or put one on your PATH.")
