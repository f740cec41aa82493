"""What lets the test suite run as written on Linux, macOS and Windows.

* The platform names a test may ask about: :data:`POSIX`, :data:`LINUX`, :data:`MACOS`,
  :data:`WINDOWS`, and the markers :data:`posix_only` and :data:`linux_only` for a test that
  is POSIX or Linux by nature (process groups, ``/proc``, ``resource``), each with its reason.
* Processes without POSIX-only calls: :func:`pid_alive` (psutil: never ``os.kill(pid, 0)``,
  which on Windows sends CTRL_C_EVENT and ends the process) and :func:`kill_hard` (SIGKILL
  where it exists, else TerminateProcess), with :data:`KILLED_RETURNCODE`, the exit status
  a process killed so is seen with.
* :func:`home_environment`: the variables that point every folder platformdirs (and Siesta)
  would use at a test's own home, on each OS; ``tests/conftest.py`` sets them for every test,
  and child processes inherit them.

``tests/test_portable_tests.py`` checks that every POSIX-only (or Windows-only) call in
``tests/`` sits behind one of these or behind a platform test of its own.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

POSIX = os.name == "posix"
LINUX = sys.platform.startswith("linux")
MACOS = sys.platform == "darwin"
WINDOWS = sys.platform == "win32"

posix_only = pytest.mark.skipif(not POSIX, reason="POSIX by nature: signals, process groups or rlimits")
linux_only = pytest.mark.skipif(not LINUX, reason="Linux by nature: reads /proc")

# What a child killed by kill_hard() exits with, as Popen.returncode and Siesta's exit_code
# have it: -9 (killed by SIGKILL) on POSIX; on Windows the code TerminateProcess was given,
# 137 (the shell's 128 + 9), so "crashed: exit 137" reads the same on every OS.
KILLED_RETURNCODE = 137 if WINDOWS else -9


def kill_hard(pid: int) -> None:
    """Kills ``pid`` at once, as a crash would: SIGKILL where it exists, else TerminateProcess
    (``os.kill`` with any value but CTRL_C_EVENT or CTRL_BREAK_EVENT; the process exits with it)."""
    if hasattr(signal, "SIGKILL"):
        os.kill(pid, signal.SIGKILL)
    else:
        os.kill(pid, KILLED_RETURNCODE)


def pid_alive(pid: int) -> bool:
    """Whether a process is still running (a zombie counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# platformdirs' user_*_dir functions, and where tests/conftest.py points each under the test's
# home: the very paths platformdirs gives on Linux with the XDG variables below, so Linux sees
# no difference between the patched functions and the variables.
PLATFORMDIRS_UNDER_HOME = {
    "user_config_dir": ".config/{app}",
    "user_data_dir": ".local/share/{app}",
    "user_state_dir": ".local/state/{app}",
    "user_cache_dir": ".cache/{app}",
    "user_log_dir": ".local/state/{app}/log",
    "user_runtime_dir": "run/{app}",
}


def home_environment(home: Path, platform: str = sys.platform) -> dict[str, str]:
    """The variables that send every folder of the user's to ``home`` on ``platform``, for this
    process and its children (which the in-process patch of platformdirs does not reach):

    * everywhere: ``HOME``, and the XDG variables (platformdirs reads them on Linux, and on
      macOS too since 4.x; macOS's own ``~/Library/...`` folders follow ``HOME``);
    * Windows: ``USERPROFILE`` (``Path.home()``), ``APPDATA`` and ``LOCALAPPDATA`` (read by
      Siesta's engine build and discovery), and platformdirs' ``WIN_PD_OVERRIDE_*`` (4.8+),
      which it reads before the Known Folders; without them a child would use the real
      ``%LOCALAPPDATA%``.
    """
    env = {"HOME": str(home)}
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache"), ("XDG_RUNTIME_DIR", "run")):
        env[var] = str(home / sub)
    if platform == "win32":
        roaming, local = home / "AppData" / "Roaming", home / "AppData" / "Local"
        env.update({"USERPROFILE": str(home), "APPDATA": str(roaming), "LOCALAPPDATA": str(local),
                    "WIN_PD_OVERRIDE_APPDATA": str(roaming), "WIN_PD_OVERRIDE_LOCAL_APPDATA": str(local),
                    "WIN_PD_OVERRIDE_COMMON_APPDATA": str(home / "ProgramData")})
    return env
