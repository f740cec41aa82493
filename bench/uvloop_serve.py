"""``python -m bench.uvloop_serve ARGS``: ``siesta ARGS`` (i.e. ``python -m app ARGS``) on uvloop.

Evaluates the proposal in docs/performance.md to run the headless ``siesta serve`` on
uvloop (``pip install uvloop``); ``python -m bench --uvloop`` starts Siesta through this.
"""

import sys

import uvloop

uvloop.install()

from app.cli import main  # noqa: E402 - after the loop policy is set

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
