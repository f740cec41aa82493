"""Start at login: an XDG autostart entry, ``$XDG_CONFIG_HOME/autostart/siesta.desktop``.

Linux desktops (GNOME, KDE, XFCE, ...) start every ``.desktop`` file in that folder when
the user logs in. Turning the option on writes the entry; turning it off removes it.
Whether the option is on is read from the file itself, so an entry removed by hand, or by
the desktop's own "startup applications" tool, shows as off. An entry the desktop has
disabled with ``Hidden=true`` counts as off too.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import platformdirs

from app.core.atomic_write import write_text_atomic
from app.core.paths import APP_NAME

ENTRY_NAME = "siesta.desktop"


def autostart_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart"


def entry_path() -> Path:
    return autostart_dir() / ENTRY_NAME


def config_dir_argument(config_dir: Path) -> Path | None:
    """``config_dir`` when it is not the default one (so the login session must be told), else None."""
    default = Path(platformdirs.user_config_dir(APP_NAME))
    try:
        same = config_dir.resolve() == default.resolve()
    except OSError:
        same = config_dir == default
    return None if same else config_dir


def launch_command(config_dir: Path | None = None) -> list[str]:
    """How the login session should start Siesta: the ``siesta`` script when it is on PATH,
    else this Python running ``-m app``; with ``--config-dir`` when one was chosen."""
    script = shutil.which("siesta")
    command = [script] if script else [sys.executable, "-m", "app"]
    if config_dir is not None:
        command += ["--config-dir", str(config_dir)]
    return command


def _exec_line(command: list[str]) -> str:
    # The desktop entry spec quotes like a shell but reserves a few more characters.
    parts = []
    for arg in command:
        if arg and all(c.isalnum() or c in "/._-+=:," for c in arg):
            parts.append(arg)
        else:
            escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
            parts.append(f'"{escaped}"')
    return " ".join(parts).replace("%", "%%")


def desktop_entry(command: list[str], icon: str = "siesta") -> str:
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=Siesta\n"
        "Comment=Runs local model servers on demand and unloads them when idle\n"
        f"Exec={_exec_line(command)}\n"
        f"Icon={icon}\n"
        "Terminal=false\n"
        "Categories=Utility;\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


def is_enabled() -> bool:
    path = entry_path()
    try:
        content = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    except OSError:
        return False
    lines = {line.strip().replace(" ", "") for line in content.splitlines()}
    return "Hidden=true" not in lines and "X-GNOME-Autostart-enabled=false" not in lines


def set_enabled(enabled: bool, config_dir: Path | None = None, icon: str = "siesta") -> None:
    """Writes or removes the autostart entry; OSError says why it could not.

    ``icon`` is an icon name or the absolute path of an image (Siesta installs no themed icon)."""
    path = entry_path()
    if enabled:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, desktop_entry(launch_command(config_dir), icon))
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

