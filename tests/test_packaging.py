"""Linux desktop integration and the bundle's helpers in packaging/: fast, no PyInstaller run.

The desktop entry, AppStream metainfo, autostart template and systemd unit parse and agree
with each other and with the app; render_icons.py writes PNGs of every size;
install-desktop.sh installs into a PREFIX and --uninstall removes it all. The external
validators (desktop-file-validate from desktop-file-utils, appstreamcli from appstream,
systemd-analyze) run when installed and are skipped otherwise. The bundle itself is built
and smoke-tested by packaging/build-bundle.sh, which takes minutes.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

import app
from app.ui.platform import autostart

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
ICONS = ROOT / "resources" / "icons"
APP_ID = "io.github.siesta.Siesta"
DESKTOP_FILE = PACKAGING / f"{APP_ID}.desktop"
METAINFO_FILE = PACKAGING / f"{APP_ID}.metainfo.xml"
AUTOSTART_TEMPLATE = PACKAGING / "autostart" / "siesta.desktop"
UNIT_FILE = PACKAGING / "siesta-serve.service"
INSTALL_SCRIPT = PACKAGING / "install-desktop.sh"
RENDER_SCRIPT = PACKAGING / "render_icons.py"
SIZES = (16, 22, 24, 32, 48, 64, 128, 256)


def read_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def desktop_entry(path: Path) -> configparser.SectionProxy:
    return read_ini(path.read_text(encoding="utf-8"))["Desktop Entry"]


def run_tool(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def png_info(path: Path) -> tuple[int, int, bool]:
    """(width, height, has a visible pixel) of an 8-bit RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    if (depth, color_type) != (8, 6):
        return width, height, True  # not RGBA: trust the size only
    raw = zlib.decompress(idat)
    stride = 1 + 4 * width
    # Whatever the row filters, an all-transparent image is all zero bytes past them.
    visible = any(any(raw[row * stride + 1:(row + 1) * stride]) for row in range(height))
    return width, height, visible


# ---- the wheel's packages -------------------------------------------------------------


def test_pyproject_lists_every_package_under_app() -> None:
    """pyproject.toml lists the packages by hand (app.resources maps to resources/, which
    setuptools' discovery cannot combine): a package left out would be missing from a built
    wheel, and ``siesta serve`` from it would die on ModuleNotFoundError."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "app").rglob("__init__.py")}
    on_disk |= {"app.resources", "app.resources.icons"}
    assert listed == on_disk


def test_the_psutil_requirement_has_net_connections() -> None:
    """Process.net_connections (backend.py's listener check off Linux) is new in psutil 6.0:
    with 5.9 every load would fail on Windows and macOS."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (psutil,) = [d for d in deps if d.split(">")[0].split("=")[0].strip() == "psutil"]
    minimum = psutil.split(">=", 1)[1].split(",")[0].split(";")[0].strip()
    assert int(minimum.split(".")[0]) >= 6, psutil


# ---- the desktop entry ---------------------------------------------------------------

def test_desktop_entry_has_the_required_keys() -> None:
    entry = desktop_entry(DESKTOP_FILE)
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Siesta"
    assert entry["Exec"] == "siesta"
    assert entry["Icon"] == APP_ID, "the Icon name is the one install-desktop.sh installs"
    assert entry["Terminal"] == "false"
    assert entry["Comment"] and entry["GenericName"]
    assert entry["Categories"].endswith(";") and "Utility" in entry["Categories"].split(";")
    assert not (PACKAGING / "siesta.desktop").exists(), "the desktop file is named after the app id now"


def test_desktop_files_pass_desktop_file_validate() -> None:
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        pytest.skip("desktop-file-validate not installed (apt-get install desktop-file-utils)")
    for path in (DESKTOP_FILE, AUTOSTART_TEMPLATE):
        result = run_tool(validator, str(path))
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"
        assert "error" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_autostart_template_matches_what_the_app_writes() -> None:
    """packaging/autostart/siesta.desktop is the entry the Settings toggle writes
    (app/ui/platform/autostart.py) for `siesta` on PATH: change one, change the other."""
    assert AUTOSTART_TEMPLATE.name == autostart.ENTRY_NAME
    template = dict(desktop_entry(AUTOSTART_TEMPLATE))
    written = dict(read_ini(autostart.desktop_entry(["siesta"], icon=APP_ID))["Desktop Entry"])
    assert template == written, "update packaging/autostart/siesta.desktop to match app/ui/platform/autostart.py"


# ---- AppStream -----------------------------------------------------------------------

def test_metainfo_matches_the_desktop_entry() -> None:
    root = ET.parse(METAINFO_FILE).getroot()
    entry = desktop_entry(DESKTOP_FILE)
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID == DESKTOP_FILE.stem
    assert root.findtext("name") == entry["Name"]
    assert (root.findtext("summary") or "").strip()
    assert root.findtext("metadata_license") and root.findtext("project_license") == "MIT"
    paragraphs = root.findall("description/p")
    assert paragraphs and all((p.text or "").strip() for p in paragraphs)
    launchable = root.find("launchable")
    assert launchable is not None and launchable.get("type") == "desktop-id"
    assert launchable.text == DESKTOP_FILE.name
    assert root.findtext("icon") == entry["Icon"]
    assert root.findtext("provides/binary") == entry["Exec"]
    releases = [r.get("version") for r in root.findall("releases/release")]
    assert app.__version__ in releases, "add a <release> for the current version"


def test_metainfo_passes_appstreamcli_validate() -> None:
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli not installed (apt-get install appstream)")
    result = run_tool(tool, "validate", "--no-net", "--no-color", str(METAINFO_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


# ---- icons ---------------------------------------------------------------------------

def test_symbolic_icon_is_one_colour() -> None:
    path = ICONS / "siesta-symbolic.svg"
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("viewBox") == "0 0 16 16"
    for element in root.iter():
        assert not element.tag.endswith(("Gradient", "image", "filter")), element.tag
        for attr in ("fill", "stroke"):
            value = element.get(attr)
            assert value in (None, "none", "currentColor"), f"{element.tag} {attr}={value}"
    shapes = [e for e in root.iter() if e.tag in (f"{ns}path", f"{ns}circle", f"{ns}rect")]
    assert shapes and all(e.get("fill") == "currentColor" for e in shapes)


def test_render_icons_writes_every_size(tmp_path: Path) -> None:
    out = tmp_path / "png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(RENDER_SCRIPT), str(ICONS / "siesta.svg"), str(out)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    written = sorted(out.iterdir())
    assert [p.name for p in written] == sorted(f"siesta-{n}.png" for n in SIZES)
    for size in SIZES:
        width, height, visible = png_info(out / f"siesta-{size}.png")
        assert (width, height) == (size, size)
        assert visible, f"the {size}px render is blank"


def test_render_icons_hicolor_layout(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(RENDER_SCRIPT), str(ICONS / "siesta-symbolic.svg"), str(tmp_path),
                             "--layout", "hicolor", "--name", "x", "--sizes", "16", "32"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert png_info(tmp_path / "16x16" / "apps" / "x.png")[:2] == (16, 16)
    assert png_info(tmp_path / "32x32" / "apps" / "x.png")[:2] == (32, 32)
    assert result.stdout.split() == [str(tmp_path / "16x16/apps/x.png"), str(tmp_path / "32x32/apps/x.png")]


# ---- the systemd user unit -----------------------------------------------------------

def test_systemd_unit_runs_siesta_serve() -> None:
    unit = read_ini(UNIT_FILE.read_text(encoding="utf-8"))
    command = shlex.split(unit["Service"]["ExecStart"])
    assert Path(command[0]).name == "siesta" and command[1:] == ["serve"]
    assert unit["Service"]["KillMode"] == "mixed", "Siesta stops its model servers itself on SIGTERM"
    assert unit["Install"]["WantedBy"] == "default.target"


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists that ExecStart exists: point it at one that does.
    text = UNIT_FILE.read_text(encoding="utf-8").replace("ExecStart=%h/.local/bin/siesta serve",
                                                         "ExecStart=/bin/sh -c true serve")
    unit = tmp_path / UNIT_FILE.name
    unit.write_text(text, encoding="utf-8")
    result = run_tool(tool, "verify", str(unit))
    output = result.stdout + result.stderr
    if result.returncode != 0 and UNIT_FILE.name not in output:
        pytest.skip(f"systemd-analyze cannot run here: {output.strip()[:200]}")
    assert result.returncode == 0 and UNIT_FILE.name not in output, output


# ---- install-desktop.sh --------------------------------------------------------------

def expected_files(prefix: Path, config_home: Path) -> list[Path]:
    hicolor = prefix / "share" / "icons" / "hicolor"
    return [
        prefix / "share" / "applications" / f"{APP_ID}.desktop",
        prefix / "share" / "metainfo" / f"{APP_ID}.metainfo.xml",
        hicolor / "scalable" / "apps" / f"{APP_ID}.svg",
        hicolor / "symbolic" / "apps" / f"{APP_ID}-symbolic.svg",
        *(hicolor / f"{n}x{n}" / "apps" / f"{APP_ID}.png" for n in SIZES),
        config_home / "systemd" / "user" / "siesta-serve.service",
    ]


@pytest.fixture
def install_env(tmp_path: Path, isolated_home: Path) -> dict[str, str]:
    """The environment for install-desktop.sh: PREFIX in tmp, and a systemctl stub first on
    PATH that records its calls (so no test can reach the real user's systemd)."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    log = tmp_path / "systemctl.log"
    stub = stubs / "systemctl"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit 1\n', encoding="utf-8")
    stub.chmod(0o755)
    return dict(os.environ, PREFIX=str(tmp_path / "prefix"), PYTHON=sys.executable, QT_QPA_PLATFORM="offscreen",
                PATH=f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}")


def run_install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT), *args], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_install_and_uninstall(tmp_path: Path, isolated_home: Path, install_env: dict[str, str]) -> None:
    prefix, config_home = tmp_path / "prefix", isolated_home / ".config"
    result = run_install(install_env, "--autostart")
    files = expected_files(prefix, config_home)
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"not installed: {missing}\n{result.stdout}{result.stderr}"
    autostart_entry = config_home / "autostart" / "siesta.desktop"
    assert autostart_entry == autostart.entry_path() and autostart.is_enabled()
    assert "systemctl --user enable --now siesta-serve.service" in result.stdout

    installed = desktop_entry(files[0])
    assert installed["Exec"] == "siesta" and installed["Icon"] == APP_ID
    assert files[1].read_bytes() == METAINFO_FILE.read_bytes()
    assert files[2].read_bytes() == (ICONS / "siesta.svg").read_bytes()
    assert files[3].read_bytes() == (ICONS / "siesta-symbolic.svg").read_bytes()
    for n, png in zip(SIZES, files[4:12]):
        assert png_info(png)[:2] == (n, n)
    unit = read_ini(files[-1].read_text(encoding="utf-8"))
    assert shlex.split(unit["Service"]["ExecStart"])[-1] == "serve"

    result = run_install(install_env, "--uninstall")
    left = [str(f) for f in [*files, autostart_entry] if f.exists()]
    assert not left, f"--uninstall left {left}"
    assert not autostart.is_enabled()
    calls = (tmp_path / "systemctl.log").read_text() if (tmp_path / "systemctl.log").exists() else ""
    assert "disable" not in calls, "systemd was told to disable a unit it did not load from this PREFIX"


def test_install_with_exec_quotes_the_program(tmp_path: Path, isolated_home: Path,
                                              install_env: dict[str, str]) -> None:
    program = tmp_path / "my bundle 100%" / "siesta"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    run_install(install_env, "--exec", str(program), "--no-systemd")
    desktop = tmp_path / "prefix" / "share" / "applications" / f"{APP_ID}.desktop"
    exec_line = desktop_entry(desktop)["Exec"]
    assert exec_line == f'"{program}"'.replace("%", "%%")
    assert not (isolated_home / ".config" / "systemd" / "user" / "siesta-serve.service").exists()
    validator = shutil.which("desktop-file-validate")
    if validator:
        check = run_tool(validator, str(desktop))
        assert check.returncode == 0, check.stdout + check.stderr
    run_install(install_env, "--uninstall")
    assert not desktop.exists()


def test_install_rejects_unknown_options(install_env: dict[str, str]) -> None:
    result = subprocess.run(["bash", str(INSTALL_SCRIPT), "--bogus"], capture_output=True, text=True,
                            timeout=30, env=install_env)
    assert result.returncode != 0 and "unknown option" in result.stderr


# ---- macOS ---------------------------------------------------------------------------

def test_macos_launch_agent_starts_siesta_at_login() -> None:
    import plistlib

    with (PACKAGING / "macos" / f"{APP_ID}.plist").open("rb") as fh:
        agent = plistlib.load(fh)
    assert agent["Label"] == APP_ID
    assert agent["ProgramArguments"] == ["@SIESTA@"]  # the README's sed fills in the full path
    assert agent["RunAtLoad"] is True
    # the agent the Settings toggle writes on a Mac (app/ui/platform/autostart.py): change one, change the other
    assert agent == autostart.launch_agent(["@SIESTA@"]), "update packaging/macos/ to match app/ui/platform/autostart.py"


# ---- the PyInstaller spec and its entry point (no build) ------------------------------

def spec_list(name: str) -> list[str]:
    """The string literals of the spec's list assigned to ``name`` (also ``f(...) + [...]``)."""
    tree = ast.parse((PACKAGING / "siesta.spec").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = node.value.right if isinstance(node.value, ast.BinOp) else node.value
            assert isinstance(value, ast.List)
            return [ast.literal_eval(e) for e in value.elts]
    raise AssertionError(f"no {name} in siesta.spec")


def test_spec_hidden_imports_exist() -> None:
    for module in spec_list("hiddenimports"):
        if module in ("gguf", "numpy") and importlib.util.find_spec(module.split(".")[0]) is None:
            continue  # optional: `siesta demo` only
        assert importlib.util.find_spec(module) is not None, f"hidden import {module} is not installed"


def test_spec_keeps_the_modules_siesta_uses() -> None:
    excludes = set(spec_list("excludes"))
    used = {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtNetwork", "PySide6.QtSvg",
            "qasync", "aiohttp", "gguf", "numpy", "yaml", "anyio"}
    assert not used & excludes


def test_spec_puts_the_icons_where_the_app_looks() -> None:
    """Frozen, importlib.resources.files("app") is <bundle>/_internal/app, so the icons go to
    app/resources/icons/, the first folder app/ui/icons.py looks in."""
    text = (PACKAGING / "siesta.spec").read_text(encoding="utf-8")
    assert '"app/resources/icons"' in text
    source = (ROOT / "app" / "ui" / "icons.py").read_text(encoding="utf-8")
    assert 'resources.files("app") / "resources" / "icons"' in source


def test_pyproject_ships_the_symbolic_icon() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["scripts"]["siesta"] == "app.cli:main"
    assert "*.svg" in data["tool"]["setuptools"]["package-data"]["app.resources.icons"]


@pytest.fixture
def entry_module(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("siesta_entry_under_test", PACKAGING / "siesta_entry.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return module


def test_entry_runs_the_watchdog_command_line(entry_module, tmp_path: Path) -> None:
    """Frozen, the process reaper runs `siesta -I -S -c SOURCE`: the entry runs SOURCE."""
    marker = tmp_path / "ran"
    code = f"import sys; open({str(marker)!r}, 'w').write(' '.join(sys.argv)); sys.exit(3)"
    assert entry_module._run_as_python(["-I", "-S", "-c", code, "a"]) == 3
    assert marker.read_text() == "-c a"
    assert entry_module._run_as_python(["-c", "x = 1"]) == 0
    assert entry_module._run_as_python(["-m", "no_such_module_anywhere"]) == 1
    for siesta_argv in ([], ["--version"], ["serve", "--port", "1"], ["-v", "ps"], ["-I"], ["-c"]):
        assert entry_module._run_as_python(siesta_argv) is None


def test_entry_gives_children_the_callers_library_path(entry_module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", "/opt/siesta/_internal", raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/siesta/_internal:/usr/local/lib")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/usr/local/lib")
    entry_module._restore_library_path()
    assert os.environ["LD_LIBRARY_PATH"] == "/usr/local/lib" and "LD_LIBRARY_PATH_ORIG" not in os.environ
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/siesta/_internal")
    entry_module._restore_library_path()
    assert "LD_LIBRARY_PATH" not in os.environ


def test_packaging_scripts_are_executable_and_parse() -> None:
    for script in ("install-desktop.sh", "build-bundle.sh"):
        path = PACKAGING / script
        assert os.access(path, os.X_OK), f"chmod +x packaging/{script}"
        result = run_tool("bash", "-n", str(path))
        assert result.returncode == 0, result.stderr


# ---- the prebuilt engine with nothing to build (as from the bundle) ---------------------

def test_engine_install_needs_no_pip_cmake_or_compiler(tmp_path: Path, isolated_home: Path) -> None:
    """`siesta engine install` from a local fake release, run as its own process with no
    cmake, compiler or anything else on PATH and a pip that fails on import: the prebuilt
    path is plain Python (httpx, tarfile), so the bundle (which has no pip) can do it.
    packaging/build-bundle.sh runs the same install through the bundle's entry point."""
    import io
    import tarfile

    from app.core.engine.release import current_platform
    from tests.fakes.releases import FakeReleases

    plat = current_platform()
    if plat.system != "linux":
        pytest.skip("the fake release holds a Linux build")
    poison = tmp_path / "poison"
    (poison / "pip").mkdir(parents=True)
    (poison / "pip" / "__init__.py").write_text("raise SystemExit('pip was imported')\n", encoding="utf-8")
    (tmp_path / "empty-bin").mkdir()
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"), PYTHONPATH=os.pathsep.join([str(poison), str(ROOT)]))

    def release(tag: str) -> bytes:
        server = f'#!/bin/sh\n[ "$1" = "--version" ] && echo "version: 1 ({tag}, fake)" && exit 0\nexit 1\n'.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("build/bin/llama-server")
            info.size, info.mode = len(server), 0o755
            tar.addfile(info, io.BytesIO(server))
        return buf.getvalue()

    def siesta(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", "--config-dir", str(tmp_path / "config"), *args],
                              capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    fake = FakeReleases().start()
    try:
        fake.add("b1", {f"llama-b1-bin-ubuntu-{plat.machine}.tar.gz": release("b1")})  # with sha256 digests
        done = siesta("engine", "install", "--engine-releases-url", fake.url, "--backend", "cpu", "--tag", "b1")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "llama.cpp b1, backend cpu" in done.stdout and "version 1 (b1, fake)" in done.stdout
        name = f"llama-b2-bin-ubuntu-{plat.machine}.tar.gz"
        fake.add("b2", {name: release("b2")}, digests={name: None})  # no digest: only with --no-verify
        env["SIESTA_ENGINE_RELEASES_URL"] = fake.url
        refused = siesta("engine", "update")
        assert refused.returncode == 1 and "--no-verify" in refused.stderr
        done = siesta("engine", "update", "--no-verify")
        assert done.returncode == 0, done.stdout + done.stderr
        info = siesta("engine", "info")
        assert info.returncode == 0, info.stdout + info.stderr
        assert "(installed engine b2-cpu: llama.cpp b2, backend cpu)" in info.stdout
        assert "1 (b2, fake)" in info.stdout and "b1-cpu" in info.stdout
    finally:
        fake.stop()
