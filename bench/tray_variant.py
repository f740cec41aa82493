"""The tray app with a proposed change to its Models window's tick applied in-process.

    python -m bench.tray_variant VARIANT [siesta's own arguments...]

Measures a proposal for app/ui/windows/models.py without editing it
(``python -m bench.profile_tray --variants ...`` runs these side by side):

- ``shipped``: as it is;
- ``countdown-only``: the once-a-second tick rewrites only each row's state text (its
  countdown) from the snapshot the window already holds, where the shipped tick re-reads
  every model's snapshot, rewrites every widget of every row, checks the log files and
  llama-server, and fits the columns; all of that still happens on every manager event;
- ``no-tick``: the tick does nothing (the window open, its table never changing);
- ``countdown-only+quiet-try-it`` and ``no-tick+quiet-try-it``: the same, and the Try-it
  panel's own once-a-second timer (which rewrites its "unloads in m:ss" label, so the
  window lays out and repaints that label every second) fires once an hour instead.
"""

from __future__ import annotations

import sys
from typing import Any

VARIANTS = ("shipped", "countdown-only", "no-tick", "countdown-only+quiet-try-it", "no-tick+quiet-try-it")


def _countdown_only(window: Any) -> None:
    from app.ui import text

    now = window.bridge.now()
    for row in window.rows.values():
        snapshot = getattr(row, "snapshot", None)
        if snapshot is None:
            continue
        status = text.status_text(snapshot, now)
        if snapshot.get("stale"):
            status += " (recipe changed: unload to apply)"
        if row.state_item.text() != status:
            row.state_item.setText(status)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        print(f"usage: python -m bench.tray_variant {'|'.join(VARIANTS)} [siesta arguments...]", file=sys.stderr)
        return 2
    variant = sys.argv[1]
    from app.ui.windows import models as models_window
    from app.ui.windows import try_it

    if variant.startswith("countdown-only"):
        models_window.ModelsWindow._tick = _countdown_only  # type: ignore[method-assign]
    elif variant.startswith("no-tick"):
        models_window.ModelsWindow._tick = lambda self: None  # type: ignore[method-assign]
    if variant.endswith("+quiet-try-it"):
        original = try_it.TryItPanel.__init__

        def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.ticker.setInterval(3_600_000)

        try_it.TryItPanel.__init__ = quiet_init  # type: ignore[method-assign]
    from app.cli import main as cli_main

    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
