"""Takes the README's screenshots of one model's windows: the Models window with its
"Try it" panel after a real streamed answer, the "Model settings..." dialog of a llama.cpp
model with its memory estimate, and that model's log viewer.

Run it on an X server (it needs a display; Xvfb is enough):

    xvfb-run -a -s "-screen 0 1280x800x24" python3 scripts/screenshots_models.py [OUT_DIR]

It writes models-window.png, model-settings.png and log-viewer.png to OUT_DIR (default
docs/screenshots). Everything runs in a temporary folder: the config, the recipes, the
logs; nothing of the user's config is read or written. The widgets are the app's own,
built on the app's qasync loop over a real ModelManager and its HTTP front door
(``SiestaRuntime``), so Try it streams through Siesta's own ``/v1/chat/completions``.

The models: ``tiny``, a tiny GGUF model the project writes itself (``app.demo_model``)
served by a real llama-server when one is found (``SIESTA_LLAMA_SERVER``, ``llama-server``
on PATH, or the build cache of scripts/build-llama-server.sh), else the test suite's fake
OpenAI-compatible backend; and two ``command`` recipes of that fake backend. The GPU is a
stand-in, as in scripts/screenshots.sh: a pynvml module on sys.path showing one 24 GB
NVIDIA GPU on which each model's server holds what its recipe's SIESTA_SHOT_VRAM_MB says.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


PROMPT = "Say hello in one line."
MODELS_WINDOW_SIZE = (900, 580)
SETTINGS_WIDTH = 640
LOG_VIEWER_SIZE = (900, 460)


def find_llama_server() -> Path | None:
    for candidate in (os.environ.get("SIESTA_LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    cached = sorted(Path.home().glob(".cache/siesta/engine/*/llama-server"))
    return cached[-1] if cached else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def write_config(work: Path, llama_server: Path | None) -> Path:
    from app.demo_model import write_tiny_model

    config = work / "config"
    recipes = config / "recipes"
    recipes.mkdir(parents=True)
    settings = f"port = {free_port()}\nhost = \"127.0.0.1\"\n"
    fake = toml_list([sys.executable, str(REPO / "tests" / "fakes" / "backend.py"), "--port", "{port}"])
    if llama_server is not None:
        settings += f'llama_server = "{llama_server}"\n'
        model = write_tiny_model(work / "models" / "tiny-llama-q8_0.gguf")
        (recipes / "tiny.toml").write_text(textwrap.dedent(f"""\
            # A tiny test model: quick to load, answers in a second.
            backend = "llamacpp"
            model = "{model}"
            args = ["--ctx-size", "512", "-ngl", "0", "-t", "2", "-n", "40"]
            unload_timeout = "5m"
            """))
    else:
        (recipes / "tiny.toml").write_text(textwrap.dedent(f"""\
            # A small model for quick questions.
            backend = "command"
            command = {fake}
            unload_timeout = "5m"
            env = {{ SIESTA_SHOT_VRAM_MB = "1250" }}
            """))
    (recipes / "qwen.toml").write_text(textwrap.dedent(f"""\
        # The big one: keep it a while once loaded.
        backend = "command"
        command = {fake}
        unload_timeout = "15m"
        env = {{ SIESTA_SHOT_VRAM_MB = "9420" }}
        """))
    (recipes / "coder.toml").write_text(textwrap.dedent(f"""\
        # Loaded on demand; uses the global timeout.
        backend = "command"
        command = {fake}
        memory_estimate = "4.5GB"
        """))
    (config / "settings.toml").write_text(settings)
    return config


async def until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds} s for {what}")
        await asyncio.sleep(0.05)


async def settle(widget, seconds: float = 0.4) -> None:
    """Shows the widget and lets the qasync loop deliver its layout and paint events."""
    widget.show()
    widget.raise_()
    await asyncio.sleep(seconds)


def save(widget, path: Path) -> None:
    if not widget.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"wrote {path} ({widget.width()}x{widget.height()})")


async def shoot(work: Path, out: Path, llama_server: Path | None) -> None:
    from app.core.config.paths import Paths
    from app.core.config.settings import load_settings
    from app.runtime import SiestaRuntime
    from app.ui.bridge import ManagerBridge
    from app.ui.dialogs.model_settings import ModelSettingsDialog
    from app.ui.windows.log_viewer import LogViewer
    from app.ui.windows.models import ModelsWindow

    class Shell:
        """What the Models window asks of the app; these shots open nothing from it."""

        def has_tray(self) -> bool:
            return True

        def __getattr__(self, name: str):
            return lambda *args, **kwargs: None

    config = write_config(work, llama_server)
    paths = Paths(config_dir=config, log_dir=work / "logs", data_dir=work / "data", state_dir=work / "state")
    runtime = SiestaRuntime(paths, load_settings(paths.settings_file))
    await runtime.start()
    try:
        assert runtime.manager is not None
        bridge = ManagerBridge(runtime.manager)
        bridge.api_url = runtime.url
        bridge.refresh_system()
        await runtime.manager.load("qwen")  # a second model loaded, for the table

        # (1) the Models window: Try it sends through its own path; the first request loads tiny.
        window = ModelsWindow(bridge, Shell())
        window.resize(*MODELS_WINDOW_SIZE)
        window.move(40, 40)
        await settle(window)
        panel = window.try_it
        panel.model_combo.setCurrentText("tiny")
        panel.prompt.setPlainText(PROMPT)
        task = panel.send()
        assert task is not None, "Try it did not send"
        await until(lambda: not panel.running, 45, "the Try it answer")
        if panel.status_label.text() != "Done.":
            raise RuntimeError(f"Try it ended with: {panel.status_label.text()!r}")
        await until(lambda: "idle, unloads in" in panel.timeout_label.text(), 5, "the countdown beside the model")
        bridge.refresh_system()
        await settle(window, 1.2)
        window.refresh(fresh=True)
        await settle(window, 0.3)
        save(window, out / "models-window.png")

        # (2) Model settings of tiny, with its estimate.
        dialog = ModelSettingsDialog(bridge, "tiny")
        dialog.resize(SETTINGS_WIDTH, 400)
        dialog.move(80, 60)
        await settle(dialog)
        if not dialog.is_command:
            await until(lambda: dialog.estimate_runs >= 1, 15, "the memory estimate")
        # As tall as its wrapped help lines need at this width, no taller.
        height = dialog.layout().totalHeightForWidth(SETTINGS_WIDTH)
        dialog.resize(SETTINGS_WIDTH, height if height > 0 else dialog.sizeHint().height())
        await settle(dialog, 0.4)
        save(dialog, out / "model-settings.png")
        dialog.close()

        # (3) tiny's log, following new lines.
        viewer = LogViewer(bridge, "tiny")
        viewer.resize(*LOG_VIEWER_SIZE)
        viewer.move(60, 80)
        await settle(viewer, 1.2)  # a poll or two
        save(viewer, out / "log-viewer.png")
        viewer.close()
        window.close()
        await settle(window, 0.1)
        await bridge.close()
    finally:
        await runtime.stop()


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DISPLAY"):
        print("screenshots_models.py: no DISPLAY; run it under xvfb-run", file=sys.stderr)
        return 1
    llama_server = find_llama_server()
    with tempfile.TemporaryDirectory(prefix="siesta-shots-") as tmp:
        work = Path(tmp)
        # Nothing of the user's environment: a temporary home, the stand-in GPU first on the path.
        for var in ("SIESTA_CONFIG_DIR", "SIESTA_PORT", "SIESTA_HOST", "SIESTA_GLOBAL_UNLOAD_TIMEOUT",
                    "SIESTA_LLAMA_SERVER", "SIESTA_API_KEY", "LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER"):
            os.environ.pop(var, None)
        home = work / "home"
        for sub in (".config", ".local/share", ".local/state", ".cache"):
            (home / sub).mkdir(parents=True)
        os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                          XDG_DATA_HOME=str(home / ".local/share"), XDG_STATE_HOME=str(home / ".local/state"),
                          XDG_CACHE_HOME=str(home / ".cache"), QT_QPA_PLATFORM="xcb")
        sys.path.insert(0, str(Path(__file__).resolve().parent / "stand_in_gpu"))  # its pynvml

        from PySide6.QtWidgets import QApplication

        from app.ui.event_loop import SiestaEventLoop

        app = QApplication(sys.argv[:1])
        app.setApplicationName("Siesta")
        started = time.monotonic()
        with asyncio.Runner(loop_factory=lambda: SiestaEventLoop(app)) as runner:
            runner.run(shoot(work, out, llama_server))
        print(f"done in {time.monotonic() - started:.1f} s "
              f"({'llama-server ' + str(llama_server) if llama_server else 'the fake backend'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
