"""What Windows' file calls raise where Linux's succeed, for tests that take Siesta's Windows
paths here through fakes (unverified on a real Windows, which these machines are not).

* :func:`privilege_not_held`: what ``os.symlink`` raises for a user without the symlink
  privilege (and without Developer Mode): ``ERROR_PRIVILEGE_NOT_HELD``, 1314, "A required
  privilege is not held by the client."
  (https://learn.microsoft.com/en-us/windows/win32/debug/system-error-codes--1300-1699-).
* :func:`sharing_violation` and :class:`ReplaceRefusedWhileOpen`: what ``os.replace``
  (``MoveFileExW``) raises for a file another handle holds open without
  ``FILE_SHARE_DELETE``, as every file Python's ``open()`` opens is held on Windows:
  ``ERROR_SHARING_VIOLATION``, 32, "The process cannot access the file because it is being
  used by another process." (https://learn.microsoft.com/en-us/windows/win32/debug/system-error-codes--0-499-),
  which Python raises as PermissionError.

An OSError made here carries ``winerror`` on every OS, as Python sets it on Windows.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import psutil

ERROR_SHARING_VIOLATION = 32
ERROR_PRIVILEGE_NOT_HELD = 1314


def _windows_error(kind: type[OSError], code: int, winerror: int, message: str, path: Any = None) -> OSError:
    error = kind(code, message) if path is None else kind(code, message, os.fspath(path))
    if getattr(error, "winerror", None) is None:
        error.winerror = winerror  # type: ignore[attr-defined]  # Python sets it only on Windows
    return error


def privilege_not_held(src: Any = None, dst: Any = None) -> OSError:
    """The OSError ``os.symlink(src, dst)`` raises on Windows without the privilege."""
    return _windows_error(OSError, errno.EPERM, ERROR_PRIVILEGE_NOT_HELD,
                          "A required privilege is not held by the client", src)


def refuse_symlinks(*args: Any, **kwargs: Any) -> None:
    """An ``os.symlink`` as a Windows user without the privilege has it."""
    raise privilege_not_held(*args[:2])


def sharing_violation(path: Any) -> PermissionError:
    """The PermissionError ``os.replace`` raises on Windows for a file another handle holds open."""
    error = _windows_error(PermissionError, errno.EACCES, ERROR_SHARING_VIOLATION,
                           "The process cannot access the file because it is being used by another process", path)
    assert isinstance(error, PermissionError)
    return error


class ReplaceRefusedWhileOpen:
    """An ``os.replace`` with Windows' rule for open files: it refuses (sharing violation)
    while any handle in this process has the source or the destination open, and otherwise
    does the real replace. Which files are open is asked of psutil (``open_files``), so a
    plain ``open()`` in the test is a holder, as on Windows."""

    def __init__(self, real: Callable[..., None] = os.replace) -> None:
        self.real = real
        self.refused: list[str] = []
        self.done: list[tuple[str, str]] = []

    @staticmethod
    def _held() -> set[str]:
        return {os.path.realpath(f.path) for f in psutil.Process().open_files()}

    def __call__(self, src: Any, dst: Any, **kwargs: Any) -> None:
        held = self._held()
        for path in (src, dst):
            if os.path.realpath(os.fspath(path)) in held:
                self.refused.append(os.fspath(path))
                raise sharing_violation(path)
        self.real(src, dst, **kwargs)
        self.done.append((os.fspath(src), os.fspath(dst)))
