"""A local fake of the GitHub releases API of ggml-org/llama.cpp, for offline tests of
``siesta engine install``.

An aiohttp server on a free port, in a thread of its own (the code under test blocks). It
answers ``/releases`` (the list, newest first), ``/releases/latest`` (the highest ``bNNNN``)
and ``/releases/tags/{tag}`` with release JSON whose assets' ``browser_download_url`` points
back at ``/download/{tag}/{name}`` and whose ``digest`` is the sha256 of the served bytes
(or what the test says: a wrong one, or none). Every request path is recorded;
``chunk_delay`` makes downloads slow (to cancel one).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.server_thread import ServerThread

_UNSET: Any = object()


@dataclass
class FakeRelease:
    tag: str
    files: dict[str, bytes]
    digests: dict[str, str | None] = field(default_factory=dict)  # overrides: a wrong digest, or None


@dataclass
class FakeReleases(ServerThread):
    releases: dict[str, FakeRelease] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""
    chunk_delay: float = 0.0  # > 0: downloads come in 64 KiB chunks this many seconds apart

    def add(self, tag: str, files: dict[str, bytes], digests: dict[str, str | None] | None = None) -> FakeRelease:
        release = FakeRelease(tag, files, dict(digests or {}))
        self.releases[tag] = release
        return release

    def digest(self, tag: str, name: str) -> str | None:
        release = self.releases[tag]
        if name in release.digests:
            return release.digests[name]
        return "sha256:" + hashlib.sha256(release.files[name]).hexdigest()

    def release_json(self, release: FakeRelease) -> dict[str, Any]:
        assets = []
        for index, (name, data) in enumerate(release.files.items()):
            asset: dict[str, Any] = {
                "id": index, "name": name, "size": len(data), "state": "uploaded",
                "content_type": "application/zip" if name.endswith(".zip") else "application/gzip",
                "browser_download_url": f"{self.url}/download/{release.tag}/{name}",
            }
            digest = self.digest(release.tag, name)
            if digest is not None:
                asset["digest"] = digest
            assets.append(asset)
        return {"tag_name": release.tag, "name": release.tag, "draft": False, "prerelease": False, "assets": assets}

    def _newest_first(self) -> list[FakeRelease]:
        return sorted(self.releases.values(), key=lambda r: int(r.tag[1:]), reverse=True)

    # ------------------------------------------------------------------------ running

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/releases", self._list)
        app.router.add_get("/releases/latest", self._latest)
        app.router.add_get("/releases/tags/{tag}", self._tag)
        app.router.add_get("/download/{tag}/{name}", self._download)
        self.url = await self.serve(app)

    # ------------------------------------------------------------------------ handlers

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        return await handler(request)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([self.release_json(r) for r in self._newest_first()])

    async def _latest(self, request: web.Request) -> web.Response:
        newest = self._newest_first()
        if not newest:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(self.release_json(newest[0]))

    async def _tag(self, request: web.Request) -> web.Response:
        release = self.releases.get(request.match_info["tag"])
        if release is None:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(self.release_json(release))

    async def _download(self, request: web.Request) -> web.Response:
        release = self.releases.get(request.match_info["tag"])
        name = request.match_info["name"]
        if release is None or name not in release.files:
            return web.Response(status=404)
        data = release.files[name]
        if not self.chunk_delay:
            return web.Response(body=data, content_type="application/octet-stream")
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        for start in range(0, len(data), 1 << 16):
            await response.write(data[start:start + (1 << 16)])
            await asyncio.sleep(self.chunk_delay)
        await response.write_eof()
        return response
