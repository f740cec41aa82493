"""A local fake of the Hugging Face Hub for offline tests of ``siesta pull``.

Two aiohttp servers on free ports, in a thread of their own (the code under test blocks):

* the Hub: ``/api/models/{repo}`` (and ``/revision/{rev}``, ``?blobs=true``: files with size
  and ``lfs.sha256``), ``/api/models/{repo}/refs``, ``/api/models/{repo}/tree/{rev}``, the
  search ``/api/models?search=&filter=gguf``, and ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``
  with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges``,
  206 answers to ``Range``, ``X-Error-Code`` 404s, and gated repos (401 without a token, 403
  with one that has no access, ``X-Error-Code: GatedRepo``);
* the CDN: an LFS file's body, where the Hub redirects (``redirect=True``).

Every request is recorded (server, method, path, headers). Switches for faults, on whichever
server sends the body: ``drop_after`` bytes (the connection is cut ``drops`` times),
``ignore_range``, ``corrupt``, ``chunk_delay`` (slow), ``bad_content_range``.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.server_thread import ServerThread

COMMIT_LEN = 40


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = ""
    gated: bool = False
    tokens: tuple[str, ...] = ()  # tokens with access to a gated repo
    downloads: int = 0
    likes: int = 0
    tags: tuple[str, ...] = ("gguf",)
    lfs: tuple[str, ...] = ()  # names stored in LFS; default: every .gguf

    def is_lfs(self, name: str) -> bool:
        return name in self.lfs or name.endswith(".gguf")


@dataclass
class Request:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub(ServerThread):
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    redirect: bool = True
    drop_after: int | None = None
    drops: int = 0
    ignore_range: bool = False
    corrupt: bool = False
    bad_content_range: bool = False
    chunk_delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    cdn_url: str = ""

    def add(self, name: str, files: dict[str, bytes], **kwargs: Any) -> FakeRepo:
        repo = FakeRepo(files=files, **kwargs)
        if not repo.commit:
            repo.commit = hashlib.sha1((name + "".join(sorted(files))).encode()).hexdigest()
        self.repos[name] = repo
        return repo

    def body_requests(self, server: str | None = None) -> list[Request]:
        """The GETs that fetched file bytes (resolve on the Hub, or the CDN)."""
        return [r for r in self.requests if r.method == "GET" and (server is None or r.server == server)
                and (r.server == "cdn" or "/resolve/" in r.path)]

    # ------------------------------------------------------------------------ running

    async def _start(self) -> None:
        hub = web.Application()
        hub.router.add_get("/api/models", self._search)
        hub.router.add_get("/api/models/{org}/{name}/refs", self._refs)
        hub.router.add_get("/api/models/{org}/{name}/tree/{rev}", self._tree)
        hub.router.add_get("/api/models/{org}/{name}/revision/{rev}", self._info)
        hub.router.add_get("/api/models/{org}/{name}", self._info)
        hub.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        cdn = web.Application()
        cdn.router.add_route("*", "/blob/{org}/{name}/{path:.+}", self._cdn)
        self.url = await self.serve(hub)
        self.cdn_url = await self.serve(cdn)

    # ------------------------------------------------------------------------ helpers

    def _record(self, server: str, request: web.Request) -> None:
        self.requests.append(Request(server, request.method, request.path_qs, dict(request.headers)))

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status,
                                 headers={"X-Error-Code": code, "X-Error-Message": message})

    def _repo(self, request: web.Request) -> tuple[str, FakeRepo | None]:
        name = f"{request.match_info['org']}/{request.match_info['name']}"
        return name, self.repos.get(name)

    def _file_entry(self, repo: FakeRepo, path: str, data: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": path, "size": len(data),
                                 "blobId": hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()}
        if repo.is_lfs(path):
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    # ------------------------------------------------------------------------ the API

    async def _search(self, request: web.Request) -> web.Response:
        self._record("hub", request)
        query = request.query.get("search", "").lower()
        filters = request.query.getall("filter", [])
        limit = int(request.query.get("limit", "1000"))
        found = [(name, r) for name, r in self.repos.items() if query in name.lower()
                 and all(f in r.tags for f in filters)]
        found.sort(key=lambda item: -item[1].downloads)
        return web.json_response([{"id": name, "_id": name, "modelId": name, "downloads": r.downloads,
                                   "likes": r.likes, "lastModified": "2025-05-01T12:00:00.000Z",
                                   "tags": list(r.tags), "private": False, "gated": r.gated and "manual"}
                                  for name, r in found[:limit]])

    async def _info(self, request: web.Request) -> web.Response:
        self._record("hub", request)
        name, repo = self._repo(request)
        if repo is None:
            return self._error(404 if request.headers.get("authorization") else 401, "RepoNotFound",
                               "Repository Not Found")
        rev = request.match_info.get("rev", "main")
        if rev not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        blobs = request.query.get("blobs") == "true"
        siblings = [self._file_entry(repo, path, data) if blobs else {"rfilename": path}
                    for path, data in sorted(repo.files.items())]
        return web.json_response({"_id": name, "id": name, "modelId": name, "sha": repo.commit,
                                  "private": False, "gated": "manual" if repo.gated else False,
                                  "disabled": False, "downloads": repo.downloads, "likes": repo.likes,
                                  "lastModified": "2025-05-01T12:00:00.000Z", "tags": list(repo.tags),
                                  "siblings": siblings})

    async def _refs(self, request: web.Request) -> web.Response:
        self._record("hub", request)
        _, repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository Not Found")
        return web.json_response({"branches": [{"name": "main", "ref": "refs/heads/main",
                                                "targetCommit": repo.commit}], "tags": [], "converts": []})

    async def _tree(self, request: web.Request) -> web.Response:
        self._record("hub", request)
        _, repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository Not Found")
        out = []
        for path, data in sorted(repo.files.items()):
            entry = self._file_entry(repo, path, data)
            item: dict[str, Any] = {"type": "file", "oid": entry["blobId"], "size": len(data), "path": path}
            if "lfs" in entry:
                item["lfs"] = {"oid": entry["lfs"]["sha256"], "size": len(data), "pointerSize": 134}
            out.append(item)
        return web.json_response(out)

    # ------------------------------------------------------------------------ file bodies

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        self._record("hub", request)
        name, repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository Not Found")
        rev, path = request.match_info["rev"], request.match_info["path"]
        if rev not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if repo.gated:
            auth = request.headers.get("Authorization", "")
            if not auth:
                return self._error(401, "GatedRepo", f"Access to model {name} is restricted. You must have "
                                   "access to it and be authenticated to access it. Please log in.")
            if auth.removeprefix("Bearer ") not in repo.tokens:
                return self._error(403, "GatedRepo", f"Access to model {name} is restricted and you are not "
                                   "in the authorized list.")
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"")
        data = repo.files[path]
        entry = self._file_entry(repo, path, data)
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if "lfs" in entry:
            sha = entry["lfs"]["sha256"]
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
            if self.redirect:
                headers["Location"] = f"{self.cdn_url}/blob/{name}/{path}?X-Amz-Signature=fake"
                return web.Response(status=302, headers=headers)
        else:
            headers["ETag"] = f'"{entry["blobId"]}"'
        return await self._body(request, data, headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self._record("cdn", request)
        name = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get(name)
        path = request.match_info["path"]
        if repo is None or path not in repo.files:
            return web.Response(status=404, text="NoSuchKey")
        return await self._body(request, repo.files[path], {"Accept-Ranges": "bytes",
                                                            "ETag": f'"{hashlib.md5(repo.files[path]).hexdigest()}"'})

    async def _body(self, request: web.Request, data: bytes, headers: dict[str, str]) -> web.StreamResponse:
        if self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, status = 0, 200
        wanted = request.headers.get("Range", "")
        if wanted.startswith("bytes=") and not self.ignore_range:
            start = int(wanted[6:].split("-")[0])
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            first = start + 1 if self.bad_content_range else start
            headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        headers["Content-Type"] = "application/octet-stream"
        response = web.StreamResponse(status=status, headers=headers)
        if request.method == "HEAD":
            await response.prepare(request)
            return response
        await response.prepare(request)
        cut = None
        if self.drop_after is not None and self.drops > 0 and start < self.drop_after:
            self.drops -= 1
            cut = self.drop_after - start
        sent = 0
        step = 16 * 1024
        while sent < len(body):
            piece = body[sent:sent + step]
            if cut is not None and sent + len(piece) >= cut:
                await response.write(piece[: cut - sent])
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.abort()  # the connection drops mid-file
                return response
            await response.write(piece)
            sent += len(piece)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await response.write_eof()
        return response
