"""Siesta as users install it: a wheel built from a clean copy of the tree, installed into a
fresh virtual environment, run from outside the repository.

The rest of the suite runs against the editable install (``pip install -e .``), which maps
``app`` back to the source tree: there every module and file is found whatever the wheel
holds. pyproject.toml lists the packages by hand (``app.resources`` maps to the top-level
``resources/``, which setuptools' discovery cannot combine), so a package left out of that
list, or an icon or data file left out of the package data, only shows in a real wheel
installed on its own. This file:

* builds the wheel with ``pip wheel`` from a copy of the files ``git ls-files`` lists (so
  nothing untracked, no egg-info and no build/ folder of the working tree gets in);
* checks that the wheel holds every package of ``app/`` (every tracked ``__init__.py``),
  every tracked module, ``app/resources/engine-digests.json`` and the icons of
  ``resources/icons/``;
* installs it into a ``python -m venv`` without ``--system-site-packages`` (its dependencies
  come from PyPI) and, from a temporary cwd with no PYTHONPATH and Siesta's config, data,
  state, cache and runtime dirs in the test's temporary folder, runs ``siesta --version``,
  ``siesta demo`` (a tiny real GGUF model and its recipe), ``siesta serve`` with the real
  llama-server answering a chat completion for the demo model, and the tray app (bare
  ``siesta``, offscreen) up to its first health answer; each server is stopped with
  SIGTERM and must exit 0 and leave no process behind.

The wheel and the venv are built once per module. On a warm machine (pip's cache filled)
the file takes about a minute; the first run downloads the build backend and the
dependencies (PySide6 among them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

import app
from tests.conftest import LLAMA_SERVER, pid_alive

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
BASE_ENV = dict(os.environ)  # taken at import, before conftest's isolated_home redirects HOME and XDG_*

# Building the wheel and installing its dependencies count toward the first test's time;
# on a cold machine that is a PySide6 download.
pytestmark = pytest.mark.timeout(900)


# ---- helpers ---------------------------------------------------------------------------

def run(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def tracked_files() -> list[str]:
    out = run(["git", "-C", str(ROOT), "ls-files", "-z"], timeout=60)
    return [name for name in out.stdout.split("\0") if name]


def tool_env() -> dict[str, str]:
    """The caller's environment (its pip cache included), minus anything that could put the
    source tree on a child's path."""
    return {k: v for k, v in BASE_ENV.items() if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PIP_USER")}


def siesta_env(tmp_path: Path, venv: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH, no SIESTA_* and every user dir Siesta reads or writes under ``tmp_path``."""
    env = {k: v for k, v in tool_env().items()
           if not k.startswith(("SIESTA_", "XDG_", "QT_", "LEMONADE_"))}
    home = tmp_path / "home"
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local/share",
            "XDG_STATE_HOME": home / ".local/state", "XDG_CACHE_HOME": home / ".cache",
            "XDG_RUNTIME_DIR": tmp_path / "run"}
    for var, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[var] = str(path)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(proc: subprocess.Popen[str], url: str, log: Path, deadline_s: float = 60) -> dict:
    """Polls ``/api/v1/health`` until it answers 200 (bounded); fails at once if ``proc`` exits."""
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before answering /api/v1/health:\n{log.read_text()}")
        try:
            resp = httpx.get(url + "/api/v1/health", timeout=2)
            if resp.status_code == 200:
                return resp.json()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"no /api/v1/health answer in {deadline_s} s:\n{log.read_text()}"
        time.sleep(0.1)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def processes_mentioning(*marks: Path) -> list[str]:
    """Processes (other than this one) whose command line names one of ``marks``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if any(str(mark) in cmdline for mark in marks):
            found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


def stop_and_check(proc: subprocess.Popen[str], log: Path, *marks: Path) -> None:
    """SIGTERM, a clean exit 0, and no child (model server, reaper) left running."""
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"did not exit within 30 s of SIGTERM:\n{log.read_text()}") from None
    assert code == 0, f"exited {code} on SIGTERM:\n{log.read_text()}"
    deadline = time.monotonic() + 10  # the reaper leaves when its pipe closes: give it a moment
    while any(pid_alive(c.pid) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [f"{c.pid}" for c in children if pid_alive(c.pid)]
    assert not left, f"children left after SIGTERM: {left}"
    assert not processes_mentioning(*marks), processes_mentioning(*marks)


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """Cleanup after a failed test: nothing it started may outlive it."""
    for child in descendants(proc.pid):
        try:
            child.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


# ---- the wheel and the venv --------------------------------------------------------------

@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    return tracked_files()


@pytest.fixture(scope="module")
def wheel(build_dir: Path, tracked: list[str]) -> Path:
    """The wheel ``pip wheel`` builds from a copy of the tracked files only."""
    tree, dist = build_dir / "tree", build_dir / "dist"
    for name in tracked:
        source = ROOT / name
        if not source.is_file() and not source.is_symlink():
            continue  # deleted in the working tree, or a submodule
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(dist), "."],
        timeout=600, cwd=tree, env=tool_env())
    wheels = list(dist.glob("siesta-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(build_dir: Path, wheel: Path) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its dependencies from PyPI."""
    path = build_dir / "venv"
    run([sys.executable, "-m", "venv", str(path)], timeout=180, cwd=build_dir, env=tool_env())
    run([str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(wheel)],
        timeout=800, cwd=build_dir, env=tool_env())
    return path


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        kill_tree(proc)


# ---- the wheel's contents ------------------------------------------------------------------

def test_wheel_holds_every_package_module_and_resource(wheel: Path, tracked: list[str]) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in names
                if n.startswith("app/") and n.endswith("/__init__.py")}
    # The tracked ones: the wheel is built from them (a package not yet added to git is not in it).
    in_source = {str(Path(n).parent).replace("/", ".") for n in tracked
                 if n.startswith("app/") and n.endswith("/__init__.py")}
    assert in_source, "no __init__.py under app/ is tracked"
    assert in_wheel == in_source, (f"missing from the wheel (add them to [tool.setuptools] packages in pyproject.toml): "
                                   f"{sorted(in_source - in_wheel)}; only in the wheel: {sorted(in_wheel - in_source)}")
    modules = {n for n in tracked if n.startswith("app/") and n.endswith(".py") and (ROOT / n).is_file()}
    assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"

    assert "app/resources/engine-digests.json" in names
    icons = {f"app/resources/icons/{p.name}" for p in ICONS.glob("*.svg")}
    assert len(icons) >= 5, icons
    assert icons <= names, f"icons missing from the wheel: {sorted(icons - names)}"
    assert {n for n in names if n.startswith("app/resources/icons/") and n.endswith(".svg")} == icons

    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "siesta = app.cli:main" in entry_points


# ---- the installed command -----------------------------------------------------------------

def test_installed_version_comes_from_the_venv(venv: Path, tmp_path: Path) -> None:
    env = siesta_env(tmp_path, venv)
    where = run([str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"],
                timeout=60, cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), \
        f"app was imported from {where.stdout.strip()}, not from the venv"
    out = run([str(venv / "bin" / "siesta"), "--version"], timeout=60, cwd=tmp_path, env=env)
    printed = out.stdout.splitlines()  # on stdout, as `siesta --version | head -1` expects
    assert printed and printed[0] == f"siesta {app.__version__}", out.stdout + out.stderr
    assert printed[1].startswith("engine: ")


def run_demo(venv: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``siesta demo``: the tiny model in the data dir and its recipe ``tiny`` in the config dir."""
    env = siesta_env(tmp_path, venv)
    out = run([str(venv / "bin" / "siesta"), "demo"], timeout=120, cwd=tmp_path, env=env)
    recipe = Path(env["XDG_CONFIG_HOME"]) / "siesta" / "recipes" / "tiny.toml"
    model = Path(env["XDG_DATA_HOME"]) / "siesta" / "models" / "tiny.gguf"
    assert out.stdout.strip() == f"created {recipe} for {model}", out.stdout + out.stderr
    return recipe, model


def test_demo_writes_a_model_and_its_recipe(venv: Path, tmp_path: Path) -> None:
    recipe, model = run_demo(venv, tmp_path)
    with model.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert 300_000 < model.stat().st_size < 2_000_000
    text = recipe.read_text(encoding="utf-8")
    assert 'backend = "llamacpp"' in text and f'model = "{model}"' in text


@pytest.mark.llama
def test_serve_answers_a_chat_with_the_real_llama_server(venv: Path, tmp_path: Path,
                                                         started: list[subprocess.Popen[str]]) -> None:
    assert LLAMA_SERVER is not None
    run_demo(venv, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(venv / "bin" / "siesta"), "serve", "--port", str(port),
                                 "--llama-server", str(LLAMA_SERVER), "--stop-timeout", "3"],
                                cwd=tmp_path, env=siesta_env(tmp_path, venv), stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    started.append(proc)
    health = wait_for_health(proc, url, log)
    assert health["version"] == app.__version__
    assert health["llama_server"] == str(LLAMA_SERVER)

    resp = httpx.post(url + "/v1/chat/completions", timeout=90,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})
    assert resp.status_code == 200, resp.text
    message = resp.json()["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message.get("content"), str), json.dumps(message)
    servers = [p for p in descendants(proc.pid) if p.name() == "llama-server"]
    assert servers, f"no llama-server child: {[p.name() for p in descendants(proc.pid)]}"

    stop_and_check(proc, log, tmp_path, venv)


def test_tray_app_starts_offscreen_and_stops_on_sigterm(venv: Path, tmp_path: Path,
                                                         started: list[subprocess.Popen[str]]) -> None:
    """Bare ``siesta`` (the README's tray app): its front door answers, and SIGTERM ends it.
    A missing Qt module would not crash it (it prints the help and exits 0), so it must
    still be running when /api/v1/health first answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "tray.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(venv / "bin" / "siesta"), "--port", str(port), "--stop-timeout", "3"],
                                cwd=tmp_path, env=siesta_env(tmp_path, venv, QT_QPA_PLATFORM="offscreen"),
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    started.append(proc)
    health = wait_for_health(proc, url, log)
    assert health["version"] == app.__version__
    assert health["config_dir"] == str(tmp_path / "home" / ".config" / "siesta")
    stop_and_check(proc, log, tmp_path, venv)
    assert "Traceback" not in log.read_text(), log.read_text()
