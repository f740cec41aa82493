"""The whole report on this machine: every section, in order, in a process that never imports
Qt, with no Siesta running; a broken part of the machine is a missing item, never an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.core.doctor import SECTIONS, Probes, build_report

REPO = Path(__file__).resolve().parents[3]


def test_every_section_in_order(paths, write_recipe, tmp_path: Path) -> None:  # noqa: ANN001
    write_recipe("tiny", fake=["--api-key", "sekrit-0"])
    report = build_report(paths, probes=Probes(environ={}, psi_path=tmp_path / "no-psi"))
    assert tuple(s.key for s in report.sections) == SECTIONS
    data = json.loads(report.json_text())
    assert list(data) == ["format", "generated", *SECTIONS]
    for key in SECTIONS:
        assert data[key]["items"], key
        for item in data[key]["items"].values():
            assert ("value" in item) != ("missing" in item), item
    assert data["recipes"]["items"]["tiny"]["value"]["command"][-1] == "***"
    assert "sekrit" not in report.text() + report.json_text()
    assert report.item("tray", "tray").value is None  # no display, no bus in that environment


def test_the_report_never_imports_qt() -> None:
    code = ("import sys\nfrom app.core.config.paths import Paths\nfrom app.core.doctor import build_report\n"
            "text = build_report(Paths.resolve()).text()\n"
            "assert 'Qt (PySide6)' in text, text\n"
            "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'shiboken6'))))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
