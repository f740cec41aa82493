"""Import Lemonade's llama.cpp user models as ``llamacpp`` recipes.

The input is a Lemonade folder, or its ``user_models.json``, with ``recipe_options.json``
beside it when present.

* Only ``recipe: llamacpp`` models are imported; others are reported with their engine.
* ``checkpoint`` ``org/repo:file.gguf`` or ``org/repo:QUANT`` is looked up in the Hugging
  Face hub cache under ``home`` (``models--org--repo/snapshots/<rev>/``; the newest
  snapshot that has it wins). When no GGUF is found the model is skipped with reason
  ``model file not found in the Hugging Face cache: CHECKPOINT``, so no broken recipe is
  left behind. An ``mmproj`` from the same repo becomes ``--mmproj PATH``.
* From ``recipe_options.json`` (keyed ``user.NAME``): ``ctx_size`` becomes
  ``args = ["--ctx-size", "N"]``, ``llamacpp_args`` (one string) is split and appended.
  ``auto_evict: true`` with ``evict_idle_timeout`` becomes ``unload_timeout``;
  ``auto_evict: false`` (never evict this model) becomes ``unload_timeout = "never"``;
  ``auto_evict`` null or absent leaves the key out (the global timeout applies).
  ``llamacpp_backend`` is reported (Siesta runs one llama-server build), as are options
  of built-in models, which are not user models.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.core.config.durations import DurationError, format_duration, parse_duration
from app.core.discovery import hf_hub_caches, is_gguf_file
from app.core.importers.common import ImportConfigError, ImportResult, NotImported, load_json
from app.core.importers.recipe_writer import RecipeWriter

_USER_MODEL_QUIET = {"checkpoint", "recipe", "mmproj", "labels", "source", "size", "reasoning", "vision",
                     "suggested", "downloaded", "model_name", "name"}
_LABEL_ARGS = {"embeddings": "--embeddings", "reranking": "--reranking"}


def _snapshots(repo: str, home: Path, env: Mapping[str, str]) -> list[Path]:
    """The snapshot folders of a hub repo, newest first, across the hub caches."""
    folder = "models--" + repo.replace("/", "--")
    out: list[tuple[float, Path]] = []
    for hub in hf_hub_caches(home, env):
        try:
            revisions = [p for p in (hub / folder / "snapshots").iterdir() if p.is_dir()]
        except OSError:
            continue
        for rev in revisions:
            try:
                out.append((rev.stat().st_mtime, rev))
            except OSError:
                continue
    out.sort(key=lambda t: (-t[0], str(t[1])))
    return [p for _, p in out]


def _safe_relative(text: str) -> bool:
    parts = Path(text).parts
    return bool(parts) and not Path(text).is_absolute() and ".." not in parts and not text.startswith("~")


def _first_shard_ok(path: Path) -> bool:
    m = re.search(r"-(\d{5})-of-\d{5}\.gguf$", path.name, re.IGNORECASE)
    return m is None or int(m[1]) == 1


def _resolve_checkpoint(checkpoint: str, home: Path, env: Mapping[str, str]) -> Path | None:
    """The GGUF file a Lemonade checkpoint names, in the hub cache; None when not there."""
    local = Path(checkpoint).expanduser() if checkpoint.startswith(("/", "~")) else None
    if local is not None:
        return local if local.suffix.lower() == ".gguf" and is_gguf_file(local) else None
    repo, _, variant = checkpoint.partition(":")
    repo, variant = repo.strip(), variant.strip()
    if repo.count("/") != 1 or not all(repo.split("/")):
        return None
    for snapshot in _snapshots(repo, home, env):
        if variant.lower().endswith(".gguf"):
            if not _safe_relative(variant):
                return None
            candidate = snapshot / variant
            if is_gguf_file(candidate):
                return candidate
            continue
        files = sorted(
            p for p in snapshot.rglob("*")
            if p.name.lower().endswith(".gguf") and "mmproj" not in p.name.lower() and _first_shard_ok(p)
        )
        if variant:
            pattern = re.compile(r"(?<![a-z0-9])" + re.escape(variant.lower()) + r"(?![a-z0-9])")
            files = [p for p in files if pattern.search(str(p.relative_to(snapshot)).lower())]
        elif len(files) > 1:
            continue  # no variant and several files: ambiguous
        for candidate in files:
            if is_gguf_file(candidate):
                return candidate
    return None


def _resolve_mmproj(repo: str, mmproj: str, home: Path, env: Mapping[str, str]) -> Path | None:
    if not _safe_relative(mmproj):
        return None
    for snapshot in _snapshots(repo, home, env):
        if is_gguf_file(snapshot / mmproj):
            return snapshot / mmproj
    return None


def import_lemonade(
    user_models: Path,
    recipes_dir: Path,
    *,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ImportResult:
    """Imports Lemonade's llama.cpp user models (with ``recipe_options.json`` beside the
    file, when present) as ``llamacpp`` recipes (see the module doc)."""
    home = Path.home() if home is None else Path(home)
    env = os.environ if env is None else env
    user_models = Path(user_models)
    models = load_json(user_models)
    if not isinstance(models, dict):
        raise ImportConfigError(f"{user_models}: not Lemonade's user_models.json (expected an object of models)")
    result = ImportResult(kind="lemonade")
    writer = RecipeWriter(recipes_dir, result)
    options_file = user_models.with_name("recipe_options.json")
    options: dict[str, Any] = {}
    if options_file.is_file():
        try:
            loaded = load_json(options_file)
            if isinstance(loaded, dict):
                options = loaded
            else:
                result.skipped.append(f"{options_file.name}: not an object of options; ignored")
        except ImportConfigError as exc:
            result.skipped.append(f"{options_file.name}: ignored: {exc}")

    for key in options:
        prefix, _, rest = str(key).partition(".")
        if prefix == "user" and rest in models:
            continue
        if prefix == "user":
            result.skipped.append(f"{key}: not imported: options for a model that is not in {user_models.name}")
        else:
            result.skipped.append(f"{key}: not imported: options for a Lemonade {prefix or 'other'} model "
                                  "(only user models are imported)")

    for model_name, entry in models.items():
        model_name = str(model_name)
        notes: list[str] = []
        try:
            if not isinstance(entry, dict):
                raise NotImported("its settings are not an object")
            recipe = entry.get("recipe")
            if recipe != "llamacpp":
                raise NotImported(
                    f"recipe {recipe!r} is not llamacpp (Siesta runs llama.cpp models; use a command recipe by hand)"
                    if recipe else "no recipe given"
                )
            checkpoint = entry.get("checkpoint")
            if not isinstance(checkpoint, str) or not checkpoint.strip():
                raise NotImported("no checkpoint given")
            checkpoint = checkpoint.strip()
            model_file = _resolve_checkpoint(checkpoint, home, env)
            if model_file is None:
                raise NotImported(f"model file not found in the Hugging Face cache: {checkpoint}")
            args: list[str] = []
            mmproj = entry.get("mmproj")
            if isinstance(mmproj, str) and mmproj.strip():
                found = _resolve_mmproj(checkpoint.partition(":")[0], mmproj.strip(), home, env)
                if found is not None:
                    args += ["--mmproj", str(Path(os.path.abspath(found)))]
                else:
                    notes.append(f"mmproj {mmproj!r} could not be mapped: not found in the Hugging Face cache")
            labels = entry.get("labels") if isinstance(entry.get("labels"), list) else []
            for label, flag in _LABEL_ARGS.items():
                if label in labels:
                    args.append(flag)
            for key in entry:
                if key not in _USER_MODEL_QUIET:
                    notes.append(f"{key} could not be mapped")

            opts = options.get(f"user.{model_name}")
            fields: dict[str, Any] = {"backend": "llamacpp", "model": str(Path(os.path.abspath(model_file)))}
            if isinstance(opts, dict):
                args += _lemonade_options(opts, fields, notes)
            elif opts is not None:
                notes.append("its recipe_options entry is not an object; ignored")
            if args:
                fields["args"] = args
            # keep the documented key order: backend, model, args, unload_timeout
            fields = {k: fields[k] for k in ("backend", "model", "args", "unload_timeout") if k in fields}
        except NotImported as exc:
            result.skipped.append(f"{model_name}: not imported: {exc}")
            continue
        name = writer.name_for(model_name)
        comments = [f"Imported from Lemonade user model 'user.{model_name}' ({checkpoint}) in {user_models.resolve()}"]
        writer.write(model_name, name, comments, fields, notes)
    return result


def _lemonade_options(opts: dict[str, Any], fields: dict[str, Any], notes: list[str]) -> list[str]:
    """Reads one model's recipe_options: returns llama-server args; sets unload_timeout."""
    args: list[str] = []
    ctx = opts.get("ctx_size")
    if ctx is not None:
        if isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0:
            args += ["--ctx-size", str(ctx)]
        else:
            notes.append(f"ctx_size {ctx!r} could not be mapped (expected a positive whole number)")
    extra = opts.get("llamacpp_args")
    if isinstance(extra, str) and extra.strip():
        try:
            args += shlex.split(extra)
        except ValueError as exc:
            notes.append(f"llamacpp_args {extra!r} could not be mapped: {exc}")
    elif isinstance(extra, list) and all(isinstance(a, str) for a in extra):
        args += extra
    elif extra not in (None, ""):
        notes.append(f"llamacpp_args {extra!r} could not be mapped")
    backend = opts.get("llamacpp_backend")
    if backend:
        notes.append(f"llamacpp_backend {backend!r} could not be mapped "
                     "(Siesta runs one llama-server build: set llama_server)")
    auto_evict = opts.get("auto_evict")
    idle = opts.get("evict_idle_timeout")
    if auto_evict is True:
        if idle is None:
            notes.append("auto_evict without evict_idle_timeout: the global timeout applies")
        else:
            try:
                fields["unload_timeout"] = format_duration(parse_duration(idle))
            except DurationError as exc:
                notes.append(f"evict_idle_timeout could not be mapped: {exc}")
    elif auto_evict is False:
        fields["unload_timeout"] = "never"
    elif auto_evict is not None:
        notes.append(f"auto_evict {auto_evict!r} could not be mapped (expected true, false or null)")
    elif idle is not None:
        notes.append("evict_idle_timeout ignored: auto_evict is not set, so Lemonade's global setting applied; "
                     "the global timeout applies")
    for key in opts:
        if key not in ("ctx_size", "llamacpp_args", "llamacpp_backend", "auto_evict", "evict_idle_timeout"):
            notes.append(f"{key} could not be mapped")
    return args
