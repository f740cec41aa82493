"""Find GGUF models already on this computer, and write a recipe for each one the user picks.

:func:`discover_models` looks in the usual places (all relative to ``home``; the
environment variables those tools honour are honoured too):

* the Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``
  (``models--org--repo/snapshots/<rev>/**.gguf``; the snapshot entries are symlinks to
  blobs, so files are told apart by their resolved path);
* LM Studio: ``~/.lmstudio/models`` and ``~/.cache/lm-studio/models``;
* llama.cpp's download cache: ``$LLAMA_CACHE``, else ``$XDG_CACHE_HOME/llama.cpp``, else
  ``~/.cache/llama.cpp`` (``~/Library/Caches/llama.cpp`` on macOS);
* Ollama: ``$OLLAMA_MODELS``, else ``~/.ollama/models``: each manifest under
  ``manifests/<host>/<namespace>/<name>/<tag>`` names its model layer, a GGUF blob at
  ``blobs/sha256-<hex>``;
* any folders the user picks, searched recursively.

Only real GGUF files are reported: the file must start with the magic bytes ``GGUF``.
Projector files (``mmproj``) are skipped, and of a split model
(``-00001-of-00003.gguf``) only the first part is reported, with the size of all parts.
Walks are bounded: at most :data:`MAX_DEPTH` folders deep, each folder visited once (so a
symlink loop ends), unreadable folders skipped, and at most :data:`MAX_ENTRIES` entries
per place.

:func:`create_recipes` writes ``recipes/<name>.toml`` for each model. It never overwrites
a recipe: when the name is taken it adds ``-2``, ``-3``, ... (the file is created with a
hard link from a fully written temporary file, so even a race cannot clobber one).

No Qt here; the CLI (``siesta discover``) and the tray app both use this module.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from app.core.config.atomic_write import write_text_atomic
from app.core.config.recipes import RecipeError, is_valid_name, parse_recipe, read_recipe, scan_recipe_files

__all__ = [
    "FoundModel", "SOURCES", "SOURCE_LABELS", "MAX_NAME_LENGTH", "MAX_DEPTH", "MAX_ENTRIES",
    "discover_models", "create_recipes", "recipe_name_for", "configured_model_paths",
    "default_hf_hub_cache", "hf_hub_caches", "is_gguf_file", "render_recipe", "write_new_recipe",
]

SOURCES = ("huggingface", "lmstudio", "llama.cpp", "ollama", "folder")
SOURCE_LABELS = {
    "huggingface": "the Hugging Face cache",
    "lmstudio": "LM Studio's models folder",
    "llama.cpp": "llama.cpp's cache",
    "ollama": "Ollama's model store",
    "folder": "a chosen folder",
}
GGUF_MAGIC = b"GGUF"
MAX_NAME_LENGTH = 64
MAX_DEPTH = 6
MAX_ENTRIES = 200_000
MAX_MANIFEST_BYTES = 1024 * 1024
OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"

_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_JUNK = re.compile(r"[^a-z0-9._-]+")
_DASHES = re.compile(r"-{2,}")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@dataclass
class FoundModel:
    """One GGUF model found on disk.

    ``name`` is the suggested recipe name: valid for a recipe and unique within one
    :func:`discover_models` result. ``size`` is in bytes (all parts of a split model).
    ``origin`` says what it is where it was found, for display: the hub repo
    (``Qwen/Qwen2.5-0.5B-Instruct-GGUF``), the Ollama tag (``llama3.2:latest``), or the
    folder.
    """

    name: str
    path: Path
    size: int
    source: str  # "huggingface" | "lmstudio" | "llama.cpp" | "ollama" | "folder"
    origin: str = ""


# ---------------------------------------------------------------------------- names


def recipe_name_for(text: str) -> str:
    """A valid recipe name made from any text: lowercase, every run of other characters
    (and of dashes) becomes one ``-``, no leading or trailing ``.``, ``_`` or ``-``, at
    most 64 characters; ``"model"`` when nothing is left."""
    name = _DASHES.sub("-", _JUNK.sub("-", text.lower()))
    name = name.strip("._-")[:MAX_NAME_LENGTH].rstrip("._-")
    return name if name and is_valid_name(name) else "model"


def _with_suffix(base: str, n: int) -> str:
    """``base`` with ``-n`` appended, cut so the whole stays within the length limit."""
    if n <= 1:
        return base
    tail = f"-{n}"
    return base[: MAX_NAME_LENGTH - len(tail)].rstrip("._-") + tail


def _unique(base: str, taken: set[str]) -> str:
    n = 1
    while (candidate := _with_suffix(base, n)).lower() in taken:
        n += 1
    taken.add(candidate.lower())
    return candidate


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _name_from_repo_and_file(repo: str | None, file_stem: str) -> str:
    """The file's stem, prefixed by the repo name when the stem does not already say it
    (``TheBloke/Foo-GGUF`` + ``model-q4_0`` -> ``foo-model-q4_0``)."""
    if repo:
        base = re.sub(r"[-_.]?gguf$", "", repo.rsplit("/", 1)[-1], flags=re.IGNORECASE)
        if base and _squash(base) not in _squash(file_stem):
            return recipe_name_for(f"{base}-{file_stem}")
    return recipe_name_for(file_stem)


# ---------------------------------------------------------------------------- locations


def _expand(value: str, home: Path) -> Path:
    if value == "~" or value.startswith("~/") or value.startswith("~" + os.sep):
        return home / value[2:]
    return Path(value)


def _cache_home(home: Path, env: Mapping[str, str]) -> Path:
    value = env.get("XDG_CACHE_HOME")
    return _expand(value, home) if value else home / ".cache"


def default_hf_hub_cache(home: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps its downloads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
    else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    home = Path.home() if home is None else home
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return _expand(env["HF_HUB_CACHE"], home)
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"], home) / "hub"
    return _cache_home(home, env) / "huggingface" / "hub"


def hf_hub_caches(home: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    """The hub cache in force, then the plain default if that is a different folder."""
    home = Path.home() if home is None else home
    return _distinct([default_hf_hub_cache(home, env), home / ".cache" / "huggingface" / "hub"])


def _lmstudio_dirs(home: Path) -> list[Path]:
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def _llamacpp_dirs(home: Path, env: Mapping[str, str]) -> list[Path]:
    dirs = []
    if env.get("LLAMA_CACHE"):
        dirs.append(_expand(env["LLAMA_CACHE"], home))
    dirs.append(_cache_home(home, env) / "llama.cpp")
    dirs.append(home / ".cache" / "llama.cpp")
    if sys.platform == "darwin":
        dirs.append(home / "Library" / "Caches" / "llama.cpp")
    if env.get("LOCALAPPDATA"):
        dirs.append(Path(env["LOCALAPPDATA"]) / "llama.cpp")
    return _distinct(dirs)


def _ollama_dirs(home: Path, env: Mapping[str, str], *, system: bool) -> list[Path]:
    dirs = []
    if env.get("OLLAMA_MODELS"):
        dirs.append(_expand(env["OLLAMA_MODELS"], home))
    dirs.append(home / ".ollama" / "models")
    if system:  # the Linux service install keeps its models outside any home
        dirs.append(Path("/usr/share/ollama/.ollama/models"))
    return _distinct(dirs)


def _distinct(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


# ---------------------------------------------------------------------------- files


def is_gguf_file(path: Path) -> bool:
    """True when ``path`` is a readable regular file (symlinks followed) starting with ``GGUF``."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an undecodable file name cannot be written into TOML
        return False
    return True


def _walk_gguf(root: Path, *, max_depth: int = MAX_DEPTH, skip_hidden: bool = True) -> Iterator[Path]:
    """Every ``*.gguf`` under ``root`` (sorted per folder), each folder visited once."""
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, int]] = [(root, 0)]
    budget = MAX_ENTRIES
    while stack:
        folder, depth = stack.pop()
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[Path] = []
        for entry in entries:
            budget -= 1
            if budget < 0:
                return
            try:
                if entry.is_dir(follow_symlinks=True):
                    if depth < max_depth and not (skip_hidden and entry.name.startswith(".")):
                        subdirs.append(Path(entry.path))
                elif entry.name.lower().endswith(".gguf") and entry.is_file(follow_symlinks=True):
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend((d, depth + 1) for d in reversed(subdirs))


def _shard_info(path: Path) -> tuple[str, int, int] | None:
    m = _SHARD.match(path.name)
    if not m:
        return None
    return m["prefix"], int(m["index"]), int(m["total"])


def _model_size(path: Path) -> int:
    """The file's size; for the first part of a split model, the size of all its parts."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    shard = _shard_info(path)
    if shard:
        prefix, _, total = shard
        for i in range(2, total + 1):
            try:
                size += (path.parent / f"{prefix}-{i:05d}-of-{total:05d}.gguf").stat().st_size
            except OSError:
                pass
    return size


def _usable_gguf(path: Path) -> bool:
    """A GGUF file worth a recipe: no projector, no later part of a split model, real magic."""
    if "mmproj" in path.name.lower():
        return False
    shard = _shard_info(path)
    if shard and shard[1] != 1:
        return False
    return _is_utf8(str(path)) and is_gguf_file(path)


def _stem(path: Path) -> str:
    shard = _shard_info(path)
    return shard[0] if shard else path.stem


# ---------------------------------------------------------------------------- scanners


class _Collector:
    """Collects models, keeping the first of each resolved file and unique names."""

    def __init__(self) -> None:
        self.models: list[FoundModel] = []
        self._files: set[str] = set()
        self._names: set[str] = set()

    def add(self, path: Path, source: str, name: str, origin: str) -> None:
        try:
            real = os.path.realpath(path)
        except OSError:
            return
        if real in self._files:
            return
        self._files.add(real)
        absolute = Path(os.path.abspath(path))
        self.models.append(FoundModel(
            name=_unique(recipe_name_for(name), self._names), path=absolute,
            size=_model_size(path), source=source, origin=origin,
        ))


def _scan_hf(collector: _Collector, hub: Path) -> None:
    try:
        repos = sorted(p for p in hub.iterdir() if p.name.startswith("models--"))
    except OSError:
        return
    for repo_dir in repos:
        parts = repo_dir.name.split("--", 2)
        repo = "/".join(parts[1:]) if len(parts) > 1 else repo_dir.name
        snapshots = repo_dir / "snapshots"
        try:
            revisions = sorted(p for p in snapshots.iterdir() if p.is_dir())
        except OSError:
            continue
        for rev in revisions:
            for path in _walk_gguf(rev, max_depth=MAX_DEPTH - 3):
                if _usable_gguf(path):
                    collector.add(path, "huggingface", _name_from_repo_and_file(repo, _stem(path)), repo)


_LLAMACPP_CACHE_STEM = re.compile(r"^(?P<repo>.+?[-_.]gguf)_(?P<file>.+)$", re.IGNORECASE)


def _scan_tree(collector: _Collector, root: Path, source: str, *, skip_hidden: bool = True) -> None:
    for path in _walk_gguf(root, skip_hidden=skip_hidden):
        if not _usable_gguf(path):
            continue
        repo = None
        stem = _stem(path)
        origin = str(path.parent)
        if source == "lmstudio" and path.parent != root:
            repo = path.parent.name  # models/<publisher>/<repo>/<file>.gguf
            origin = f"{path.parent.parent.name}/{repo}" if path.parent.parent != root else repo
        elif source == "llama.cpp" and (m := _LLAMACPP_CACHE_STEM.match(stem)):
            # llama.cpp's -hf downloads are named <org>_<repo>_<file>: name them by the file
            repo, stem = m["repo"].replace("_", "/", 1), m["file"]
            origin = repo
        collector.add(path, source, _name_from_repo_and_file(repo, stem), origin)


def _listdir(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


def _scan_ollama(collector: _Collector, models_dir: Path) -> None:
    manifests = models_dir / "manifests"
    blobs = models_dir / "blobs"
    for host in _listdir(manifests):
        for namespace in _listdir(host):
            for model in _listdir(namespace):
                for tag_file in _listdir(model):
                    blob = _ollama_model_blob(tag_file, blobs)
                    if blob is None or not _is_utf8(str(blob)) or not is_gguf_file(blob):
                        continue
                    library = host.name == "registry.ollama.ai" and namespace.name == "library"
                    name = f"{model.name}-{tag_file.name}" if library else f"{namespace.name}-{model.name}-{tag_file.name}"
                    origin = f"{model.name}:{tag_file.name}" if library else f"{host.name}/{namespace.name}/{model.name}:{tag_file.name}"
                    collector.add(blob, "ollama", name, origin)


def _ollama_model_blob(manifest: Path, blobs: Path) -> Path | None:
    """The GGUF blob an Ollama manifest names, or None when it names none (or is not JSON)."""
    try:
        if not manifest.is_file() or manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        return None
    for layer in layers:
        if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE:
            m = _DIGEST.match(str(layer.get("digest", "")))
            if m:  # only a well-formed digest: never a path taken from the file
                blob = blobs / f"sha256-{m[1]}"
                return blob if blob.is_file() else None
    return None


def discover_models(
    home: Path | None = None,
    extra_dirs: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> list[FoundModel]:
    """Every GGUF model in the usual places and in ``extra_dirs``, each file once.

    ``home`` defaults to the user's home and ``env`` to ``os.environ``. Order: Hugging
    Face, LM Studio, llama.cpp, Ollama, then the extra folders; a file reachable from
    several places is reported for the first. Names are unique within the result.
    """
    system = home is None
    home = Path.home() if home is None else Path(home)
    env = os.environ if env is None else env
    collector = _Collector()
    for hub in hf_hub_caches(home, env):
        _scan_hf(collector, hub)
    for folder in _lmstudio_dirs(home):
        _scan_tree(collector, folder, "lmstudio")
    for folder in _llamacpp_dirs(home, env):
        _scan_tree(collector, folder, "llama.cpp")
    for folder in _ollama_dirs(home, env, system=system):
        _scan_ollama(collector, folder)
    for folder in extra_dirs:
        _scan_tree(collector, _expand(str(folder), home), "folder")
    return collector.models


# ---------------------------------------------------------------------------- recipes


def _comment_text(text: str) -> str:
    """One comment line's text: control characters (a newline in a path) shown escaped."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def render_recipe(comments: Sequence[str], fields: Mapping[str, Any]) -> str:
    """A recipe's TOML text: comment lines, then the fields in order, escaped by tomlkit.

    List values are written one item a line when long; a dict becomes an inline table.
    """
    doc = tomlkit.document()
    for line in comments:
        doc.add(tomlkit.comment(_comment_text(line)))
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            array = tomlkit.array()
            array.extend(str(v) for v in value)
            if sum(len(str(v)) + 4 for v in value) > 80:
                array.multiline(True)
            doc[key] = array
        elif isinstance(value, Mapping):
            table = tomlkit.inline_table()
            table.update({str(k): str(v) for k, v in value.items()})
            doc[key] = table
        else:
            doc[key] = value
    return tomlkit.dumps(doc)


def _create_exclusive(target: Path, text: str) -> bool:
    """Creates ``target`` holding ``text`` unless a file (or link) of that name exists.

    The text is written and flushed to a temporary file first, then hard-linked to the
    target name, which fails if the name is taken: no half-written recipe and no
    overwrite. Where hard links are not supported, falls back to check-then-rename.
    """
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.new.tmp")
    write_text_atomic(tmp, text)
    try:
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError:
            if os.path.lexists(target):
                return False
            os.replace(tmp, target)
            return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def write_new_recipe(recipes_dir: Path, name: str, text: str, *, suffix: bool = True) -> Path | None:
    """Writes ``recipes_dir/<name>.toml`` without ever overwriting a file.

    The text is checked first with the same parser Siesta reads recipes with (RecipeError
    if it would not load). When the name is taken: with ``suffix`` the next free
    ``<name>-2``, ``<name>-3``, ... is used; without, returns None.
    """
    if not is_valid_name(name):
        raise RecipeError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' only")
    probe = recipes_dir / f"{name}.toml"
    parse_recipe(name, probe, tomllib.loads(text))  # raises RecipeError naming the field
    recipes_dir.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = _with_suffix(name, n)
        target = recipes_dir / f"{candidate}.toml"
        if _create_exclusive(target, text):
            return target
        if not suffix:
            return None
        n += 1


def create_recipes(found: Iterable[FoundModel], recipes_dir: Path) -> list[Path]:
    """Writes ``recipes/<name>.toml`` (a llamacpp recipe) for each model; returns the files.

    Each starts with a comment saying where the model was found. An existing recipe is
    never overwritten: the name gets a numeric suffix instead. A model whose path cannot be
    written as UTF-8 text is left out.
    """
    created: list[Path] = []
    for model in found:
        path = Path(os.path.abspath(model.path))
        if not _is_utf8(str(path)):
            continue
        name = model.name if is_valid_name(model.name) and len(model.name) <= MAX_NAME_LENGTH else recipe_name_for(model.name)
        where = SOURCE_LABELS.get(model.source, model.source)
        comments = [f"Found by `siesta discover` in {where}" + (f" ({model.origin})" if model.origin else "")]
        text = render_recipe(comments, {"backend": "llamacpp", "model": str(path)})
        target = write_new_recipe(recipes_dir, name, text)
        assert target is not None
        created.append(target)
    return created


def configured_model_paths(recipes_dir: Path) -> dict[str, str]:
    """Resolved GGUF path -> recipe name, for every llamacpp recipe that reads cleanly.

    Lets a caller mark (or leave unticked) the models that already have a recipe.
    """
    out: dict[str, str] = {}
    for file in scan_recipe_files(recipes_dir):
        try:
            recipe = read_recipe(file)
        except RecipeError:
            continue
        if recipe.model is not None:
            out.setdefault(os.path.realpath(recipe.model), recipe.name)
    return out
