"""``siesta --version``: one version, written once, and the active engine as recorded at install."""

from __future__ import annotations

from pathlib import Path

from tests.core.engine.test_install import add_cpu, do_install
from tests.fakes.releases import FakeReleases


def test_version_names_the_engine_as_recorded_at_install(tmp_path: Path) -> None:
    from app import __version__
    from app.cli.parser import version_text

    data = tmp_path / "data"
    assert version_text(data).splitlines() == [
        f"siesta {__version__}",
        "engine: none installed by `siesta engine install` (`siesta engine info` shows the llama-server in use)"]
    fake = FakeReleases().start()
    try:
        add_cpu(fake, "b100")
        do_install(fake, data, "b100")
    finally:
        fake.stop()
    assert version_text(data).splitlines()[1] == "engine: llama.cpp b100, cpu (siesta engine install)"


def test_the_version_is_written_once() -> None:
    import importlib.metadata
    import tomllib

    import app

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "app.__version__"}
    assert importlib.metadata.version("siesta") == app.__version__
