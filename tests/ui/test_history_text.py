"""The words of the history: memory given back and each model's day (issue 29), and a load's
progress in the words of every model line."""

from __future__ import annotations

import datetime as dt
import time

from app.ui import history_text as ht
from app.ui import text

GB_HOUR = 2**30 * 3600


def local(*args: int) -> float:
    return dt.datetime(*args).timestamp()


def test_given_back_line_says_what_siesta_ps_says() -> None:
    now = local(2025, 3, 13, 15, 0)  # a Thursday
    summary = {"today": 41 * GB_HOUR, "total": 310 * GB_HOUR, "since": local(2025, 3, 11, 9, 30)}
    assert ht.given_back_line(summary, now) == "Gave back 41.0 GB·h today, 310.0 GB·h since Tuesday"
    assert ht.given_back_line({**summary, "since": local(2025, 3, 13, 9, 5)}, now).endswith("since 09:05")
    assert ht.given_back_line({**summary, "since": local(2025, 2, 1)}, now).endswith("since 1 February 2025")
    assert ht.given_back_line({**summary, "today": 0}, now) == "Gave back 0 B·h today, 310.0 GB·h since Tuesday"
    assert ht.given_back_line({"today": 0, "total": 0, "since": None}, now) == ""
    assert ht.given_back_line(None, now) == ""


def test_the_menus_line_is_the_days_figure_alone() -> None:
    assert ht.given_back_today({"today": 41 * GB_HOUR, "total": 310 * GB_HOUR}) == "Gave back 41.0 GB·h of memory today"
    assert ht.given_back_today({"today": 0, "total": 310 * GB_HOUR}) == ""
    assert ht.given_back_today(None) == ""


def test_a_models_day_in_a_cell_and_its_tooltip() -> None:
    day = {"name": "big", "loads": 3, "loads_failed": 0, "loaded": 0.42, "idle": 0.30, "unloaded": 0.58,
           "given_back": 0}
    assert ht.day_cell(day) == "3×, 42% in memory"
    assert ht.day_tooltip(day, {"given_back": 2.1 * GB_HOUR}) == (
        "Today: loaded 3×, 42% of the day in memory (30% idle), 58% not loaded; gave back 2.1 GB·h today")
    assert ht.day_shares(day) == (0.42 - 0.30, 0.30)
    quiet = {"name": "spare", "loads": 0, "loads_failed": 0, "loaded": 0.0, "idle": 0.0, "unloaded": 1.0}
    assert ht.day_cell(quiet) == "not loaded"
    assert ht.day_tooltip(quiet) == "Today: not loaded"
    brief = {**day, "loads": 1, "loads_failed": 1, "loaded": 0.0004, "idle": 0.0, "unloaded": 0.9996}
    assert ht.day_cell(brief) == "1× (1 failed), <1% in memory"
    since_yesterday = {**day, "loads": 0}  # loaded before midnight, still in memory
    assert ht.day_cell(since_yesterday) == "42% in memory"
    assert ht.day_cell(None) == "" and ht.day_shares(None) == (0.0, 0.0)
    assert ht.days_by_model({"models": [day, quiet]}) == {"big": day, "spare": quiet}
    assert ht.days_by_model(None) == {}


def test_a_load_shows_its_share_of_the_last_load_time_or_its_seconds() -> None:
    now = time.time()
    first = {"name": "big", "state": "loading", "loading_since": now - 12.4, "last_load_seconds": None}
    assert text.status_text(first, now) == "loading... 12 s"
    again = {**first, "last_load_seconds": 30.0}
    assert text.status_text(again, now) == "loading... ~41%"
    assert text.menu_label(again, now) == "big: loading... ~41%"
    slower = {**first, "loading_since": now - 31.0, "last_load_seconds": 30.0}
    assert text.status_text(slower, now) == "loading... 31 s"  # longer than last time: its seconds
    instant = {**first, "last_load_seconds": 0.2}  # a load too quick to count in shares
    assert text.status_text(instant, now) == "loading... 12 s"
