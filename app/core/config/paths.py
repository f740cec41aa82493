"""Where Siesta keeps its files: the config dir (settings.toml, recipes/), logs and data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "siesta"


@dataclass(frozen=True)
class Paths:
    """The folders one Siesta instance uses; tests point all of them at temporary dirs."""

    config_dir: Path
    log_dir: Path
    data_dir: Path
    state_dir: Path | None = None  # what Siesta learns as it runs; default: data_dir / "state"

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.toml"

    @property
    def recipes_dir(self) -> Path:
        return self.config_dir / "recipes"

    def recipe_file(self, name: str) -> Path:
        return self.recipes_dir / f"{name}.toml"

    def model_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def memory_file(self) -> Path:
        """What each recipe was measured to use after a load, remembered across restarts."""
        return (self.state_dir or self.data_dir / "state") / "memory.json"

    @property
    def history_file(self) -> Path:
        """One line per load and unload (app/core/metrics/history.py), rotated at 1 MB."""
        return (self.state_dir or self.data_dir / "state") / "history.jsonl"

    @classmethod
    def resolve(cls, config_dir: str | os.PathLike[str] | None = None) -> "Paths":
        """``--config-dir``, else ``SIESTA_CONFIG_DIR``, else the platform's user config dir."""
        chosen = config_dir or os.environ.get("SIESTA_CONFIG_DIR")
        config = Path(chosen).expanduser() if chosen else Path(platformdirs.user_config_dir(APP_NAME))
        return cls(
            config_dir=config,
            log_dir=Path(platformdirs.user_log_dir(APP_NAME)),
            data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
            state_dir=Path(platformdirs.user_state_dir(APP_NAME)),
        )


def engine_cache_dir() -> Path:
    """Where scripts/build-llama-server.sh caches its builds (``SIESTA_ENGINE_CACHE`` overrides)."""
    override = os.environ.get("SIESTA_ENGINE_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME)) / "engine"
