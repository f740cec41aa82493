"""`siesta ps`'s line on memory given back (app/core/metrics/words.py: given_back_line)."""

from __future__ import annotations

import datetime as dt

from app.core.metrics.words import given_back_line

GBH = 2**30 * 3600


def test_it_says_today_and_since_when_in_gb_hours():
    now = dt.datetime(2026, 5, 8, 15, 0).timestamp()  # a Friday
    tuesday = dt.datetime(2026, 5, 5, 9, 30).timestamp()
    line = given_back_line({"today": 41 * GBH, "total": 310 * GBH, "since": tuesday}, now)
    assert line == "gave back 41.0 GB·h today, 310.0 GB·h since Tuesday"
    assert given_back_line({"today": 0, "total": GBH, "since": now - 3600}, now).endswith("since 14:00")
    assert given_back_line({"today": 0, "total": GBH, "since": now - 30 * 86400}, now).endswith("since 8 April 2026")


def test_nothing_given_back_says_nothing():
    assert given_back_line({"today": 0, "total": 0, "since": None}, 0) == ""
    assert given_back_line(None, 0) == ""
