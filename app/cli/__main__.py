"""``python -m app.cli`` does the same as ``siesta``."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
