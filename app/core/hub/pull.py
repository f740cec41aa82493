"""``siesta pull`` and the "Download model..." dialog: a GGUF model from the Hub into the
shared cache, and a recipe for it.

:func:`pull` reads the reference (``ORG/REPO[:QUANT]`` or ``ORG/REPO/FILE.gguf``), asks the
Hub for the repo's files, chooses the way llama.cpp's ``-hf`` does
(:mod:`app.core.hub.choice`), checks the disk has room for everything not yet in the cache
(and for a copy of each file where the cache can neither symlink nor hard-link it, see
:func:`~app.core.hub.download.snapshot_copy_bytes`) before any byte is fetched, downloads
each file (every split part, and the ``mmproj`` of a vision model) with
:mod:`app.core.hub.download`, and writes ``recipes/<name>.toml``.

A recipe is never overwritten. The name is the repo's name without its org and without a
``-GGUF`` suffix, lower-cased, plus the quant (``acme/Tiny-GGUF:Q8_0`` -> ``tiny-q8_0``);
``name`` chooses another. When a recipe of that name already points at the same file,
pulling again only makes sure the files are there (``created`` is False); when it points
elsewhere, the pull stops before downloading and says to choose another name.

Blocking, no Qt: the GUI calls it from a worker thread, with ``progress`` and ``cancel``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.core.config.recipes import RecipeError, is_valid_name, read_recipe
from app.core.config.sizes import format_bytes
from app.core.discovery import recipe_name_for, render_recipe, write_new_recipe
from app.core.hub.choice import Choice, ModelRef, choose, parse_model_ref, split_info
from app.core.hub.client import FileNotFound, HubClient, HubError, HubFile
from app.core.hub.download import (
    check_disk_space,
    download_file,
    hub_cache_dir,
    is_cached,
    partial_path,
    repo_dir,
    snapshot_copy_bytes,
    snapshot_path,
)

__all__ = ["PullResult", "RecipeExists", "Plan", "pull", "plan", "default_model_name"]


class RecipeExists(HubError):
    """A recipe of the chosen name exists for another model; nothing was downloaded."""


@dataclass(frozen=True)
class PullResult:
    """What a pull did: the recipe's name and file, the model's file (the first part of a
    split model) and projector in the cache, the quant, and whether the recipe is new."""

    name: str
    recipe_path: Path
    model_path: Path
    mmproj_path: Path | None
    quant: str | None
    created: bool


def default_model_name(repo: str, quant: str | None, file: str | None = None) -> str:
    """``acme/Tiny-GGUF`` + ``Q8_0`` -> ``tiny-q8_0``; without a quant, the file's stem."""
    base = re.sub(r"[-_.]gguf$", "", repo.rsplit("/", 1)[-1], flags=re.IGNORECASE)
    if quant:
        return recipe_name_for(f"{base}-{quant}")
    if file:
        stem = split_info(file)[0].rsplit("/", 1)[-1] or file.rsplit("/", 1)[-1]
        return recipe_name_for(stem)
    return recipe_name_for(base)


@dataclass(frozen=True)
class Plan:
    """What a pull will fetch, before it does: for the CLI's first line and the dialog."""

    ref: ModelRef
    commit: str
    choice: Choice
    name: str
    to_fetch: int  # bytes not yet in the cache (partial files counted as fetched)


def plan(ref_text: str, *, name: str | None = None, client: HubClient | None = None,
         cache_dir: Path | None = None) -> Plan:
    """Reads the reference, asks the Hub, chooses the files; fetches nothing."""
    ref = parse_model_ref(ref_text)
    client = client or HubClient()
    cache_dir = hub_cache_dir() if cache_dir is None else cache_dir
    info = client.repo_info(ref.repo, ref.revision)
    try:
        choice = choose(info.files, quant=ref.quant, file=ref.file)
    except FileNotFound as exc:
        raise FileNotFound(f"{ref.repo}: {exc}") from exc
    model_name = name or default_model_name(ref.repo, choice.quant, choice.model_files[0].name)
    if not is_valid_name(model_name):
        raise HubError(f"invalid model name {model_name!r}: use letters, digits, '.', '_' and '-' only")
    to_fetch = 0
    for f in choice.files:
        if not is_cached(cache_dir, ref.repo, f):
            part = partial_path(cache_dir, ref.repo, f)
            have = part.stat().st_size if part.is_file() and f.etag else 0
            to_fetch += max(f.size - have, 0)
    return Plan(ref, info.commit, choice, model_name, to_fetch)


def pull(ref_text: str, *, recipes_dir: Path, name: str | None = None, client: HubClient | None = None,
         progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
         cache_dir: Path | None = None, status: Callable[[str], None] | None = None,
         file_progress: Callable[[HubFile, int], None] | None = None) -> PullResult:
    """Downloads the model ``ref_text`` names and writes its recipe (see the module's docstring).

    ``progress(done, total)`` counts bytes over all its files; ``status(line)`` gets a line
    for people at each step; ``file_progress(file, done)`` the bytes of each file in turn
    (0, or its size when it is in the cache already, as it starts; its size once verified).
    Raises HubError (and its kinds: RepoNotFound, FileNotFound, GatedRepo, HubUnreachable,
    NotEnoughDiskSpace, IntegrityError, DownloadCancelled, RecipeExists, ModelRefError).
    """
    client = client or HubClient()
    cache_dir = hub_cache_dir() if cache_dir is None else Path(cache_dir)
    say = status or (lambda line: None)
    p = plan(ref_text, name=name, client=client, cache_dir=cache_dir)
    repo, commit, choice = p.ref.repo, p.commit, p.choice
    model_path = snapshot_path(cache_dir, repo, commit, choice.model_files[0])
    mmproj_path = snapshot_path(cache_dir, repo, commit, choice.mmproj) if choice.mmproj else None
    recipe_file = Path(recipes_dir) / f"{p.name}.toml"
    reuse = _existing_recipe_for(recipe_file, model_path)
    files = ", ".join(f.name for f in choice.files)
    say(f"{repo} at {commit[:12]}: {files} ({format_bytes(choice.size)})")

    copies = snapshot_copy_bytes(cache_dir, repo, commit, choice.files)
    check_disk_space(repo_dir(cache_dir, repo), p.to_fetch + copies,
                     f"{format_bytes(copies)} of it for copies: this disk cannot link a file to its blob" if copies
                     else "")
    total = choice.size
    finished = 0
    lock = threading.Lock()
    current: list[HubFile] = []  # the file being fetched (for file_progress)

    def on_progress(done: int, _size: int) -> None:
        if progress:
            with lock:
                progress(finished + done, total)
        if file_progress and current:
            file_progress(current[-1], done)

    for f in choice.files:
        cached = is_cached(cache_dir, repo, f)
        say(f"already in the cache: {f.name}" if cached else f"downloading {f.name}")
        current.append(f)
        if file_progress:
            file_progress(f, f.size if cached else 0)
        download_file(client, repo, commit, f, progress=on_progress, cancel=cancel, cache_dir=cache_dir,
                      revision=p.ref.revision)
        if file_progress:
            file_progress(f, f.size)
        finished += f.size

    if reuse:
        say(f"recipe {p.name} already uses this model: {recipe_file}")
        return PullResult(p.name, recipe_file, model_path, mmproj_path, choice.quant, created=False)
    args = ["--mmproj", str(mmproj_path)] if mmproj_path else []
    fields: dict[str, object] = {"backend": "llamacpp", "model": str(model_path)}
    if args:
        fields["args"] = args
    comments = [f"Pulled from the Hugging Face Hub by `siesta pull {p.ref}` ({repo} at commit {commit[:12]})"]
    written = write_new_recipe(Path(recipes_dir), p.name, render_recipe(comments, fields), suffix=False)
    if written is None:
        raise RecipeExists(f"a recipe named {p.name} appeared in {recipes_dir} meanwhile; the model is in the "
                           f"cache at {model_path}: run again with another name (--name)")
    say(f"created {written}")
    return PullResult(p.name, written, model_path, mmproj_path, choice.quant, created=True)


def _existing_recipe_for(recipe_file: Path, model_path: Path) -> bool:
    """False when no recipe has that name; True when it already points at ``model_path``;
    RecipeExists when it is another model's (checked before anything is fetched)."""
    if not os.path.lexists(recipe_file):
        return False
    try:
        recipe = read_recipe(recipe_file)
        same = recipe.model is not None and os.path.abspath(recipe.model) == os.path.abspath(model_path)
    except RecipeError:
        same = False
    if same:
        return True
    raise RecipeExists(f"a recipe named {recipe_file.stem} exists for another model ({recipe_file}); it is "
                       "never overwritten: choose another name with --name")
