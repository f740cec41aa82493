"""``siesta doctor [--json]``: what a bug report needs (:mod:`app.core.doctor`), each item with
where it came from or why it is missing, secrets never shown. It needs no running Siesta:
it reads the files, asks llama-server, the GPUs, the desktop's tray, the port and the
remotes itself. ``--host``, ``--port`` and ``--llama-server`` describe a Siesta started with
those flags.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli.context import Context


def doctor_command(ctx: Context) -> int:
    from app.cli.parser import flags
    from app.core.doctor import build_report

    report = build_report(ctx.paths, flags(ctx.args))
    sys.stdout.write(report.json_text() + "\n" if ctx.args.json else report.text())
    return 0
