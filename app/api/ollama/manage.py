"""Ollama's routes that change which models there are: who may use them, the Hugging Face
names ``POST /api/pull`` takes (:func:`hub_reference`), ``DELETE /api/delete``, and the
routes Siesta does not serve (``create``, ``copy``, ``push``, blobs).

**Who may.** Pulling and deleting are powers over this machine (its disk, its recipes), not
just uses of a model, so they are served to a client on this machine (a loopback peer
address) or, when an API key is set, to one that sent it (the guard has checked it by then:
:func:`may_change_models`); anyone else gets 403. ``POST /api/pull`` also needs
``allow_pull_over_http`` (true by default; ``siesta pull`` and the tray's "Download model..."
do not). The guard's other checks (Host, Origin) come first as on every route.

**Delete** ``{"model": NAME}`` (or Ollama's older ``"name"``) unloads a local model, then
moves its recipe aside into ``recipes/.deleted/`` (never a model file: the GGUF may be
shared with other tools through the Hugging Face cache), where it can be moved back. A
Hugging Face name that ``POST /api/pull`` took (``hf.co/ORG/REPO:QUANT``) finds the recipe
the pull wrote. A remote's model is deleted on its machine (400); an unknown one is 404.

**Not served** (501, with what to do instead): ``POST /api/create``, ``/api/copy``,
``/api/push``, ``HEAD`` and ``POST /api/blobs/{digest}``: a Siesta model is a recipe file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from app.api.bodies import parse_object, read_body, request_name
from app.api.errors import ApiError
from app.api.ollama.common import model_not_found, ollama_error, resolve
from app.core.config.atomic_write import in_order
from app.core.hub.choice import ModelRefError, parse_model_ref
from app.core.hub.pull import default_model_name
from app.core.manager import ModelManager
from app.core.remotes import HOP_HEADER

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""The largest body of these routes: a model's name and a few flags."""

DELETED_DIR = ".deleted"
"""Where a deleted recipe goes, inside the recipes folder (Siesta reads no recipe there)."""

LATEST = ":latest"
EXAMPLE = "hf.co/bartowski/Qwen_Qwen3-4B-GGUF:Q4_K_M"
_HF_NAME = re.compile(r"^(?:https?://)?(?:www\.)?(?:hf\.co|huggingface\.co)/", re.IGNORECASE)


def is_loopback_client(remote: str | None) -> bool:
    """Whether a peer address (``request.remote``) is this machine: 127.0.0.0/8 or ::1 (an
    IPv4-mapped ``::ffff:127.x`` too, and a scoped ``::1%lo``); no name, no other address."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def may_change_models(remote: str | None, api_key: str | None) -> bool:
    """The rule for Ollama's routes that change models: a client on this machine, or any
    client once an API key is set (the guard has refused every request without it)."""
    return bool(api_key) or is_loopback_client(remote)


def pull_refusal(remote: str | None, settings: Any) -> str | None:
    """Why ``POST /api/pull`` is refused to a client at ``remote`` (None: it is not)."""
    if not settings.allow_pull_over_http:
        return ("pulling over HTTP is turned off (setting allow_pull_over_http); "
                "use `siesta pull hf.co/ORG/REPO:QUANT` on the machine that runs Siesta")
    return change_refusal("pull", remote, settings)


def change_refusal(what: str, remote: str | None, settings: Any) -> str | None:
    """Why a route that changes models (``what``: pull, delete) is refused (None: it is not)."""
    if may_change_models(remote, settings.api_key):
        return None
    return (f"{what} is served to clients on the machine that runs Siesta, or with its API key: "
            "set SIESTA_API_KEY there and send Authorization: Bearer <key>")


def is_hub_name(name: str) -> bool:
    """Whether an Ollama model name is a Hugging Face one (``hf.co/ORG/REPO[:QUANT]``)."""
    return bool(_HF_NAME.match(name.strip()))


def hub_reference(name: str) -> str:
    """The reference Siesta's pull reads for an Ollama name ``hf.co/ORG/REPO[:QUANT]``
    (``:latest``, which Ollama's clients may add, means no quant: the default choice);
    ApiError 400 for any other name, or one that names no model on the Hub."""
    text = name.strip()
    if not is_hub_name(text):
        raise ApiError(400, "not_pullable",
                       f"cannot pull {name[:200]!r}: only Hugging Face GGUF repos can be pulled, named "
                       f"hf.co/ORG/REPO:QUANT (for example {EXAMPLE})")
    if text.lower().endswith(LATEST):
        text = text[: -len(LATEST)]
    try:
        parse_model_ref(text)
    except ModelRefError as exc:
        raise ApiError(400, "not_pullable", f"{exc}; name it hf.co/ORG/REPO:QUANT") from None
    return text


def recipe_name_of(name: str) -> str | None:
    """The recipe a pull of ``hf.co/ORG/REPO:QUANT`` writes by default (``tiny-q4_k_m``); None
    when the name gives no quant (the Hub's files decide then) or names no Hub model."""
    try:
        ref = parse_model_ref(hub_reference(name))
    except (ApiError, ModelRefError):
        return None
    return default_model_name(ref.repo, ref.quant) if ref.quant else None


def requested_model(data: dict[str, Any]) -> str:
    """The body's ``model`` (or Ollama's older ``name``); ApiError 400 when there is none."""
    for field in ("model", "name"):
        value = data.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ApiError(400, "missing_model", 'model is required: {"model": "NAME"}')


def deleted_path(recipes_dir: Path, name: str) -> Path:
    """A free place for recipe ``name`` in ``recipes/.deleted/``: ``NAME.toml``, else
    ``NAME.2.toml``, ``NAME.3.toml``...: an earlier deletion is never overwritten."""
    folder = recipes_dir / DELETED_DIR
    candidate = folder / f"{name}.toml"
    number = 2
    while os.path.lexists(candidate):
        candidate = folder / f"{name}.{number}.toml"
        number += 1
    return candidate


def move_aside(recipes_dir: Path, name: str) -> Path:
    """Moves ``recipes/NAME.toml`` into ``recipes/.deleted/`` (see :func:`deleted_path`)."""
    source = recipes_dir / f"{name}.toml"
    (recipes_dir / DELETED_DIR).mkdir(exist_ok=True)
    target = deleted_path(recipes_dir, name)
    os.rename(source, target)  # same folder tree: atomic, and the target was free
    return target


class OllamaManage:
    """``DELETE /api/delete`` and the routes Siesta does not serve, over one manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def _local_name(self, requested: str, hop: bool, what: str) -> str | None:
        """The local model a delete names, or None. A Hugging Face name finds the recipe a
        pull of it wrote (:func:`recipe_name_of`)."""
        name = resolve(self.manager, requested, hop=hop, what=what)
        if self.manager.is_local(name):
            return name
        if is_hub_name(requested):
            guess = recipe_name_of(requested)
            if guess is not None and self.manager.is_local(guess):
                return guess
        return None

    async def delete(self, request: web.Request) -> web.Response:
        what = request_name(request)
        refusal = change_refusal("DELETE /api/delete", request.remote, self.manager.settings)
        if refusal is not None:
            return ollama_error(403, refusal)
        hop = HOP_HEADER in request.headers
        try:
            requested = requested_model(parse_object(await read_body(request, MAX_BODY), what))
            name = self._local_name(requested, hop, what)
        except ApiError as exc:
            return ollama_error(exc.status, exc.message)
        if name is None:
            if not hop and not is_hub_name(requested):
                canonical = resolve(self.manager, requested, hop=False, what=what)
                try:
                    found = self.manager.remotes.find(canonical)
                except Exception:  # an ambiguous or too long name: not found here either
                    found = None
                if found is not None:
                    return ollama_error(400, f"model '{requested[:200]}' is on the remote {found[0].name}: "
                                             "delete it on that machine")
            return model_not_found(requested)
        await self.manager.unload(name)  # first: its server stops before its recipe goes
        recipes_dir = self.manager.paths.recipes_dir
        try:
            moved = await in_order(move_aside, recipes_dir, name)
        except FileNotFoundError:
            self.manager.reload_recipes()
            return model_not_found(requested)  # removed meanwhile
        except OSError as exc:
            return ollama_error(500, f"cannot move the recipe of {name} aside: {exc}")
        log.info("DELETE /api/delete: recipe of %s moved to %s", name, moved)
        self.manager.reload_recipes()
        return web.Response(status=200)

    def _not_served(self, instead: str) -> Any:
        async def answer(request: web.Request) -> web.Response:
            return ollama_error(501, f"{request.method} {request.path} is not served by Siesta: {instead}")

        return answer

    def routes(self) -> list[web.RouteDef]:
        recipes = self.manager.paths.recipes_dir
        recipe = (f"a Siesta model is a recipe: write one in {recipes} (NAME.toml with backend = \"llamacpp\" "
                  "and model = \"/path/to/model.gguf\")")
        pull = "use POST /api/pull with hf.co/ORG/REPO:QUANT, or `siesta pull ORG/REPO:QUANT`"
        return [
            web.delete("/api/delete", self.delete),
            web.post("/api/create", self._not_served(f"{recipe}, or {pull}")),
            web.post("/api/copy", self._not_served(f"copy the recipe file in {recipes} to NEW_NAME.toml")),
            web.post("/api/push", self._not_served("Siesta does not publish models; upload a GGUF to the Hugging "
                                                   "Face Hub with `hf upload`")),
            web.head("/api/blobs/{digest}", self._not_served(f"Siesta takes no blobs: {pull}, or {recipe}")),
            web.post("/api/blobs/{digest}", self._not_served(f"Siesta takes no blobs: {pull}, or {recipe}")),
        ]

