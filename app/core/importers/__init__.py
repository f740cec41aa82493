"""Import the models of another model manager as Siesta recipes: llama-swap or Lemonade.

:func:`import_config` reads one configuration and writes one recipe per model it can
carry over. It returns an :class:`ImportResult`: the recipe files created, and a list of
``"name: reason"`` lines for everything that could not be carried over. A line that says
``not imported`` means the whole model was left out; any other line names a setting that
was dropped or changed while the model itself was imported. Lines about the configuration
as a whole are named after the file (``config.yaml: ...``) or the group
(``group NAME: ...``).

Decisions where the source formats and Siesta differ:

* **Existing recipes are never overwritten, and never duplicated.** A model whose recipe
  name is already taken is skipped (``not imported: recipes/NAME.toml already exists``),
  so running the same import twice changes nothing. Two models of one import whose names
  clean up to the same recipe name get ``-2``, ``-3``, ... instead.
* **Names.** A model's name becomes its recipe name when it is a valid one (letters,
  digits, ``.``, ``_``, ``-``); otherwise it is cleaned up with
  :func:`app.core.discovery.recipe_name_for` and the change is reported, because clients
  must then ask for the new name.
* Every recipe starts with a comment saying what it was imported from, and is checked
  with Siesta's own recipe parser before it is written (atomically).

The two formats are read by their own modules, whose docs say how each setting is carried
over: :mod:`.llama_swap` (``config.yaml``, a ``models:`` mapping) and :mod:`.lemonade` (a
folder, or its ``user_models.json``, with ``recipe_options.json`` beside it when present).
:mod:`.recipe_writer` names and writes the recipes; :mod:`.common` holds the result, the
errors and the file reading they share.

No Qt here; ``siesta import PATH`` and the tray menu both use :func:`import_config`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from app.core.importers.common import MAX_CONFIG_BYTES, ImportConfigError, ImportResult, parse_yaml, read_text
from app.core.importers.lemonade import import_lemonade
from app.core.importers.llama_swap import LLAMA_SWAP_DEFAULT_GROUP, NO_HEALTH_CHECK_PATH, import_llama_swap

__all__ = [
    "ImportResult", "ImportConfigError", "import_config", "detect_format",
    "import_llama_swap", "import_lemonade", "find_import_candidates",
    "LLAMA_SWAP_DEFAULT_GROUP", "MAX_CONFIG_BYTES", "NO_HEALTH_CHECK_PATH",
]


def detect_format(path: Path) -> tuple[str, Path]:
    """``("llama-swap", config file)`` or ``("lemonade", user_models.json)`` for ``path``.

    ``path`` may be a llama-swap YAML file, a Lemonade ``user_models.json`` (or its
    ``recipe_options.json``), or a folder holding one of them.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "user_models.json").is_file():
            return "lemonade", path / "user_models.json"
        for name in ("config.yaml", "config.yml"):
            if (path / name).is_file():
                return "llama-swap", path / name
        raise ImportConfigError(
            f"{path}: no Lemonade user_models.json or llama-swap config.yaml in this folder"
        )
    if not path.is_file():
        raise ImportConfigError(f"{path}: file not found")
    lower = path.name.lower()
    if lower == "recipe_options.json":
        sibling = path.with_name("user_models.json")
        if sibling.is_file():
            return "lemonade", sibling
        raise ImportConfigError(f"{path}: Lemonade's recipe_options.json needs user_models.json beside it")
    if lower.endswith(".json"):
        return "lemonade", path
    if lower.endswith((".yaml", ".yml")):
        return "llama-swap", path
    text = read_text(path)
    try:
        json.loads(text)
        return "lemonade", path
    except ValueError:
        pass
    data = parse_yaml(path, text)
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        return "llama-swap", path
    raise ImportConfigError(f"{path}: not a llama-swap config.yaml or a Lemonade user_models.json")


def import_config(
    path: Path,
    recipes_dir: Path,
    *,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ImportResult:
    """Imports a llama-swap config or a Lemonade folder into ``recipes_dir``.

    ``home`` (default: the user's home) is where Lemonade's Hugging Face cache is looked
    up; ``env`` (default ``os.environ``) supplies ``HF_HOME``-style variables and
    llama-swap's ``${env.VAR}`` macros. Raises ImportConfigError when the file cannot be
    read or is neither format; problems with single models go into ``skipped``.
    """
    kind, file = detect_format(path)
    if kind == "lemonade":
        return import_lemonade(file, recipes_dir, home=home, env=env)
    return import_llama_swap(file, recipes_dir, env=env)


def find_import_candidates(home: Path | None = None) -> list[Path]:
    """Existing configurations in their usual places, for a menu to offer first."""
    home = Path.home() if home is None else home
    candidates = [
        home / ".cache" / "lemonade" / "user_models.json",
        home / ".config" / "lemonade" / "user_models.json",
        home / ".config" / "llama-swap" / "config.yaml",
        home / "llama-swap" / "config.yaml",
    ]
    return [p for p in candidates if p.is_file()]
