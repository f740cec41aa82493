"""Start at login, through each platform's own mechanism.

* **Linux and other XDG desktops** (GNOME, KDE, XFCE, ...): the entry
  ``$XDG_CONFIG_HOME/autostart/siesta.desktop``, which the desktop starts when the user
  logs in. An entry the desktop has disabled with ``Hidden=true`` counts as off.
* **macOS**: a LaunchAgent, ``~/Library/LaunchAgents/io.github.siesta.Siesta.plist`` with
  ``RunAtLoad``, which launchd loads (and so starts Siesta) at the next login; writing it
  does not start a second Siesta now. ``packaging/macos/io.github.siesta.Siesta.plist`` is
  the same agent as a template (tests/test_packaging.py keeps the two in step). An agent
  with ``Disabled`` set counts as off.
* **Windows**: the value ``Siesta`` under ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``,
  the command line Windows runs at login (``pythonw.exe -m app``: no console window). Task
  Manager's "Disable" marks it under ``...\\Explorer\\StartupApproved\\Run`` (a value whose
  first byte is odd); that counts as off, and turning the option on clears the mark.

Turning the option on writes the entry, turning it off removes it, and whether it is on
is read back from the entry itself, so one removed by hand or by the desktop's own tool
shows as off. :func:`login_entry` picks the mechanism for ``sys.platform``; the functions
the Settings dialog calls (:func:`entry_path`, :func:`is_enabled`, :func:`set_enabled`)
go through it, which is where tests put another platform, and for Windows a registry
that only records what would be written.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any, Protocol

import platformdirs

from app.core.config.atomic_write import write_text_atomic
from app.core.config.paths import APP_NAME

ENTRY_NAME = "siesta.desktop"
AGENT_LABEL = "io.github.siesta.Siesta"  # the app id, as in packaging/
# launchd starts agents with only /usr/bin:/bin:/usr/sbin:/sbin on PATH; Homebrew's
# folders hold the llama-server `brew install llama.cpp` puts there.
LAUNCHD_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
RUN_VALUE = "Siesta"


def autostart_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart"


def config_dir_argument(config_dir: Path) -> Path | None:
    """``config_dir`` when it is not the default one (so the login session must be told), else None."""
    default = Path(platformdirs.user_config_dir(APP_NAME))
    try:
        same = config_dir.resolve() == default.resolve()
    except OSError:
        same = config_dir == default
    return None if same else config_dir


def launch_command(config_dir: Path | None = None, platform: str | None = None) -> list[str]:
    """How the login session should start Siesta: a bundle's own executable (on Windows its
    windowless ``siestaw.exe``, beside the console ``siesta.exe``: packaging/siesta.spec); on
    Windows ``pythonw.exe -m app`` (pip's ``siesta.exe`` is a console program and would keep a
    console window open); elsewhere the ``siesta`` script when it is on PATH, else this
    Python running ``-m app``. With ``--config-dir`` when one was chosen."""
    platform = sys.platform if platform is None else platform
    if getattr(sys, "frozen", False):  # a PyInstaller bundle: sys.executable is Siesta itself
        windowless = Path(sys.executable).with_name("siestaw.exe")
        command = [str(windowless) if platform == "win32" and windowless.is_file() else sys.executable]
    elif platform == "win32":
        windowless = Path(sys.executable).with_name("pythonw.exe")
        command = [str(windowless) if windowless.is_file() else sys.executable, "-m", "app"]
    else:
        script = shutil.which("siesta")
        command = [script] if script else [sys.executable, "-m", "app"]
    if config_dir is not None:
        command += ["--config-dir", str(config_dir)]
    return command


class LoginEntry(Protocol):
    """One platform's way of starting Siesta at login."""

    platform: str

    @property
    def location(self) -> PurePath:
        """Where the entry lives (a file, or a registry value), to tell the user."""

    def is_enabled(self) -> bool: ...

    def enable(self, command: list[str], icon: str) -> None:
        """Writes the entry; OSError says why it could not."""

    def disable(self) -> None:
        """Removes the entry (nothing to remove is fine); OSError says why it could not."""


# ---- Linux and other XDG desktops ----------------------------------------------------------------


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


class XdgAutostart:
    """``$XDG_CONFIG_HOME/autostart/siesta.desktop``."""

    platform = "linux"

    @property
    def location(self) -> Path:
        return autostart_dir() / ENTRY_NAME

    def is_enabled(self) -> bool:
        try:
            content = self.location.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        lines = {line.strip().replace(" ", "") for line in content.splitlines()}
        return "Hidden=true" not in lines and "X-GNOME-Autostart-enabled=false" not in lines

    def enable(self, command: list[str], icon: str) -> None:
        """``icon`` is an icon name or the absolute path of an image (Siesta installs no themed icon)."""
        write_text_atomic(self.location, desktop_entry(command, icon))

    def disable(self) -> None:
        self.location.unlink(missing_ok=True)


# ---- macOS ----------------------------------------------------------------------------------------


def launch_agent(command: list[str]) -> dict[str, Any]:
    """The LaunchAgent (as a plist's dictionary) that starts ``command`` at login."""
    return {
        "Label": AGENT_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": False,
        "ProcessType": "Interactive",
        "EnvironmentVariables": {"PATH": LAUNCHD_PATH},
    }


class LaunchAgent:
    """``~/Library/LaunchAgents/io.github.siesta.Siesta.plist``."""

    platform = "darwin"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home

    @property
    def location(self) -> Path:
        return (self.home or Path.home()) / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"

    def is_enabled(self) -> bool:
        try:
            with self.location.open("rb") as fh:
                agent = plistlib.load(fh)
        except (OSError, plistlib.InvalidFileException, ValueError):
            return False
        return isinstance(agent, dict) and agent.get("RunAtLoad") is True and not agent.get("Disabled", False)

    def enable(self, command: list[str], icon: str) -> None:
        write_text_atomic(self.location, plistlib.dumps(launch_agent(command)).decode("utf-8"))

    def disable(self) -> None:
        self.location.unlink(missing_ok=True)


# ---- Windows --------------------------------------------------------------------------------------


class Registry(Protocol):
    """The values of ``HKEY_CURRENT_USER`` that start at login reads and writes."""

    def get(self, key: str, name: str) -> Any:
        """The value ``name`` under ``key``, or None when there is none."""

    def set_string(self, key: str, name: str, value: str) -> None: ...

    def delete(self, key: str, name: str) -> None:
        """Removes the value; one that is not there is fine."""


class WindowsRegistry:
    """:class:`Registry` on the real ``HKEY_CURRENT_USER`` (``winreg``, Windows only)."""

    def get(self, key: str, name: str) -> Any:
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key) as handle:
                return winreg.QueryValueEx(handle, name)[0]
        except FileNotFoundError:
            return None

    def set_string(self, key: str, name: str, value: str) -> None:
        import winreg

        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as handle:
            winreg.SetValueEx(handle, name, 0, winreg.REG_SZ, value)

    def delete(self, key: str, name: str) -> None:
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as handle:
                winreg.DeleteValue(handle, name)
        except FileNotFoundError:
            pass


class RunKey:
    """The value ``Siesta`` under ``HKCU\\...\\CurrentVersion\\Run``."""

    platform = "win32"

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else WindowsRegistry()

    @property
    def location(self) -> PureWindowsPath:
        return PureWindowsPath("HKEY_CURRENT_USER", RUN_KEY, RUN_VALUE)

    def is_enabled(self) -> bool:
        try:
            command = self.registry.get(RUN_KEY, RUN_VALUE)
            approval = self.registry.get(APPROVED_KEY, RUN_VALUE)
        except OSError:
            return False
        disabled = isinstance(approval, bytes) and len(approval) > 0 and approval[0] & 1
        return isinstance(command, str) and bool(command.strip()) and not disabled

    def enable(self, command: list[str], icon: str) -> None:
        self.registry.set_string(RUN_KEY, RUN_VALUE, subprocess.list2cmdline(command))
        self.registry.delete(APPROVED_KEY, RUN_VALUE)  # Task Manager's "Disable", if it was set

    def disable(self) -> None:
        self.registry.delete(RUN_KEY, RUN_VALUE)
        self.registry.delete(APPROVED_KEY, RUN_VALUE)


# ---- what the Settings dialog calls -------------------------------------------------------------------


def login_entry(platform: str | None = None, *, registry: Registry | None = None,
                home: Path | None = None) -> LoginEntry:
    """The start-at-login mechanism of ``platform`` (a ``sys.platform`` value; default this one)."""
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return LaunchAgent(home)
    if platform == "win32":
        return RunKey(registry)
    return XdgAutostart()


def entry_path() -> PurePath:
    """Where this platform's entry lives: a file, or on Windows the registry value."""
    return login_entry().location


def is_enabled() -> bool:
    return login_entry().is_enabled()


def set_enabled(enabled: bool, config_dir: Path | None = None, icon: str = "siesta") -> None:
    """Writes or removes this platform's entry; OSError says why it could not.

    ``icon`` is an icon name or the absolute path of an image (used by XDG entries only)."""
    entry = login_entry()
    if enabled:
        entry.enable(launch_command(config_dir, entry.platform), icon)
    else:
        entry.disable()
