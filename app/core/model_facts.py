"""What Siesta can tell about a local model without loading it, for the clients that ask
(Ollama's ``/api/tags``, ``/api/ps`` and ``/api/show`` on the front door).

* **Its file:** size (every part of a split model), modification time, and a digest: the
  sha256 of the file's path, size and modification time (``path\\0size\\0mtime_ns``). It
  is a stable id that changes when the file is replaced; it is never a hash of the file's
  contents, which would mean reading gigabytes on every listing.
* **Its GGUF header** (:func:`~app.core.memory.gguf_estimate.read_gguf`: only the header's
  pages are read): the architecture (Ollama's *family*), the parameter count as Ollama
  writes it (``7.6B``), the quantization named from ``general.file_type`` as Ollama names
  it (``Q4_K_M``), the context length, the chat template, and the metadata for
  ``model_info``.
* **Its recipe:** the capabilities (``completion``, or ``embedding`` for a server started
  with ``--embedding`` or a model with a pooling type; ``vision`` with an ``--mmproj``;
  ``tools`` and ``thinking`` from the chat template, by Ollama's own tests) and the
  arguments as text, secrets hidden.

The header's facts are cached by (path, size, mtime), so a client polling ``/api/tags``
costs one ``stat`` per model. Plain functions that block: call them from a worker thread.
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.config.recipes import Recipe
from app.core.config.redact import redact_args
from app.core.memory.gguf_estimate import read_gguf
from app.core.models.llama_args import ArgsError, LlamaArgs

# llama.cpp's llama_ftype, named as Ollama's fs/ggml FileType.String() names them (2, 3, 7,
# ... are the legacy quants; 4-6 and 33-35 were removed from llama.cpp).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}
EMBEDDING_FLAGS = frozenset({"--embedding", "--embeddings"})
MAX_LISTED_ITEMS = 5  # a longer array in model_info is shown as [], as Ollama shows it unless "verbose"
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_CACHE_SIZE = 256


@dataclass(frozen=True)
class FileFacts:
    """A model file as a listing shows it."""

    path: Path
    size: int  # bytes, every part of a split model
    modified: float  # Unix time of the last change
    digest: str  # 64 hex digits: sha256 of path, size and mtime (see the module's docstring)


@dataclass(frozen=True)
class GgufFacts:
    """What a GGUF header says about its model, in the words Ollama's API uses."""

    family: str  # general.architecture
    parameter_count: int
    parameter_size: str  # "7.6B"; "" when the header has no tensors
    quantization_level: str  # "Q4_K_M"; "unknown" for a file type Ollama does not name
    context_length: int | None  # what the model was trained for
    chat_template: str
    pooling: bool  # an embedding model (ARCH.pooling_type)
    vision: bool  # a vision tower in the file itself (ARCH.vision.block_count)
    model_info: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class ModelFacts:
    """A local model's facts: its file's, its header's (None when it has no GGUF file or the
    header cannot be read: ``error`` says why) and its recipe's."""

    name: str
    file: FileFacts | None
    gguf: GgufFacts | None
    capabilities: tuple[str, ...]
    parameters: str  # the recipe's arguments, one option a line, secrets hidden
    context_length: int | None  # what the server is started with (ctx-size), else the model's
    error: str | None = None
    recipe_file: FileFacts | None = None  # the recipe's own file: a model without a GGUF file is known by it

    @property
    def listed(self) -> FileFacts | None:
        """The file a listing shows for the model: its GGUF file, else its recipe file
        (whose size then says nothing of the model: callers show 0)."""
        return self.file or self.recipe_file


def human_number(count: int) -> str:
    """A parameter count as Ollama writes it (``format.HumanNumber``): ``7B``, ``7.6B``,
    ``494.03M``, ``155K``, ``999``."""
    if count >= 1_000_000_000:
        number = count / 1_000_000_000
        return f"{number:.0f}B" if number == math.floor(number) else f"{number:.1f}B"
    if count >= 1_000_000:
        number = count / 1_000_000
        return f"{number:.0f}M" if number == math.floor(number) else f"{number:.2f}M"
    if count >= 1000:
        return f"{count / 1000:.0f}K"
    return str(count)


def file_type_name(file_type: object) -> str:
    """``general.file_type`` named as Ollama names it (``15`` -> ``Q4_K_M``); ``unknown``."""
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        return FILE_TYPES.get(file_type, "unknown")
    return "unknown"


def template_capabilities(template: str) -> list[str]:
    """``tools`` and ``thinking`` as Ollama reads them from a Jinja chat template
    (``chatTemplateHasToolSupport`` and ``chatTemplateHasThinkingSupport`` in its
    server/images.go, 0.32)."""
    found = []
    if "tools" in template or "tool_call" in template:
        found.append("tools")
    split_at_think = "content.split('</think>')" in template or 'content.split("</think>")' in template
    if ("<think>" in template and "</think>" in template) or (
            split_at_think and "reasoning_content" not in template and "<SPECIAL_12>" not in template):
        found.append("thinking")
    return found


def file_facts(path: Path) -> FileFacts:
    """``path``'s size (with its other parts, for a split model), modification time and
    digest; OSError when it cannot be read."""
    path = Path(path)
    st = path.stat()
    size = st.st_size
    shard = _SHARD.match(path.name)
    if shard and shard["index"] == "00001":
        for i in range(2, int(shard["total"]) + 1):
            part = path.with_name(f"{shard['prefix']}-{i:05d}-of-{shard['total']}.gguf")
            try:
                size += part.stat().st_size
            except OSError:
                pass  # a part missing: the model does not load, but the listing still shows it
    key = f"{path}\0{size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape")
    return FileFacts(path, size, st.st_mtime, hashlib.sha256(key).hexdigest())


_cache: dict[tuple[str, int, int], GgufFacts] = {}
_cache_lock = threading.Lock()


def gguf_facts(path: Path) -> GgufFacts:
    """What the GGUF header of ``path`` says, cached by (path, size, mtime); OSError or
    ValueError when it cannot be read."""
    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    info = read_gguf(path)
    meta = info.meta
    arch = meta.get("general.architecture")
    family = arch if isinstance(arch, str) else ""
    template = meta.get("tokenizer.chat_template")
    context = meta.get(f"{family}.context_length")
    facts = GgufFacts(
        family=family,
        parameter_count=info.parameters,
        parameter_size=human_number(info.parameters) if info.parameters else "",
        quantization_level=file_type_name(meta.get("general.file_type")),
        context_length=context if isinstance(context, int) and not isinstance(context, bool) else None,
        chat_template=template if isinstance(template, str) else "",
        pooling=f"{family}.pooling_type" in meta,
        vision=f"{family}.vision.block_count" in meta,
        model_info=_model_info(meta, info.unkept_arrays, info.parameters),
    )
    with _cache_lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))  # forget the oldest
        _cache[key] = facts
    return facts


def _model_info(meta: dict[str, Any], unkept: frozenset[str], parameters: int) -> dict[str, Any]:
    """The header's metadata as Ollama's ``/api/show`` gives it: without ``general.name``
    and the chat template (shown as ``template``), with ``general.parameter_count``, other
    arrays longer than :data:`MAX_LISTED_ITEMS` as ``[]``, and what JSON cannot carry (NaN,
    infinities) as null. The tokenizer's arrays (a vocabulary is 150,000 strings), which the
    header reader keeps only as their length, are left out."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key == "general.name" or key.startswith("tokenizer.chat_template"):
            continue
        if key in unkept:  # the vocabulary, scores, merges: only their length was read
            continue
        if isinstance(value, list) and len(value) > MAX_LISTED_ITEMS:
            out[key] = []
        elif isinstance(value, list):
            out[key] = [_json_value(v) for v in value]
        else:
            out[key] = _json_value(value)
    out["general.parameter_count"] = parameters
    return out


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def args_text(args: Sequence[str]) -> str:
    """A recipe's arguments as text, one option and its values a line (``--ctx-size 4096``),
    quoted as a shell would need and with secrets (``--api-key X``) hidden."""
    lines: list[list[str]] = []
    for token in redact_args(args):
        if token.startswith("-") and not _is_number(token) or not lines:
            lines.append([token])
        else:
            lines[-1].append(token)
    return "\n".join(shlex.join(line) for line in lines)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_args(tokens: Sequence[str]) -> LlamaArgs:
    try:
        return LlamaArgs.parse(tokens)
    except ArgsError:
        return LlamaArgs()


def model_path(recipe: Recipe) -> Path | None:
    """The GGUF file a recipe serves: its ``model``; for a ``command`` recipe, the file its
    command passes with ``-m``/``--model`` when there is one (relative to the recipe's folder)."""
    if recipe.model is not None:
        return recipe.model
    named = _parse_args(recipe.command).model
    if not named or "{" in named:  # a placeholder Siesta fills in at launch
        return None
    path = Path(named).expanduser()
    return path if path.is_absolute() else recipe.path.parent / path


def model_facts(recipe: Recipe) -> ModelFacts:
    """Everything :class:`ModelFacts` holds for the model of ``recipe``; a file or header
    that cannot be read leaves those facts out and says why in ``error``."""
    tokens = recipe.args if recipe.model is not None else recipe.command
    args = _parse_args(tokens)
    path = model_path(recipe)
    file: FileFacts | None = None
    gguf: GgufFacts | None = None
    error = None
    if path is not None:
        try:
            file = file_facts(path)
            gguf = gguf_facts(path)
        except (OSError, ValueError) as exc:
            error = f"{path}: {exc}" if str(path) not in str(exc) else str(exc)
    embedding = bool(EMBEDDING_FLAGS & set(tokens)) or (gguf is not None and gguf.pooling)
    capabilities = ["embedding" if embedding else "completion"]
    if args.mmproj or (gguf is not None and gguf.vision):
        capabilities.append("vision")
    if gguf is not None and not embedding:
        capabilities += template_capabilities(gguf.chat_template)
    ctx = args.ctx_size if args.ctx_size else (gguf.context_length if gguf is not None else None)
    recipe_file = None
    if file is None:
        try:
            recipe_file = file_facts(recipe.path)
        except OSError:
            pass  # removed since it was read: the model goes with the next listing
    return ModelFacts(recipe.name, file, gguf, tuple(capabilities), args_text(tokens), ctx, error, recipe_file)
