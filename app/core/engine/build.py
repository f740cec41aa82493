"""Builds llama.cpp's ``llama-server`` from the llama.cpp tree in the llama-cpp-python sdist.

PyPI has no binary llama-server, but the ``llama-cpp-python`` sdist carries all of
llama.cpp. This downloads it with pip, configures with cmake and builds only the server
target, reporting progress, then installs one self-contained binary. A cached binary that
answers ``--version`` is reused and nothing is built.

    python3 -m app.core.engine.build [--dest DIR] [--gpu cpu|cuda|vulkan|rocm]

The built binary is found where the CMake generator puts it: ``build/bin/llama-server``
(Makefiles, Ninja), ``build/bin/Release/llama-server.exe`` (Visual Studio and the other
multi-config generators, built with ``--config Release``); on Windows every name ends in
``.exe`` (:func:`binary_name`).

Used by ``siesta engine install`` (into Siesta's data dir) and ``scripts/build-llama-server.sh``
(into the build cache, for tests and CI). Standard library only, so it runs before install
(``app.core.spawn``, the one module of Siesta it imports, is too). On Windows no step opens a
console window.

Without ``--dest``, a llama-server Siesta itself would run is reused before anything is built:
the build cache's, else the active engine ``siesta engine install`` put in Siesta's data dir,
else the source build there. So the README's two commands compile llama-server at most once,
whichever runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from app.core.spawn import child_env, child_options

SDIST_VERSION = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
BASE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_NATIVE=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
]
GPU_FLAGS = {"cpu": [], "cuda": ["-DGGML_CUDA=ON"], "vulkan": ["-DGGML_VULKAN=ON"], "rocm": ["-DGGML_HIP=ON"]}
_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")

Progress = Callable[[int, str], None]


class EngineBuildError(Exception):
    """The build failed; the message ends with the tail of the build log."""


def binary_name(platform: str | None = None) -> str:
    """``llama-server``, or ``llama-server.exe`` on Windows (``platform``: ``sys.platform``)."""
    return "llama-server.exe" if (platform or sys.platform) == "win32" else "llama-server"


# Where each kind of CMake generator puts a target's binary under the build tree, with
# CMAKE_RUNTIME_OUTPUT_DIRECTORY = bin as llama.cpp sets it: single-config (Unix Makefiles,
# Ninja) directly in bin/, multi-config (Visual Studio, Ninja Multi-Config, Xcode) in
# bin/<config>/, the build being asked for Release.
BUILT_BINARY_DIRS = (Path("bin"), Path("bin") / "Release")


def find_built_binary(build_dir: Path, name: str | None = None) -> Path:
    """The binary ``name`` (:func:`binary_name`) a build wrote under ``build_dir``, by the
    generators' layouts (:data:`BUILT_BINARY_DIRS`), else anywhere under ``bin/``;
    EngineBuildError when there is none."""
    name = name or binary_name()
    for folder in BUILT_BINARY_DIRS:
        candidate = build_dir / folder / name
        if candidate.is_file():
            return candidate
    found = sorted(p for p in (build_dir / "bin").rglob(name) if p.is_file())
    if found:
        return found[0]
    raise EngineBuildError(f"the build finished, but no {name} is under {build_dir / 'bin'}")


def default_cache_dir() -> Path:
    override = os.environ.get("SIESTA_ENGINE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "siesta" / "engine"


def cached_build_dir() -> Path:
    """Where the build without ``--dest`` goes (the tests' and CI's llama-server), one folder
    per llama-cpp-python version."""
    return default_cache_dir() / f"llama-cpp-python-{SDIST_VERSION}"


def default_data_dir() -> Path:
    """Siesta's data dir by the platform's rule, without platformdirs (not installed yet when
    this runs): what ``platformdirs.user_data_dir("siesta")`` gives, which is what
    :class:`app.core.config.paths.Paths` uses (tests/core/engine/test_build.py checks that they
    agree on Linux, macOS and Windows)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "siesta" / "siesta"
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()  # current platformdirs reads it on macOS too
    if xdg:
        return Path(xdg) / "siesta"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "siesta"
    return Path.home() / ".local" / "share" / "siesta"


def engines_in_data_dir(data_dir: Path) -> list[Path]:
    """The llama-servers Siesta would run from its data dir, in its order: the active engine of
    ``engines/state.json`` (its ``engine.json`` names the binary, kept inside the engine's
    folder), then the source build ``engine/llama-server``. Only those that are files."""
    found = []
    engines = data_dir / "engines"
    try:
        active = json.loads((engines / "state.json").read_text(encoding="utf-8")).get("active")
        if isinstance(active, str) and active and "/" not in active and "\\" not in active and not active.startswith("."):
            folder = (engines / active).resolve()
            binary = (folder / json.loads((folder / "engine.json").read_text(encoding="utf-8"))["binary"]).resolve()
            if binary.is_relative_to(folder) and binary.is_file():
                found.append(binary)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    source_build = data_dir / "engine" / binary_name()
    if source_build.is_file():
        found.append(source_build)
    return found


def detect_gpu_toolkits() -> list[str]:
    """GPU toolkits whose compilers are installed: ``cuda`` (nvcc), ``rocm`` (hipcc), ``vulkan`` (glslc)."""
    found = []
    if shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists():
        found.append("cuda")
    if shutil.which("hipcc") or Path("/opt/rocm/bin/hipcc").exists():
        found.append("rocm")
    if shutil.which("glslc"):
        found.append("vulkan")
    return found


def answers_version(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=30,
                              env=child_env(), **child_options()).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def build_llama_server(dest_dir: Path, *, gpu: str = "cpu", progress: Progress | None = None,
                       jobs: int | None = None) -> Path:
    """Builds (or reuses) ``dest_dir/llama-server`` (``.exe`` on Windows) and returns its path."""
    binary = dest_dir / binary_name()
    if binary.is_file() and answers_version(binary):
        return binary
    report = progress or (lambda pct, line: None)
    dest_dir.mkdir(parents=True, exist_ok=True)
    log_path = dest_dir / "build.log"
    flags = BASE_FLAGS + GPU_FLAGS[gpu] + shlex.split(os.environ.get("CMAKE_ARGS", ""))
    with tempfile.TemporaryDirectory(prefix="build.", dir=dest_dir) as work_dir, log_path.open("w") as log:
        work = Path(work_dir)

        def run(cmd: list[str], stage: str) -> None:
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=child_env(), **child_options())
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                match = _PROGRESS.match(line)
                if match:
                    report(10 + int(match.group(1)) * 89 // 100, line.strip())
            if proc.wait() != 0:
                log.flush()
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-25:])
                raise EngineBuildError(f"{stage} failed (log: {log_path}):\n{tail}")

        report(0, f"downloading llama-cpp-python {SDIST_VERSION} sources")
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "-d", str(work), f"llama-cpp-python=={SDIST_VERSION}"], "download")
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        report(5, "unpacking")
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        report(8, "configuring: " + " ".join(flags))
        run(["cmake", "-S", str(source), "-B", str(work / "build"), *flags], "cmake configure")
        # --config Release: a multi-config generator (Visual Studio) ignores CMAKE_BUILD_TYPE
        # and builds Debug unless told; a single-config one ignores --config
        run(["cmake", "--build", str(work / "build"), "--config", "Release", "--target", "llama-server",
             "-j", str(jobs or os.cpu_count() or 2)], "build")
        built = find_built_binary(work / "build")
        staged = dest_dir / ".llama-server.new"
        shutil.copy2(built, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, binary)
    if not answers_version(binary):
        raise EngineBuildError(f"built {binary} does not answer --version")
    report(100, f"installed {binary}")
    return binary


def copy_cached_build(dest_dir: Path) -> Path | None:
    """Copies the CPU build that ``scripts/build-llama-server.sh`` cached for the tests (one
    self-contained file, built from the same sources and flags) into ``dest_dir`` instead of
    compiling it again; None when there is none that answers ``--version``, when
    ``CMAKE_ARGS`` asks for other flags, or when ``dest_dir`` already has one."""
    cached = cached_build_dir() / binary_name()
    binary = dest_dir / binary_name()
    if os.environ.get("CMAKE_ARGS", "").strip() or binary.exists() or not cached.is_file():
        return None
    if not answers_version(cached):
        return None
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        staged = dest_dir / ".llama-server.new"
        shutil.copy2(cached, staged)
        os.chmod(staged, 0o755)
        os.replace(staged, binary)
    except OSError:
        return None  # then it is built
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, help="install dir (default: the build cache)")
    parser.add_argument("--gpu", choices=sorted(GPU_FLAGS), default="cpu")
    args = parser.parse_args(argv)
    dest = args.dest or cached_build_dir()

    last = [-1]

    def progress(pct: int, line: str) -> None:
        if pct != last[0]:
            last[0] = pct
            print(f"[{pct:3d}%] {line}", file=sys.stderr)

    cached = dest / binary_name()
    if args.dest is None and not (cached.is_file() and answers_version(cached)):
        for binary in engines_in_data_dir(default_data_dir()):
            if answers_version(binary):
                print(f"reusing the llama-server Siesta runs: {binary}", file=sys.stderr)
                print(binary)
                return 0
    try:
        print(build_llama_server(dest, gpu=args.gpu, progress=progress))
    except (EngineBuildError, OSError, StopIteration) as exc:
        print(f"llama-server build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
