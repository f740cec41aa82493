"""The Hugging Face Hub's metadata, for ``siesta pull`` and the "Download model..." dialog:
a repo's files with their sizes and sha256 (:meth:`HubClient.repo_info`), and a search
for GGUF repos (:meth:`HubClient.search`).

Metadata goes through ``huggingface_hub`` (imported when first needed, so nothing here
slows down the CLI's other commands); the files themselves are fetched by
:mod:`app.core.hub.download`, which resumes across runs. The endpoint is ``endpoint``,
else ``$HF_ENDPOINT`` read when the client is made (``huggingface_hub`` reads it once at
import, so it is always passed explicitly), else ``https://huggingface.co``. The token is
``token``, else the one ``huggingface_hub`` finds (``$HF_TOKEN``, else the file written by
``hf auth login``); it is sent to the Hub's own host only.

Every failure is a :class:`HubError` whose message says what happened and, where there is
something to do, what to do. Everything here blocks: call it from a worker thread in the
GUI. No Qt, no asyncio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

__all__ = [
    "DEFAULT_ENDPOINT", "HubFile", "RepoInfo", "RepoSummary", "HubClient",
    "HubError", "RepoNotFound", "RevisionNotFound", "FileNotFound", "GatedRepo", "HubUnreachable",
    "gated_message", "repo_url",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
LOGIN_HINT = "log in with `hf auth login` (`huggingface-cli login` in older versions) or set HF_TOKEN"


class HubError(Exception):
    """Anything that went wrong talking to the Hub; the message is meant for people."""


class RepoNotFound(HubError):
    """No such repo (or a private one the token cannot see)."""


class RevisionNotFound(RepoNotFound):
    """The repo exists but not the branch, tag or commit asked for."""


class FileNotFound(HubError):
    """The repo has no such file (or no file that matches the quant asked for)."""


class GatedRepo(HubError):
    """The repo's files need the user to accept its terms and to be logged in."""


class HubUnreachable(HubError):
    """No answer from the Hub: no network, a wrong HF_ENDPOINT, or the Hub is down."""


@dataclass(frozen=True)
class HubFile:
    """One file of a repo: its path in the repo, size in bytes and sha256 (LFS files;
    ``None`` for small files kept in git, which have only ``blob_id``, the git sha1)."""

    name: str
    size: int
    sha256: str | None
    blob_id: str | None = None

    @property
    def etag(self) -> str:
        """The name of its blob in the shared cache: the sha256, else the git blob id."""
        return self.sha256 or self.blob_id or ""


@dataclass(frozen=True)
class RepoInfo:
    """A repo at one commit: every file in it, and whether it is gated."""

    repo: str
    commit: str
    files: tuple[HubFile, ...]
    gated: bool = False


@dataclass(frozen=True)
class RepoSummary:
    """One search result."""

    id: str
    downloads: int
    likes: int
    updated: datetime | None


def repo_url(endpoint: str, repo: str) -> str:
    """The repo's page on the Hub (where its terms are accepted)."""
    return f"{endpoint.rstrip('/')}/{repo}"


def gated_message(endpoint: str, repo: str, *, have_token: bool) -> str:
    page = repo_url(endpoint, repo)
    if have_token:
        return (f"{repo} is a gated model and your Hugging Face token has no access to it yet: accept its "
                f"terms on {page} (logged in as the token's owner), then run the same command again.")
    return (f"{repo} is a gated model: accept its terms on {page}, then {LOGIN_HINT}, and run the same "
            "command again.")


def _stored_token() -> str | None:
    """``$HF_TOKEN``, else the token ``hf auth login`` stored; None when there is none."""
    try:
        from huggingface_hub import get_token

        return get_token() or None
    except Exception:  # noqa: BLE001 - an unreadable token file or a failed OIDC exchange: no token
        return None


def is_transport_error(exc: BaseException) -> bool:
    """A network failure (no answer, connection reset, timeout), from httpx or httpx2."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectError", "NetworkError", "TimeoutException",
                         "RemoteProtocolError", "ProtocolError"})


class HubClient:
    """The Hub at ``endpoint`` with ``token`` (see the module's docstring for the defaults).

    ``token=""`` sends no token even when one is stored.
    """

    def __init__(self, endpoint: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.token: str | None = (token or None) if token is not None else _stored_token()
        self.timeout = timeout
        self._api: Any = None

    # ------------------------------------------------------------------------ URLs and auth

    def resolve_url(self, repo: str, revision: str, file: str) -> str:
        """Where a file's bytes are: ``/{repo}/resolve/{revision}/{file}`` on the Hub."""
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(file)}"

    def is_hub_url(self, url: str) -> bool:
        """Whether ``url`` is on the Hub's own host (scheme, host and port all equal)."""
        mine, theirs = urlsplit(self.endpoint), urlsplit(url)
        return (mine.scheme, mine.hostname, mine.port) == (theirs.scheme, theirs.hostname, theirs.port)

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers a request to ``url`` carries: the token only when it goes to the Hub."""
        headers = {"User-Agent": "siesta", "Accept-Encoding": "identity"}
        if self.token and self.is_hub_url(url):
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    # ------------------------------------------------------------------------ metadata

    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api

    def repo_info(self, repo: str, revision: str = "main") -> RepoInfo:
        """Every file of ``repo`` at ``revision`` with its size and sha256, and the commit."""
        try:
            info = self.api.model_info(repo, revision=revision, files_metadata=True, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - translated into a HubError saying what to do
            self._raise(exc, repo, revision=revision)
        files = []
        for sibling in info.siblings or ():
            lfs = getattr(sibling, "lfs", None)
            sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
            size = sibling.size if sibling.size is not None else getattr(lfs, "size", None)
            files.append(HubFile(sibling.rfilename, int(size or 0), sha256, getattr(sibling, "blob_id", None)))
        if not info.sha:
            raise HubError(f"{self.endpoint} gave no commit for {repo} at {revision!r}")
        return RepoInfo(repo=repo, commit=info.sha, files=tuple(files), gated=bool(info.gated))

    def search(self, query: str, limit: int = 30) -> list[RepoSummary]:
        """GGUF model repos whose name matches ``query``, most downloaded first."""
        try:
            found = self.api.list_models(search=query or None, filter="gguf", sort="downloads", limit=limit,
                                         expand=["downloads", "likes", "lastModified"])
            results = [RepoSummary(m.id, int(m.downloads or 0), int(m.likes or 0), m.last_modified)
                       for m in found]
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, None)
        return results

    def _raise(self, exc: Exception, repo: str | None, *, revision: str | None = None, file: str | None = None) -> NoReturn:
        """Raises the HubError for an exception from ``huggingface_hub``."""
        from huggingface_hub import errors

        what = repo or "the Hub"
        if isinstance(exc, errors.GatedRepoError):
            raise GatedRepo(gated_message(self.endpoint, what, have_token=bool(self.token))) from exc
        if isinstance(exc, errors.RevisionNotFoundError):
            raise RevisionNotFound(f"{what} has no revision {revision!r} on {self.endpoint}") from exc
        if isinstance(exc, errors.EntryNotFoundError):
            raise FileNotFound(f"{what} has no file {file!r}") from exc
        if isinstance(exc, errors.RepositoryNotFoundError):
            hint = "" if self.token else f" (if it is private, {LOGIN_HINT})"
            raise RepoNotFound(f"no model repository {what} on {self.endpoint}{hint}") from exc
        offline = getattr(errors, "OfflineModeIsEnabled", None)
        if offline is not None and isinstance(exc, offline):
            raise HubUnreachable("HF_HUB_OFFLINE is set: unset it to reach the Hub") from exc
        if isinstance(exc, errors.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            raise HubError(f"{self.endpoint} answered {status} for {what}: {_first_line(exc)}") from exc
        if is_transport_error(exc) or isinstance(exc, OSError):
            raise HubUnreachable(f"cannot reach {self.endpoint}: {exc or type(exc).__name__} "
                                 "(check the network connection, or HF_ENDPOINT)") from exc
        raise HubError(f"{what}: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
