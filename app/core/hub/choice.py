"""Which files of a Hub repo make the model: the same choice llama.cpp's ``-hf ORG/REPO:QUANT``
makes, so ``siesta pull`` and ``llama-server -hf`` agree on what a reference means.

* :func:`parse_model_ref` reads ``ORG/REPO``, ``ORG/REPO:QUANT`` and ``ORG/REPO/FILE.gguf``
  (also with ``hf.co/`` or ``https://huggingface.co/`` in front, and a file's page URL).
* :func:`choose` picks the model's file(s): the quant tag is matched case-insensitively
  (``Q4_K_M`` matches ``model-Q4_K_M.gguf`` and ``model.q4_k_m.gguf``); without a tag,
  Q4_K_M, then Q8_0, then the first model file. Names with ``mmproj``, ``imatrix``,
  ``mtp-``, ``eagle3-``, ``dflash-`` or ``dspark-`` are never the model. Every part of a
  split GGUF (``-00001-of-00003``) is taken, and the closest ``mmproj`` file when the repo
  has one (same folder or a parent of it, deepest first, then the nearest bit count).
* :func:`quant_options` lists each quant with its parts and total size, for the download
  dialog.

One deliberate difference from llama.cpp: a tag must start the name or follow a
non-alphanumeric character, so ``Q4_XS`` does not pick ``IQ4_XS``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.core.hub.client import FileNotFound, HubError, HubFile

__all__ = ["ModelRef", "ModelRefError", "QuantOption", "Choice", "parse_model_ref", "quant_options", "choose",
           "split_info", "quant_bits", "is_model_file", "DEFAULT_QUANTS", "SIDECAR_MARKERS"]

DEFAULT_QUANTS = ("Q4_K_M", "Q8_0")
SIDECAR_MARKERS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
_SPLIT = re.compile(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", re.IGNORECASE)
_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO = re.compile(rf"^{_PART}/{_PART}$")
_QUANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/", re.IGNORECASE)
_PAGE = re.compile(r"^([^/]+/[^/]+)/(?:blob|resolve)/([^/]+)/(.+)$")
USAGE = "use ORG/REPO, ORG/REPO:QUANT or ORG/REPO/FILE.gguf (for example acme/Tiny-GGUF:Q8_0)"


class ModelRefError(HubError, ValueError):
    """Text that names no model on the Hub; the message quotes it and lists the forms."""


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for: a repo, and optionally a quant tag or one file in it."""

    repo: str
    quant: str | None = None
    file: str | None = None
    revision: str = "main"

    def __str__(self) -> str:
        if self.file:
            return f"{self.repo}/{self.file}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


@dataclass(frozen=True)
class QuantOption:
    """One quant of a repo: its tag (``Q4_K_M``; the file's name when it has none), its
    file(s) in part order, and their total size in bytes."""

    tag: str
    files: tuple[HubFile, ...]
    size: int


@dataclass(frozen=True)
class Choice:
    """The files to fetch: the model (every part, first part first), the projector for a
    vision model (or None), and the quant tag (as asked for, else the file's; None when
    the name has none)."""

    model_files: tuple[HubFile, ...]
    mmproj: HubFile | None
    quant: str | None

    @property
    def files(self) -> tuple[HubFile, ...]:
        return self.model_files + ((self.mmproj,) if self.mmproj else ())

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def parse_model_ref(text: str) -> ModelRef:
    """``ORG/REPO``, ``ORG/REPO:QUANT`` or ``ORG/REPO/FILE.gguf`` -> ModelRef; ModelRefError
    (naming the text) for anything else."""
    raw = text
    text = _HOST.sub("", text.strip()).strip("/")
    page = _PAGE.match(text)
    if page:  # https://huggingface.co/ORG/REPO/blob/main/FILE.gguf
        repo, revision, file = page.groups()
        if _REPO.match(repo) and file.lower().endswith(".gguf"):
            return ModelRef(repo, None, file, revision)
        raise ModelRefError(f"{raw!r} is not a GGUF model on the Hub: {USAGE}")
    quant = None
    if ":" in text:
        text, quant = text.rsplit(":", 1)
        if not _QUANT.match(quant):
            raise ModelRefError(f"{raw!r}: {quant!r} is not a quant tag (like Q4_K_M or Q8_0): {USAGE}")
    parts = text.split("/")
    repo = "/".join(parts[:2])
    if not _REPO.match(repo) or ".." in repo or "--" in repo:
        raise ModelRefError(f"{raw!r} is not a model on the Hub: {USAGE}")
    if len(parts) == 2:
        return ModelRef(repo, quant)
    file = "/".join(parts[2:])
    if quant is not None or not file.lower().endswith(".gguf") or any(p in ("", ".", "..") for p in parts[2:]):
        raise ModelRefError(f"{raw!r} is not a model on the Hub: {USAGE}")
    return ModelRef(repo, None, file)


def split_info(path: str) -> tuple[str, str, int, int]:
    """``(prefix, TAG, index, count)`` of a GGUF path, as llama.cpp reads it:
    ``dir/model-Q4_K_M-00002-of-00003.gguf`` -> ``("dir/model-Q4_K_M", "Q4_K_M", 2, 3)``;
    ``("", "", 0, 0)`` for a name that does not end in ``.gguf``."""
    if not path.lower().endswith(".gguf"):
        return "", "", 0, 0
    prefix, index, count = path[:-5], 1, 1
    split = _SPLIT.match(prefix)
    if split:
        prefix, index, count = split.group(1), int(split.group(2)), int(split.group(3))
    tag = _TAG.search(prefix)
    return prefix, tag.group(1).upper() if tag else "", index, count


def quant_bits(tag_or_path: str) -> int:
    """The bit count a tag names (``Q4_K_M`` -> 4, ``BF16`` -> 16); 0 when it names none."""
    tag = split_info(tag_or_path)[1] if tag_or_path.lower().endswith(".gguf") else tag_or_path.upper()
    digits = re.search(r"\d+", tag)
    return int(digits.group()) if digits else 0


def is_model_file(path: str) -> bool:
    """A GGUF that is a model: not a projector, an importance matrix or a draft head."""
    base = posixpath.basename(path).lower()
    return base.endswith(".gguf") and not any(marker in base for marker in SIDECAR_MARKERS)


def _is_first_part(path: str) -> bool:
    _, _, index, count = split_info(path)
    return count <= 1 or index == 1


def _tag_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(tag) + r"[.-]", re.IGNORECASE)


def _find_model(files: Sequence[HubFile], quant: str | None) -> HubFile | None:
    models = [f for f in files if is_model_file(f.name) and _is_first_part(f.name)]
    for tag in ([quant] if quant else DEFAULT_QUANTS):
        pattern = _tag_pattern(tag)
        for f in models:
            if pattern.search(f.name):
                return f
    if quant is None and models:
        return models[0]
    return None


def _parts(files: Sequence[HubFile], primary: HubFile) -> tuple[HubFile, ...]:
    prefix, _, _, count = split_info(primary.name)
    if count <= 1:
        return (primary,)
    parts = {split_info(f.name)[2]: f for f in files if split_info(f.name)[0] == prefix
             and split_info(f.name)[3] == count}
    missing = [i for i in range(1, count + 1) if i not in parts]
    if missing:
        raise FileNotFound(f"{primary.name} is part 1 of {count}, but the repo lacks part(s) "
                           + ", ".join(map(str, missing)))
    return tuple(parts[i] for i in range(1, count + 1))


def _find_mmproj(files: Sequence[HubFile], model: str) -> HubFile | None:
    """The projector closest to ``model``: in its folder or a parent (deepest first), then
    with the nearest bit count; the first of equals in listing order."""
    model_dir = model.split("/")[:-1]
    model_bits = quant_bits(model)
    best: tuple[int, int] | None = None
    chosen = None
    for f in files:
        if not f.name.lower().endswith(".gguf") or "mmproj" not in f.name.lower():
            continue
        sib_dir = f.name.split("/")[:-1]
        if sib_dir != model_dir[: len(sib_dir)]:
            continue
        key = (-len(sib_dir), abs(quant_bits(f.name) - model_bits))
        if best is None or key < best:
            best, chosen = key, f
    return chosen


def _available(files: Iterable[HubFile]) -> str:
    tags = [o.tag for o in quant_options(files)]
    return ", ".join(tags) if tags else "none"


def choose(files: Sequence[HubFile], quant: str | None = None, file: str | None = None) -> Choice:
    """The model's files (with every split part), its mmproj, and its quant; FileNotFound
    (listing the quants there are) when nothing matches."""
    files = list(files)
    if file is not None:
        primary = next((f for f in files if f.name == file), None) or next(
            (f for f in files if f.name.lower() == file.lower()), None)
        if primary is None:
            raise FileNotFound(f"no file {file!r} in the repo; its GGUF quants: {_available(files)}")
        prefix, _, index, count = split_info(primary.name)
        if count > 1 and index != 1:  # a later part names the same model as its first
            primary = next((f for f in files if split_info(f.name)[:2] == split_info(primary.name)[:2]
                            and split_info(f.name)[2:] == (1, count)), primary)
    else:
        found = _find_model(files, quant)
        if found is None:
            if quant:
                raise FileNotFound(f"no GGUF file with the quant {quant!r}; there are: {_available(files)}")
            raise FileNotFound("the repo has no GGUF model file")
        primary = found
    model_files = _parts(files, primary)
    tag = quant.upper() if quant else (split_info(primary.name)[1] or None)
    mmproj = _find_mmproj(files, primary.name) if is_model_file(primary.name) else None
    return Choice(model_files=model_files, mmproj=mmproj, quant=tag)


def quant_options(files: Iterable[HubFile]) -> list[QuantOption]:
    """Each model quant in the repo with its parts and total size, smallest first."""
    groups: dict[tuple[str, int], list[HubFile]] = {}
    for f in files:
        if is_model_file(f.name):
            prefix, _, _, count = split_info(f.name)
            groups.setdefault((prefix, count), []).append(f)
    options = []
    for (prefix, _count), members in groups.items():
        members.sort(key=lambda f: split_info(f.name)[2])
        tag = split_info(members[0].name)[1] or posixpath.basename(prefix)
        options.append(QuantOption(tag, tuple(members), sum(f.size for f in members)))
    options.sort(key=lambda o: (o.size, o.tag))
    return options
