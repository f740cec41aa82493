"""The test suite runs on Windows and macOS as written: every call in ``tests/`` that exists on
one kind of OS only sits behind a guard, read from the source with ``ast``.

What is looked for (each fails at run time on the other OS, or worse):

* ``signal.SIGKILL`` and every other signal Windows lacks (``SIGUSR1``, ``SIGHUP``, ...), and
  ``signal.alarm``-like functions;
* ``os.kill(pid, 0)``: on Windows signal 0 is CTRL_C_EVENT, sent to the whole console;
* ``os.killpg``, ``os.getpgid``, ``os.setsid``, ``os.getuid``, ``os.pidfd_open``, ``os.fork``, ...;
* ``preexec_fn=`` (``subprocess`` refuses it on Windows);
* ``import resource`` (``fcntl``, ``termios``, ``pty``, ``pwd``, ``grp``) and the use of
  such a module (``resource.getrlimit``), and on the other side ``msvcrt`` (``winreg``,
  ``_winapi``), and ``signal.SIGBREAK`` or ``signal.CTRL_C_EVENT``;
* a read of ``/proc``: ``open``, ``os.listdir``, ``os.readlink``, ... of a path that starts
  with ``/proc``, or a method called on ``Path("/proc/...")`` (a module-level name bound to
  such a path counts where it is used).

Code in a string that parses as Python (a script a test runs as a child) is read too, as if
it stood where the string does.

The guards (what a reviewer sees and can judge):

1. the function or class is marked ``@posix_only`` or ``@linux_only`` (``tests/portable.py``),
   or ``@pytest.mark.skipif(<platform test>, reason=...)``; or the module's ``pytestmark`` is
   one of those (which guards what is inside functions, not what runs at import);
2. it is inside ``if <platform test>:`` (either branch: the test chose), a conditional
   expression, or after ``<platform test> and`` (or ``or``);
3. it comes after ``if <platform test>: return / raise / continue / pytest.skip(...)`` in the
   same block;
4. it is inside ``try:`` whose handler catches ``ImportError`` or ``AttributeError``, or under
   ``if TYPE_CHECKING:``.

A platform test mentions ``sys.platform``, ``os.name``, ``platform.system()``, ``hasattr(...)``
(a capability), or ``POSIX``, ``LINUX``, ``MACOS``, ``WINDOWS`` from ``tests/portable.py``.
The helpers there (``pid_alive``, ``kill_hard``, ``KILLED_RETURNCODE``) are the portable way.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath

import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
import pytest

from app.core.config.instance_lock import lock_dir
from app.core.config.paths import Paths, engine_cache_dir
from tests.portable import PLATFORMDIRS_UNDER_HOME, home_environment, posix_only

TESTS = Path(__file__).resolve().parent

POSIX_MODULES = {"resource", "fcntl", "termios", "pty", "pwd", "grp", "posix"}
WINDOWS_MODULES = {"msvcrt", "winreg", "_winapi", "winsound", "nt"}
WINDOWS_SIGNALS = {"SIGABRT", "SIGFPE", "SIGILL", "SIGINT", "SIGSEGV", "SIGTERM", "SIGBREAK"}
WINDOWS_ONLY_SIGNALS = {"SIGBREAK", "CTRL_C_EVENT", "CTRL_BREAK_EVENT"}
POSIX_SIGNAL_FUNCTIONS = {"alarm", "setitimer", "getitimer", "pause", "pthread_kill", "pthread_sigmask", "sigwait",
                          "sigwaitinfo", "sigtimedwait", "sigpending", "siginterrupt"}
POSIX_OS = {"killpg", "getpgid", "setpgid", "setpgrp", "getpgrp", "setsid", "getsid", "getuid", "geteuid", "getgid",
            "getegid", "fork", "forkpty", "pidfd_open", "wait3", "wait4", "WNOHANG", "mkfifo", "getloadavg",
            "sysconf", "sched_getaffinity", "statvfs", "chown", "fchown", "lchown"}
FILE_CALLS = {"open", "io.open", "os.open", "os.listdir", "os.scandir", "os.readlink", "os.stat", "os.lstat",
              "os.walk", "os.path.exists", "os.path.isfile", "os.path.isdir", "glob.glob"}
PATH_CALLS = {"Path", "pathlib.Path", "PurePosixPath", "PosixPath"}
PLATFORM_NAMES = {"POSIX", "LINUX", "MACOS", "WINDOWS", "TYPE_CHECKING"}
MARKERS = {"posix_only", "linux_only"}
GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "AttributeError"}


@dataclass
class Finding:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(TESTS.parent)}:{self.line}: {self.what}"


def _dotted(node: ast.AST) -> str:
    """``os.path.exists`` for that attribute chain; '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def is_platform_test(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        name = _dotted(sub)
        if name in ("sys.platform", "os.name") or name.split(".")[-1] in PLATFORM_NAMES:
            return True
        if isinstance(sub, ast.Call) and _dotted(sub.func) in ("hasattr", "platform.system"):
            return True
    return False


def _is_guard_marker(node: ast.AST) -> bool:
    """``posix_only``, ``linux_only``, ``pytest.mark.skipif(<platform test>, ...)``, or a list of them."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_guard_marker(item) for item in node.elts)
    if _dotted(node).split(".")[-1] in MARKERS:
        return True
    return (isinstance(node, ast.Call) and _dotted(node.func).endswith("mark.skipif") and bool(node.args)
            and is_platform_test(node.args[0]))


def _exits(body: list[ast.stmt]) -> bool:
    """Whether a block never runs on past its end: it returns, raises, skips the test ..."""
    last = body[-1] if body else None
    if isinstance(last, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
        return True
    if isinstance(last, ast.If):
        return _exits(last.body) and _exits(last.orelse)
    if isinstance(last, ast.Try):
        ran = _exits(last.orelse) if last.orelse else _exits(last.body)
        return ran and all(_exits(handler.body) for handler in last.handlers)
    return (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and _dotted(last.value.func) in ("pytest.skip", "pytest.xfail", "pytest.exit"))


def _proc_text(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value == "/proc" or node.value.startswith("/proc/")
    if isinstance(node, ast.JoinedStr) and node.values:
        return _proc_text(node.values[0])
    return False


def _leftmost(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        node = node.left
    return node


@dataclass
class Scanner:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    proc_names: set[str] = field(default_factory=set)
    module_marked: bool = False
    line_offset: int = 0

    def scan(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                    for t in stmt.targets):
                self.module_marked = _is_guard_marker(stmt.value)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                value = stmt.value
                if _proc_text(value) or (isinstance(value, ast.Call) and _dotted(value.func) in PATH_CALLS
                                         and value.args and _proc_text(value.args[0])):
                    self.proc_names.add(stmt.targets[0].id)
        self.block(tree.body, guarded=False)

    # ---- walking, with the guard as it stands at each point ---------------------------------------

    def block(self, body: list[ast.stmt], guarded: bool) -> None:
        for index, stmt in enumerate(body):
            if index == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                continue  # a docstring is prose
            self.statement(stmt, guarded)
            if isinstance(stmt, ast.If) and is_platform_test(stmt.test) and _exits(stmt.body):
                guarded = True  # what follows an early exit on the platform is behind it

    def statement(self, stmt: ast.stmt, guarded: bool) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            marked = any(_is_guard_marker(d) for d in stmt.decorator_list)
            for d in stmt.decorator_list:
                self.expression(d, guarded)
            # pytestmark guards what runs in a test, not a class body (which runs at import)
            inner = guarded or marked or (self.module_marked and not isinstance(stmt, ast.ClassDef))
            if not isinstance(stmt, ast.ClassDef):
                for default in stmt.args.defaults + [d for d in stmt.args.kw_defaults if d is not None]:
                    self.expression(default, guarded)
            self.block(stmt.body, inner)
            return
        if isinstance(stmt, ast.If):
            self.expression(stmt.test, guarded)
            inner = guarded or is_platform_test(stmt.test)
            self.block(stmt.body, inner)
            self.block(stmt.orelse, inner)
            return
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            catches = {_dotted(n) for h in stmt.handlers if h.type is not None
                       for n in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])}
            self.block(stmt.body, guarded or bool(catches & GUARD_EXCEPTIONS))
            for handler in stmt.handlers:
                self.block(handler.body, guarded)
            self.block(stmt.orelse, guarded)
            self.block(stmt.finalbody, guarded)
            return
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            self.imports(stmt, guarded)
            return
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                continue
            self.expression(child, guarded)
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                self.block(inner, guarded)
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                self.block(case.body, guarded)

    def expression(self, node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.IfExp):
            self.expression(node.test, guarded)
            inner = guarded or is_platform_test(node.test)
            self.expression(node.body, inner)
            self.expression(node.orelse, inner)
            return
        if isinstance(node, ast.BoolOp):  # what comes after a platform test runs only as it decides
            for value in node.values:
                self.expression(value, guarded)
                guarded = guarded or is_platform_test(value)
            return
        if isinstance(node, (ast.Lambda,)):
            self.expression(node.body, guarded)
            return
        if not guarded:
            self.check(node)
        self.embedded(node, guarded)
        if isinstance(node, ast.JoinedStr):  # its text was read whole; only the {expressions} are left
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    self.expression(part.value, guarded)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.expr, ast.keyword, ast.comprehension, ast.arguments)):
                self.expression(child, guarded)

    # ---- what is looked for -------------------------------------------------------------------------------

    def report(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.path, self.line_offset + getattr(node, "lineno", 1), what))

    def imports(self, stmt: ast.Import | ast.ImportFrom, guarded: bool) -> None:
        if guarded:
            return
        names = [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module or ""]
        for name in names:
            top = name.split(".")[0]
            if top in POSIX_MODULES:
                self.report(stmt, f"import {name}: POSIX only")
            elif top in WINDOWS_MODULES:
                self.report(stmt, f"import {name}: Windows only")
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "signal":
            for alias in stmt.names:
                if self._posix_signal(alias.name):
                    self.report(stmt, f"from signal import {alias.name}: POSIX only")
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "os":
            for alias in stmt.names:
                if alias.name in POSIX_OS:
                    self.report(stmt, f"from os import {alias.name}: POSIX only")

    @staticmethod
    def _posix_signal(name: str) -> bool:
        if name in POSIX_SIGNAL_FUNCTIONS:
            return True
        return name.startswith("SIG") and not name.startswith("SIG_") and name not in WINDOWS_SIGNALS

    def check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Attribute):
            self.check_attribute(node)
        elif isinstance(node, ast.Call):
            self.check_call(node)

    def check_attribute(self, node: ast.Attribute) -> None:
        name = _dotted(node)
        if name.count(".") != 1:
            return
        owner, attr = name.split(".")
        if owner == "signal" and self._posix_signal(attr):
            self.report(node, f"{name}: POSIX only (use tests.portable.kill_hard, or guard it)")
        elif owner == "signal" and attr in WINDOWS_ONLY_SIGNALS:
            self.report(node, f"{name}: Windows only")
        elif (owner == "os" and attr in POSIX_OS) or owner in POSIX_MODULES:
            self.report(node, f"{name}: POSIX only")
        elif owner in WINDOWS_MODULES:
            self.report(node, f"{name}: Windows only")

    def check_call(self, node: ast.Call) -> None:
        func = _dotted(node.func)
        if func == "os.kill" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value == 0:
            self.report(node, "os.kill(pid, 0): on Windows signal 0 is CTRL_C_EVENT (use tests.portable.pid_alive)")
        for keyword in node.keywords:
            if keyword.arg == "preexec_fn":
                self.report(node, "preexec_fn=: POSIX only (subprocess refuses it on Windows)")
        if func in FILE_CALLS and node.args and self._proc(node.args[0]):
            self.report(node, f"{func}() of /proc: Linux only")
        elif isinstance(node.func, ast.Attribute) and self._proc(_leftmost(node.func.value), path_only=True):
            self.report(node, f".{node.func.attr}() of a /proc path: Linux only")

    def _proc(self, node: ast.AST, path_only: bool = False) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.proc_names
        if isinstance(node, ast.Call) and _dotted(node.func) in PATH_CALLS and node.args:
            return self._proc(node.args[0])
        return not path_only and _proc_text(node)

    def embedded(self, node: ast.AST, guarded: bool) -> None:
        """A string that is a Python script (a child a test runs) is read as code in its place
        (not in this file, whose strings are the scanner's own examples)."""
        if self.path == Path(__file__).resolve():
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "_f_" for v in node.values)
        else:
            return
        if "\n" not in text and "import " not in text:
            return
        try:
            tree = ast.parse(textwrap.dedent(text))
        except (SyntaxError, ValueError):
            return
        if not any(isinstance(n, (ast.Import, ast.ImportFrom, ast.Call)) for n in ast.walk(tree)):
            return
        inner = Scanner(self.path, proc_names=set(self.proc_names),
                        line_offset=self.line_offset + getattr(node, "lineno", 1) - 1)
        inner.module_marked = self.module_marked
        inner.block(tree.body, guarded)
        self.findings += inner.findings


def scan_source(source: str, path: Path = TESTS / "example.py") -> list[Finding]:
    """What :class:`Scanner` finds outside a guard in ``source``, as if it were the file ``path``."""
    scanner = Scanner(path)
    scanner.scan(ast.parse(source))
    return scanner.findings


def test_only_portable_calls_outside_a_guard_in_tests() -> None:
    """The suite itself: every file under tests/ (this one's examples aside)."""
    findings = [f for path in sorted(TESTS.rglob("*.py"))
                for f in scan_source(path.read_text(encoding="utf-8"), path)]
    assert not findings, "POSIX-only or Windows-only calls outside a guard (see this file's docstring):\n" + \
        "\n".join(map(str, findings))


# ---- the scanner itself ------------------------------------------------------------------------------------

def _lines(source: str) -> list[int]:
    return [f.line for f in scan_source(textwrap.dedent(source))]


def test_the_scanner_finds_each_pattern_outside_a_guard() -> None:
    source = '''
        import os, signal
        import resource
        from signal import SIGUSR1

        def test_one(pid):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, 0)
            os.killpg(pid, signal.SIGTERM)
            open(f"/proc/{pid}/stat").read()
            Path("/proc").iterdir()
            subprocess.Popen(["x"], preexec_fn=None)
            import msvcrt
            resource.getrlimit(0)
            signal.CTRL_BREAK_EVENT
    '''
    assert _lines(source) == [3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    found = scan_source(textwrap.dedent(source))
    assert found[0].what == "import resource: POSIX only" and str(found[0]).startswith("tests/example.py:3: ")


def test_the_scanner_accepts_each_guard() -> None:
    source = '''
        import os, signal, sys
        import pytest
        from tests.portable import POSIX, linux_only, posix_only

        try:
            import resource
        except ImportError:
            resource = None

        @posix_only
        def test_marked(pid):
            os.kill(pid, signal.SIGKILL)

        @pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
        def test_skipif(pid):
            os.killpg(pid, signal.SIGKILL)

        def helper(pid):
            if not POSIX:
                return False
            return open(f"/proc/{pid}/stat").read()

        def kill(pid):
            if hasattr(signal, "SIGKILL"):
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGTERM)
            return os.name == "posix" and os.getpgid(pid)

        @linux_only
        class TestProc:
            def test_it(self):
                Path("/proc/self/fd").iterdir()
    '''
    assert _lines(source) == []


def test_the_scanner_reads_a_child_script_in_a_string_where_it_stands() -> None:
    source = '''
        import textwrap
        from tests.portable import posix_only

        SCRIPT = textwrap.dedent(f"""
            import os, sys
            os.kill(int(sys.argv[1]), 0)
        """)

        @posix_only
        def test_guarded():
            script = "import resource\\nprint(resource.getrlimit(resource.RLIMIT_NOFILE))"
    '''
    assert _lines(source) == [7]


def test_the_scanner_follows_module_level_proc_names_and_pytestmark() -> None:
    source = '''
        from pathlib import Path
        from tests.portable import linux_only

        PSI = Path("/proc/pressure/memory")
        NS = "/proc/sys/kernel/ns_last_pid"

        def usable():
            return PSI.exists() and open(NS).read()
    '''
    assert _lines(source) == [9, 9]
    assert _lines("from tests.portable import linux_only\npytestmark = linux_only\n" + textwrap.dedent(source)) == []


# ---- no test touches the real folders, on any OS -------------------------------------------------------

def _under(path: str | Path, home: PurePath) -> bool:
    return type(home)(path).is_relative_to(home)


def test_siestas_folders_in_this_process_are_the_test_homes(isolated_home: Path) -> None:
    paths = Paths.resolve()
    for folder in (paths.config_dir, paths.log_dir, paths.data_dir, paths.state_dir, engine_cache_dir(), lock_dir()):
        assert folder is not None and _under(folder, isolated_home), folder
    for name in PLATFORMDIRS_UNDER_HOME:
        assert _under(getattr(platformdirs, name)("siesta"), isolated_home), name


CHILD = f"""
import json, platformdirs
from app.core.config.instance_lock import lock_dir
from app.core.config.paths import Paths, engine_cache_dir
paths = Paths.resolve()
found = {{name: getattr(platformdirs, name)("siesta") for name in {sorted(PLATFORMDIRS_UNDER_HOME)!r}}}
found.update(config=paths.config_dir, logs=paths.log_dir, data=paths.data_dir, state=paths.state_dir,
             engines=engine_cache_dir(), locks=lock_dir())
print(json.dumps({{k: str(v) for k, v in found.items()}}))
"""


def test_a_child_process_sees_only_the_test_home(isolated_home: Path) -> None:
    """What a ``python -m app ...`` a test starts would use: the variables tests/conftest.py
    set reach it (the in-process patch of platformdirs does not)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=TESTS.parent, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    outside = {k: v for k, v in found.items() if not _under(v, isolated_home)}
    assert not outside, f"a child would use real folders (platformdirs {platformdirs.__version__}): {outside}"


@pytest.mark.parametrize("platform, dirs", [
    pytest.param("linux", platformdirs.unix.Unix, marks=posix_only),  # their rules read POSIX paths
    pytest.param("darwin", platformdirs.macos.MacOS, marks=posix_only),
    ("win32", platformdirs.windows.Windows),
])
def test_each_oss_rules_put_every_folder_in_the_home_the_variables_name(platform: str, dirs: type,
                                                                       isolated_home: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """platformdirs' own rules for each OS, run here with the variables that OS gets: on
    Windows its WIN_PD_OVERRIDE_* (read before the Known Folders, which a variable cannot move)."""
    home: PurePath = PureWindowsPath("C:/siesta-test/home") if platform == "win32" else isolated_home
    for var, value in home_environment(home, platform).items():  # type: ignore[arg-type]
        monkeypatch.setenv(var, value)
    folders = dirs(appname="siesta")
    outside = {name: getattr(folders, name) for name in PLATFORMDIRS_UNDER_HOME
               if not _under(getattr(folders, name).replace("/", "\\") if platform == "win32"
                             else getattr(folders, name), home)}
    assert not outside
