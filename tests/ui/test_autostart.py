"""Start at login writes and removes $XDG_CONFIG_HOME/autostart/siesta.desktop."""

from __future__ import annotations

import configparser
from pathlib import Path

from app.ui import autostart


def test_entry_lives_in_xdg_config_home(isolated_home: Path) -> None:
    assert autostart.entry_path() == isolated_home / ".config" / "autostart" / "siesta.desktop"


def test_enable_writes_a_valid_desktop_entry_and_disable_removes_it(tmp_path: Path) -> None:
    assert not autostart.is_enabled()
    config_dir = tmp_path / "my config"
    autostart.set_enabled(True, config_dir, icon="/icons/siesta.svg")
    assert autostart.is_enabled()
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(autostart.entry_path())
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Siesta"
    assert entry["Icon"] == "/icons/siesta.svg"
    assert entry["Exec"].endswith(f'--config-dir "{config_dir}"')
    autostart.set_enabled(False)
    assert not autostart.entry_path().exists()
    assert not autostart.is_enabled()
    autostart.set_enabled(False)  # removing twice is fine


def test_an_entry_hidden_by_the_desktop_counts_as_off() -> None:
    autostart.set_enabled(True)
    path = autostart.entry_path()
    path.write_text(path.read_text() + "Hidden=true\n")
    assert not autostart.is_enabled()


def test_default_config_dir_needs_no_argument(tmp_path: Path) -> None:
    import platformdirs

    assert autostart.config_dir_argument(Path(platformdirs.user_config_dir("siesta"))) is None
    assert autostart.config_dir_argument(tmp_path) == tmp_path
