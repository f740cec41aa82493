"""``siesta doctor``: what a bug report needs, each item with where it came from, or why it
is missing. One module per probe family: :mod:`.install` (Siesta's version and install kind,
Python, Qt, the platform), :mod:`.engine` (the llama-server), :mod:`.memory` (RAM, the
pressure source, the GPUs and their readers), :mod:`.tray` with :mod:`.tray_unix` (the
system tray, asked without Qt), :mod:`.files` (config, folders, recipes), :mod:`.network`
(the port, the remotes); :mod:`.report` is the report's shape (plain text and JSON) and
:mod:`.collect` builds it. No Qt, and no running Siesta needed; secrets never shown
(:mod:`app.core.config.redact`)."""

from app.core.doctor.collect import SECTIONS, Probes, build_report
from app.core.doctor.report import Item, Report, Section

__all__ = ["SECTIONS", "Probes", "build_report", "Item", "Report", "Section"]
