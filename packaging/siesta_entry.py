"""The PyInstaller bundle's entry point: ``siesta`` (``app.cli:main``), plus a small
stand-in for the Python interpreter that a frozen program does not have.

Frozen, ``sys.executable`` is the bundle's ``siesta`` program, not a Python. Siesta runs
``sys.executable`` in two places:

* its process-reaper watchdog, ``[sys.executable, "-I", "-S", "-c", SOURCE]``
  (app/core/models/reaper.py): the safety net that kills model servers if Siesta is
  SIGKILLed. Without this shim the bundle would parse ``-I`` as a siesta option, exit 2,
  and silently run with no watchdog;
* ``siesta engine install --from-source`` runs ``[sys.executable, "-m", "pip", ...]``: pip
  is not in the bundle, so that command reports "No module named pip"; the default
  prebuilt install needs no pip and works from the bundle.

* the autostart entry, when no ``siesta`` is on PATH, runs ``[sys.executable, "-m", "app"]``
  (app/ui/platform/autostart.py): ``-m app`` runs the bundled ``app.__main__``, the tray app.

So when frozen and the first arguments look like a Python command line (interpreter flags,
then ``-c CODE`` or ``-m MODULE``), this runs that code with the bundle's Python. Neither
``-c`` nor ``-m`` is a siesta option, so no siesta command line is taken for one.
"""

from __future__ import annotations

import os
import runpy
import sys

# Flags the interpreter would take before -c/-m; frozen they have nothing to change.
_INTERPRETER_FLAGS = {"-I", "-S", "-E", "-s", "-u", "-B", "-O", "-OO", "-q"}


def _run_as_python(argv: list[str]) -> int | None:
    """Runs ``python [flags] -c CODE ...`` / ``-m MODULE ...``; None when argv is not one."""
    i = 0
    while i < len(argv) and argv[i] in _INTERPRETER_FLAGS:
        i += 1
    if i + 1 >= len(argv) or argv[i] not in ("-c", "-m"):
        return None
    mode, target, rest = argv[i], argv[i + 1], argv[i + 2:]
    if "-u" in argv[:i]:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(write_through=True)  # type: ignore[union-attr]
            except (AttributeError, ValueError):
                pass
    try:
        if mode == "-c":
            sys.argv = ["-c", *rest]
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv = [target, *rest]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except ImportError as exc:
        if mode == "-c":
            raise
        # -m of a module the bundle does not have, e.g. pip for `siesta engine install`
        print(f"{os.path.basename(sys.executable)}: {exc} (not included in this bundle)", file=sys.stderr)
        return 1
    return 0


def _restore_library_path() -> None:
    """Programs Siesta starts (llama-server, command backends) must not inherit the bundle's
    LD_LIBRARY_PATH, or they would load its copies of libstdc++, libssl & co. PyInstaller's
    bootloader prepends the bundle's folder and keeps the caller's value in
    LD_LIBRARY_PATH_ORIG. This process is unaffected: the dynamic loader read the variable
    when the bundle started, and a re-run of the bundle (the watchdog) gets it set again by
    the bootloader."""
    bundle = getattr(sys, "_MEIPASS", None)
    for name in ("LD_LIBRARY_PATH", "LIBPATH"):  # LIBPATH: AIX
        original = os.environ.pop(name + "_ORIG", None)
        if original is not None:
            os.environ[name] = original
        elif bundle and name in os.environ:
            rest = [part for part in os.environ[name].split(os.pathsep) if part and part != bundle]
            if rest:
                os.environ[name] = os.pathsep.join(rest)
            else:
                del os.environ[name]


def main() -> int:
    if getattr(sys, "frozen", False):
        _restore_library_path()
        code = _run_as_python(sys.argv[1:])
        if code is not None:
            return code
    from app.cli import main as siesta_main

    return siesta_main()


if __name__ == "__main__":
    raise SystemExit(main())
