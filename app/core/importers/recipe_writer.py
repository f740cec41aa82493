"""Names and writes the recipes of one import, filling its ImportResult.

Existing recipes are never overwritten, and never duplicated: a model whose recipe name is
already taken is skipped, and two models of one import whose names clean up to the same
recipe name get ``-2``, ``-3``, ... instead. Every recipe is checked with Siesta's own
recipe parser before it is written (atomically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.config.recipes import RecipeError, is_valid_name
from app.core.discovery import recipe_name_for, render_recipe, write_new_recipe
from app.core.importers.common import ImportResult


class RecipeWriter:
    """Picks recipe names for one import and writes the recipes, filling an ImportResult."""

    def __init__(self, recipes_dir: Path, result: ImportResult) -> None:
        self.recipes_dir = recipes_dir
        self.result = result
        self._taken: set[str] = set()

    def name_for(self, source_name: str) -> str:
        base = source_name if is_valid_name(source_name) else recipe_name_for(source_name)
        n, name = 1, base
        while name.lower() in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name.lower())
        return name

    def write(self, source_name: str, name: str, comments: list[str], fields: dict[str, Any],
              notes: list[str]) -> None:
        """Writes one recipe; on success, the model's notes go into ``skipped``."""
        text = render_recipe(comments, fields)
        try:
            created = write_new_recipe(self.recipes_dir, name, text, suffix=False)
        except RecipeError as exc:
            self.result.skipped.append(f"{source_name}: not imported: {exc}")
            return
        except OSError as exc:
            self.result.skipped.append(f"{source_name}: not imported: cannot write the recipe: {exc.strerror or exc}")
            return
        if created is None:
            self.result.skipped.append(
                f"{source_name}: not imported: recipes/{name}.toml already exists (left unchanged)"
            )
        else:
            self.result.created.append(created)
            if name != source_name:
                self.result.skipped.append(
                    f"{source_name}: imported as {name!r} (a recipe name may use letters, digits, "
                    f"'.', '_' and '-'); clients must ask for {name!r}"
                )
            self.result.skipped.extend(f"{source_name}: {note}" for note in notes)
