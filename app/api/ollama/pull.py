"""``POST /api/pull``: a Hugging Face GGUF model, named as Ollama names one
(``hf.co/ORG/REPO[:QUANT]``), pulled by Siesta's own pull (:func:`app.core.hub.pull.pull`:
the same file choice as ``llama-server -hf``, the shared cache, resume, sha256 checks, a
recipe), with Ollama's progress.

The answer is Ollama's: a stream of JSON objects, one a line (``application/x-ndjson``),
unless ``stream`` is false, then the last one alone. ``{"status": "pulling manifest"}``
first (the Hub is asked for the repo's files); for each file, ``{"status": "pulling
<12 hex>", "digest": "sha256:<hex>", "total", "completed"}`` as its bytes arrive (a file in
the cache already counts as complete at once); ``{"status": "verifying sha256 digest"}``
(every file's sha256 was checked as it was stored), ``{"status": "writing manifest"}``
(the recipe, read at once so the model is listed) and ``{"status": "success"}``, which
also names the model as Siesta lists it (``"model"``). An error is ``{"error": "..."}``: the
stream's last line, or with ``stream`` false the answer, with its status (400 a name that
is not a Hub GGUF, 403 a gated repo, 404 no such repo or quant, 409 a recipe of that name
for another model, 502 the Hub unreachable or a download that failed, 507 no room).

A client that goes away cancels the download; what arrived stays for the next pull, which
resumes it. Other names are refused (400): Siesta pulls from the Hugging Face Hub only.
Who may pull: :func:`app.api.ollama.manage.pull_refusal`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from app.api.bodies import parse_object, read_body, request_name
from app.api.errors import ApiError
from app.api.jsonio import dumps, json_response
from app.api.ollama.common import ollama_error, ollama_name
from app.api.ollama.manage import MAX_BODY, hub_reference, pull_refusal, requested_model
from app.core.hub.choice import ModelRefError
from app.core.hub.client import (
    FileNotFound,
    GatedRepo,
    HubClient,
    HubError,
    HubFile,
    RepoNotFound,
)
from app.core.hub.download import NotEnoughDiskSpace
from app.core.hub.pull import PullResult, RecipeExists
from app.core.hub.pull import pull as hub_pull
from app.core.manager import ModelManager

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
_END = object()


def failure_status(exc: BaseException) -> int:
    """The HTTP status of a failed pull (see the module's docstring)."""
    if isinstance(exc, ModelRefError):
        return 400
    if isinstance(exc, GatedRepo):
        return 403
    if isinstance(exc, (RepoNotFound, FileNotFound)):
        return 404
    if isinstance(exc, RecipeExists):
        return 409
    if isinstance(exc, NotEnoughDiskSpace):
        return 507
    if isinstance(exc, HubError):
        return 502
    return 500


def failure_message(exc: BaseException) -> str:
    if isinstance(exc, HubError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"pull failed: {exc}"
    return f"pull failed: {type(exc).__name__}: {exc}"


def _line(payload: dict[str, Any]) -> bytes:
    return (dumps(payload) + "\n").encode()


def file_status(file: HubFile, done: int) -> dict[str, Any]:
    """Ollama's progress of one file: ``pulling`` and its digest's first 12 hex digits."""
    digest = f"sha256:{file.sha256}" if file.sha256 else f"sha1:{file.blob_id or ''}"
    short = digest.split(":", 1)[1][:12]
    return {"status": f"pulling {short}", "digest": digest, "total": file.size, "completed": min(done, file.size)}


class OllamaPull:
    """The handler of ``POST /api/pull``, over one manager."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    async def pull(self, request: web.Request) -> web.StreamResponse:
        what = request_name(request)
        refusal = pull_refusal(request.remote, self.manager.settings)
        if refusal is not None:
            return ollama_error(403, refusal)
        try:
            data = parse_object(await read_body(request, MAX_BODY), what)
            reference = hub_reference(requested_model(data))
        except ApiError as exc:
            return ollama_error(exc.status, exc.message)
        if data.get("stream", True) is False:
            last: dict[str, Any] = {}
            async with aclosing(self.updates(reference)) as updates:
                async for update in updates:
                    last = update
            if "error" in last:
                return ollama_error(int(last.pop("_status", 500)), last["error"])
            return json_response(last)
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async with aclosing(self.updates(reference)) as updates:
                async for update in updates:
                    update.pop("_status", None)
                    await response.write(_line(update))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away: updates() was closed, which cancels the download
        return response

    async def updates(self, reference: str) -> AsyncIterator[dict[str, Any]]:
        """Ollama's progress objects of one pull, the last one ``success`` or an ``error``
        (with ``_status``, its HTTP status). Closing it early cancels the download."""
        yield {"status": "pulling manifest"}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        recipes_dir = self.manager.paths.recipes_dir

        def put(item: Any) -> None:  # from the worker thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed (Siesta is stopping): nobody to tell
                cancel.set()

        def work() -> PullResult:
            try:
                return hub_pull(reference, recipes_dir=recipes_dir, client=HubClient(), cancel=cancel,
                                file_progress=lambda file, done: put((file, done)))
            finally:
                put(_END)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, even when abandoned
        try:
            ended = False
            while not ended:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                for index, item in enumerate(batch):
                    if item is _END:
                        ended = True
                        break
                    following = batch[index + 1] if index + 1 < len(batch) else None
                    if not (isinstance(following, tuple) and following[0] == item[0]):
                        yield file_status(*item)  # only the newest figure of a file in the batch
            try:
                result = await task
            except Exception as exc:  # each failure is answered as Ollama's error
                if not isinstance(exc, HubError):
                    log.exception("POST /api/pull %s failed", reference)
                yield {"error": failure_message(exc), "_status": failure_status(exc)}
                return
        finally:
            cancel.set()  # a no-op once the pull has ended; else the client went away
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        self.manager.reload_recipes()
        log.info("POST /api/pull %s: %s (%s)", reference, result.name,
                 "new recipe" if result.created else "recipe already there")
        yield {"status": "success", "model": ollama_name(result.name)}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/pull", self.pull)]
