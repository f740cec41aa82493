"""Start at login writes and removes the platform's own entry: $XDG_CONFIG_HOME/autostart/siesta.desktop
on Linux, a LaunchAgent on macOS, the Run key on Windows (the last two through the platform
layer, on any OS: the Windows registry is one that records)."""

from __future__ import annotations

import configparser
import plistlib
import sys
from pathlib import Path

import pytest

from app.ui.platform import autostart


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


# ---- macOS and Windows, through the platform layer ----------------------------------------------


class RecordingRegistry:
    """HKEY_CURRENT_USER as a dict: records what start at login would write there."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], object] = {}
        self.writes: list[tuple[str, str, str, object]] = []

    def get(self, key: str, name: str) -> object:
        return self.values.get((key, name))

    def set_string(self, key: str, name: str, value: str) -> None:
        self.writes.append(("set", key, name, value))
        self.values[(key, name)] = value

    def delete(self, key: str, name: str) -> None:
        self.writes.append(("delete", key, name, None))
        self.values.pop((key, name), None)


@pytest.fixture
def on_platform(monkeypatch: pytest.MonkeyPatch):
    """Makes the module's functions (those the Settings dialog calls) act as on another platform."""
    real = autostart.login_entry

    def use(platform: str, **kwargs):
        monkeypatch.setattr(autostart, "login_entry", lambda: real(platform, **kwargs))

    return use


def test_on_macos_a_launch_agent_is_written_and_read_back(isolated_home: Path, tmp_path: Path, on_platform) -> None:
    on_platform("darwin")
    agent_file = isolated_home / "Library" / "LaunchAgents" / "io.github.siesta.Siesta.plist"
    assert autostart.entry_path() == agent_file
    assert not autostart.is_enabled()
    autostart.set_enabled(True, tmp_path / "my config", icon="/icons/siesta.svg")
    assert autostart.is_enabled()
    assert not autostart.XdgAutostart().location.exists()  # nothing a Mac reads
    with agent_file.open("rb") as fh:
        agent = plistlib.load(fh)
    assert agent["Label"] == "io.github.siesta.Siesta"
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] is False
    assert agent["ProgramArguments"][-2:] == ["--config-dir", str(tmp_path / "my config")]
    assert Path(agent["ProgramArguments"][0]).is_absolute()  # launchd expands neither ~ nor PATH
    assert "/opt/homebrew/bin" in agent["EnvironmentVariables"]["PATH"]

    agent["Disabled"] = True  # as `launchctl disable` or a hand edit leaves it
    agent_file.write_bytes(plistlib.dumps(agent))
    assert not autostart.is_enabled()
    autostart.set_enabled(True)
    assert autostart.is_enabled()
    autostart.set_enabled(False)
    assert not agent_file.exists() and not autostart.is_enabled()
    autostart.set_enabled(False)  # removing twice is fine


def test_on_windows_the_run_key_is_written_and_read_back(tmp_path: Path, on_platform, monkeypatch) -> None:
    registry = RecordingRegistry()
    on_platform("win32", registry=registry)
    run = r"Software\Microsoft\Windows\CurrentVersion\Run"
    approved = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
    python = tmp_path / "Python311" / "python.exe"
    python.parent.mkdir()
    python.write_text("")
    (python.parent / "pythonw.exe").write_text("")
    monkeypatch.setattr(autostart.sys, "executable", str(python))
    assert str(autostart.entry_path()) == rf"HKEY_CURRENT_USER\{run}\Siesta"
    assert not autostart.is_enabled()

    autostart.set_enabled(True, tmp_path / "my config")
    assert autostart.is_enabled()
    assert registry.values[(run, "Siesta")] == (f'{python.parent / "pythonw.exe"} -m app '
                                                f'--config-dir "{tmp_path / "my config"}"')
    assert not autostart.XdgAutostart().location.exists()  # nothing Windows reads

    registry.values[(approved, "Siesta")] = bytes([3, 0, 0, 0]) + bytes(8)  # Task Manager: Disable
    assert not autostart.is_enabled()
    autostart.set_enabled(True)  # ticking the box again clears that mark
    assert autostart.is_enabled() and (approved, "Siesta") not in registry.values
    autostart.set_enabled(False)
    assert not autostart.is_enabled()
    assert (run, "Siesta") not in registry.values
    assert [w[0] for w in registry.writes] == ["set", "delete", "set", "delete", "delete", "delete"]


def test_a_windows_bundle_starts_its_windowless_executable_at_login(tmp_path: Path, monkeypatch) -> None:
    """The bundle has siesta.exe (console, the CLI) and siestaw.exe (windowless, the tray app:
    packaging/siesta.spec); the login entry runs siestaw.exe, so no console window opens."""
    bundle = tmp_path / "siesta"
    bundle.mkdir()
    (bundle / "siesta.exe").write_text("")
    monkeypatch.setattr(autostart.sys, "executable", str(bundle / "siesta.exe"))
    monkeypatch.setattr(autostart.sys, "frozen", True, raising=False)
    assert autostart.launch_command(platform="win32") == [str(bundle / "siesta.exe")]  # an older bundle: no siestaw
    (bundle / "siestaw.exe").write_text("")
    assert autostart.launch_command(platform="win32") == [str(bundle / "siestaw.exe")]
    assert autostart.launch_command(platform="linux") == [str(bundle / "siesta.exe")]


def test_the_windows_registry_is_only_touched_on_windows() -> None:
    if sys.platform == "win32":
        pytest.skip("on Windows the real registry would be written")
    assert isinstance(autostart.login_entry(), autostart.XdgAutostart)
    with pytest.raises(ImportError):
        autostart.WindowsRegistry().get(autostart.RUN_KEY, autostart.RUN_VALUE)
