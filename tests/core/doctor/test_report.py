"""The report's shape: items with a value and its source, or why they are missing; a probe
that fails becomes a missing item and the rest goes on; plain text and JSON; and no secret
gets through, even one a probe let slip."""

from __future__ import annotations

import json

from app.core.doctor.report import Item, Report, found, guarded, missing


def test_an_item_and_how_it_reads() -> None:
    item = found("version", "version", "0.1.0", "app.__version__")
    assert item.found and item.shown() == "0.1.0"
    assert item.to_json() == {"label": "version", "value": "0.1.0", "source": "app.__version__"}
    gone = missing("ram", "RAM", "no /proc/meminfo", "/proc/meminfo")
    assert not gone.found and gone.shown() == "missing: no /proc/meminfo"
    assert gone.to_json() == {"label": "RAM", "missing": "no /proc/meminfo", "source": "/proc/meminfo"}
    listed = found("gpus", "GPUs", ["a", "b"], None, notes=["one more line"])
    assert listed.shown() == "a, b" and listed.to_json()["notes"] == ["one more line"]
    assert found("x", "x", [], None).shown() == "(none)" and found("x", "x", None, None).shown() == "(none)"


def test_a_failing_probe_keeps_what_it_found_and_says_what_failed() -> None:
    def probe():  # noqa: ANN202
        yield found("first", "first", 1, "here")
        raise OSError(5, "Input/output error")

    section = guarded("memory", "Memory", probe)
    assert [i.key for i in section.items] == ["first", "probe_failed"]
    assert section.items[1].missing == "the Memory probe failed: OSError: [Errno 5] Input/output error"

    def broken():  # noqa: ANN202
        raise RuntimeError("no")

    assert guarded("x", "X", broken).items[0].missing == "the X probe failed: RuntimeError: no"


def test_text_and_json() -> None:
    report = Report("2026-01-02T03:04:05+00:00", (
        guarded("siesta", "Siesta", lambda: [found("version", "version", "0.1.0", "app.__version__"),
                                             missing("install", "install kind", "unknown")]),
        guarded("gpus", "GPUs", lambda: [found("gpu0", "gpu0", {"name": "X"}, "NVML", text="X, 8.0 GB",
                                               notes=["device note"])]),
    ))
    assert report.text() == """Siesta diagnostics, 2026-01-02T03:04:05+00:00
Each item says where it came from [in brackets], or why it is missing. Secrets are shown as ***.

Siesta
  version       0.1.0  [app.__version__]
  install kind  missing: unknown

GPUs
  gpu0  X, 8.0 GB  [NVML]
          device note
"""
    data = json.loads(report.json_text())
    assert data == {"format": 1, "generated": "2026-01-02T03:04:05+00:00",
                    "siesta": {"title": "Siesta", "items": {
                        "version": {"label": "version", "value": "0.1.0", "source": "app.__version__"},
                        "install": {"label": "install kind", "missing": "unknown"}}},
                    "gpus": {"title": "GPUs", "items": {
                        "gpu0": {"label": "gpu0", "value": {"name": "X"}, "text": "X, 8.0 GB", "source": "NVML",
                                 "notes": ["device note"]}}}}
    assert report.item("gpus", "gpu0").value == {"name": "X"}


def test_no_secret_gets_through_an_item() -> None:
    item = Item("r", "remote", value={"url": "http://u:leak-1@h", "api_key": "leak-2", "args": ["--api-key", "leak-3"]},
                source="GET http://u:leak-4@h/v1?token=leak-5", text="--hf-token leak-6",
                notes=("HF_TOKEN=leak-7",))
    shown = json.dumps(item.to_json()) + item.shown()
    assert "leak" not in shown
    assert item.value == {"url": "http://***@h", "api_key": "***", "args": ["--api-key", "***"]}
    why = Item("m", "x", missing="got {'HF_TOKEN': 'leak-8'}")
    assert why.missing == "got {'HF_TOKEN': '***'}"
