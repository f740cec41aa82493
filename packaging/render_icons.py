#!/usr/bin/env python3
"""Renders an SVG icon to square PNGs, one per size, for the hicolor icon theme.

    python3 packaging/render_icons.py SVG OUTDIR [--name NAME] [--sizes 16 22 ...] [--layout flat|hicolor]

``--layout flat`` (the default) writes ``OUTDIR/NAME-<N>.png``; ``--layout hicolor`` writes
``OUTDIR/<N>x<N>/apps/NAME.png``, the layout under ``share/icons/hicolor/``. NAME defaults to
the SVG's file name without ``.svg``. Each written path is printed, one a line.

Uses Qt's own SVG renderer (QtSvg, part of PySide6-Essentials), so it needs no display: the
Qt platform is forced to ``offscreen`` unless QT_QPA_PLATFORM is already set. Only QtGui is
needed (QImage/QPainter), never a QApplication with windows.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SIZES = (16, 22, 24, 32, 48, 64, 128, 256)


def render(svg: Path, out_dir: Path, sizes: tuple[int, ...] | list[int] = SIZES, name: str | None = None,
           layout: str = "flat") -> list[Path]:
    """Renders ``svg`` at each size; returns the PNG paths. RuntimeError when Qt cannot."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    # QPainter on a QImage needs a Q(Gui)Application for fonts and colour handling.
    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 - kept alive while painting
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise RuntimeError(f"not a valid SVG: {svg}")
    name = name or svg.name.removesuffix(".svg")
    written: list[Path] = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        if layout == "hicolor":
            target = out_dir / f"{size}x{size}" / "apps" / f"{name}.png"
        else:
            target = out_dir / f"{name}-{size}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(target), "PNG"):
            raise RuntimeError(f"could not write {target}")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render an SVG icon to PNGs at the hicolor theme's sizes.")
    parser.add_argument("svg", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", help="base name of the PNGs (default: the SVG's name)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    parser.add_argument("--layout", choices=("flat", "hicolor"), default="flat")
    args = parser.parse_args(argv)
    try:
        for path in render(args.svg, args.out_dir, args.sizes, args.name, args.layout):
            print(path)
    except (RuntimeError, OSError) as exc:
        print(f"render_icons: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
