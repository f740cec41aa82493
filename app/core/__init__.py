"""The model manager and everything it needs, with no Qt: usable headless and testable with plain pytest."""
