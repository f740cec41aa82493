"""The words and the memory check of "Download model..." (no Qt): whether a quant fits this
computer's memory (:func:`fit_on_machine`), counts, durations and progress as short text,
and what went wrong in plain words, with what to do (:func:`error_html`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.config.sizes import format_bytes
from app.core.hub.choice import QuantOption, split_info
from app.core.hub.client import GatedRepo, HubClient, HubError, HubUnreachable, repo_url
from app.core.hub.download import DownloadCancelled, DownloadFailed, IntegrityError, NotEnoughDiskSpace
from app.core.hub.pull import RecipeExists, default_model_name
from app.core.memory.fit import device_label

MiB = 1 << 20
NEED_SHARE = 0.10  # room for the context (KV cache) and compute buffers, beside the weights
NEED_EXTRA = 512 * MiB
FITS, MAY_NOT_FIT = "fits", "may not fit"


@dataclass(frozen=True)
class Fit:
    """Whether a quant fits this computer's memory: ``fits`` (None while the figures are
    being read) and a short reason."""

    fits: bool | None
    reason: str

    @property
    def mark(self) -> str:
        return "" if self.fits is None else FITS if self.fits else MAY_NOT_FIT


def memory_needed(size: int) -> int:
    """About what a model of ``size`` bytes of weights takes when loaded at a modest context."""
    return int(size * (1 + NEED_SHARE)) + NEED_EXTRA


def fit_on_machine(size: int, system: Mapping[str, Any] | None, budget: Any = None, floor: Any = None) -> Fit:
    """Compares a quant of ``size`` bytes with the machine's memory (``system`` as
    ``GET /api/v1/system`` gives it) within Siesta's ``budget`` and ``floor`` (MemoryLimits,
    or None): fits on one GPU, in RAM, or across GPUs and RAM (slower); else may not fit,
    now (memory in use) or ever (more than the computer has)."""
    if system is None:
        return Fit(None, "reading this computer's memory...")
    memory = system.get("memory", {})
    ram = memory.get("ram", {})
    need = memory_needed(size)
    about = f"needs about {format_bytes(need)}"
    devices = [("ram", ram.get("total"), ram.get("available"), ram.get("models"))]
    devices += [(str(d.get("id", "gpu?")), d.get("total"), d.get("free"), d.get("models"))
                for d in memory.get("devices", [])]
    rooms: dict[str, int] = {}
    capacity = 0
    for device, total, free, models in devices:
        cap = budget.for_device(device, total) if budget is not None else None
        keep = (floor.for_device(device, total) if floor is not None else None) or 0
        limits = [] if free is None else [free - keep]
        if cap is not None:
            limits.append(cap - (models or 0))
        if limits:
            rooms[device] = max(min(limits), 0)
        most = min(x for x in (total, cap) if x is not None) if total is not None or cap is not None else 0
        capacity += most
    gpus = [d for d in rooms if d != "ram"]
    for gpu in sorted(gpus, key=lambda d: -rooms[d]):
        if rooms[gpu] >= need:
            return Fit(True, f"{about}; {device_label(gpu)} has {format_bytes(rooms[gpu])} free")
    free_total = sum(rooms.values())
    if not gpus and rooms.get("ram", 0) >= need:
        return Fit(True, f"{about}; RAM has {format_bytes(rooms['ram'])} free")
    if gpus and free_total >= need:
        return Fit(True, f"{about}; fits in GPU and RAM together ({format_bytes(free_total)} free), "
                         "partly on the CPU: slower")
    if capacity and need > capacity:
        return Fit(False, f"{about}, more than the {format_bytes(capacity)} this computer has for models")
    return Fit(False, f"{about}, {format_bytes(free_total)} free now: close other programs or unload models")


def count_text(n: int) -> str:
    """``950``, ``12.5k``, ``3.4M``."""
    for limit, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= limit:
            return f"{n / limit:.1f}".removesuffix(".0") + unit
    return str(n)


def duration_text(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    seconds = int(max(seconds, 0) + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(done: int, total: int, speed: float | None) -> str:
    """``812 MB of 2.3 GB · 41.2 MB/s · 0:37 left``."""
    line = f"{format_bytes(done)} of {format_bytes(total)}"
    if speed:
        line += f" · {format_bytes(speed)}/s"
        if done < total:
            line += f" · {duration_text((total - done) / speed)} left"
    return line


def error_html(exc: BaseException, repo: str, name: str, client: HubClient | None) -> str:
    """What went wrong, and what to do, as rich text for the dialog."""
    e = html.escape
    if isinstance(exc, GatedRepo):
        endpoint = client.endpoint if client is not None else ""
        page = repo_url(endpoint, repo)
        link = f'<a href="{e(page)}">{e(page)}</a>'
        if client is not None and client.token:
            return (f"<b>{e(repo)} is a gated model</b>, and your Hugging Face token has no access to it yet. "
                    f"Accept its terms on {link} (logged in as the token's owner), then press Download again.")
        return (f"<b>{e(repo)} is a gated model.</b> Accept its terms on {link}, then log in with "
                "<code>hf auth login</code> (or start Siesta with HF_TOKEN set), and press Download again.")
    if isinstance(exc, NotEnoughDiskSpace):
        return (f"<b>Not enough free disk space.</b> The download needs {format_bytes(exc.needed)}, and "
                f"{format_bytes(exc.free)} is free in {e(str(exc.path))}. Free up "
                f"{format_bytes(exc.needed - exc.free)} or more, or start Siesta with HF_HUB_CACHE set to a "
                "disk with room. Nothing was downloaded.")
    if isinstance(exc, HubUnreachable):
        return (f"<b>Cannot reach the Hugging Face Hub.</b> Check the network connection (or HF_ENDPOINT) and "
                f"try again. ({e(str(exc))})")
    if isinstance(exc, RecipeExists):
        return (f"<b>A model named {e(name)} exists already</b>, for another model; Siesta never overwrites "
                "a recipe. Choose another name and press Download again.")
    if isinstance(exc, DownloadCancelled):
        return "Download cancelled. What has arrived is kept: press Download to carry on from there."
    if isinstance(exc, IntegrityError):
        return ("<b>The download was damaged</b> (its checksum is not the one the Hub gives) and was removed. "
                "Press Download to fetch it anew.")
    if isinstance(exc, DownloadFailed):
        cause = exc.__cause__
        why = f" ({e(str(cause) or type(cause).__name__)})" if cause is not None else ""
        return (f"<b>The download stopped</b>: the connection kept failing{why}. What has arrived is kept: "
                "press Download to carry on from there.")
    if isinstance(exc, HubError):
        return f"<b>Could not download:</b> {e(str(exc))}"
    return f"<b>Could not download:</b> {e(type(exc).__name__)}: {e(str(exc))}"


def option_name(repo: str, option: QuantOption) -> str:
    """The name ``siesta pull`` gives the quant's recipe."""
    first = option.files[0].name
    return default_model_name(repo, split_info(first)[1] or None, first)
