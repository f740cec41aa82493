"""The crash back-off is what lifecycle.py says it is (issue 26, item 11): at most
:data:`CRASH_BACKOFF_MAX`, and that wait comes before the one try after the second crash in
the window; the third crash is a crash loop, so no wait ever grows past it. Every order of
crashes and requests up to a few crashes is tried, in and out of the window."""

from __future__ import annotations

import itertools

from app.core.models.lifecycle import (
    CRASH_BACKOFF_MAX,
    CRASH_LOOP_COUNT,
    CRASH_LOOP_WINDOW,
    CrashRecord,
)


def test_the_longest_wait_is_the_one_the_module_promises() -> None:
    steps = (1.0, 10.0, CRASH_LOOP_WINDOW / 2, CRASH_LOOP_WINDOW + 1)  # seconds between two crashes
    longest = 0.0
    for gaps in itertools.product(steps, repeat=CRASH_LOOP_COUNT + 2):
        record, now = CrashRecord(), 0.0
        for gap in gaps:
            now += gap
            if record.in_loop:
                record.clear()  # a manual load (or a recipe edit) ends the loop
            record.record(now)
            for later in (0.0, 1.0, CRASH_LOOP_WINDOW / 2):
                longest = max(longest, record.backoff(now + later))
    assert longest == CRASH_BACKOFF_MAX == 1.0


def test_the_one_wait_comes_after_the_second_crash_and_the_third_is_a_loop() -> None:
    record = CrashRecord()
    record.record(0.0)
    assert record.backoff(0.0) == 0.0 and not record.in_loop  # one crash: reload at once
    record.record(10.0)
    assert record.backoff(10.0) == CRASH_BACKOFF_MAX and not record.in_loop
    assert record.backoff(CRASH_LOOP_WINDOW + 1) == 0.0  # the first crash has left the window
    record.record(20.0)
    assert record.in_loop and record.backoff(20.0) == 0.0  # requests get crash_loop, not a wait


def test_crashes_spread_past_the_window_never_make_a_loop() -> None:
    record = CrashRecord()
    for i in range(10):
        record.record(i * (CRASH_LOOP_WINDOW / 2 + 1))
        assert not record.in_loop
        assert record.backoff(i * (CRASH_LOOP_WINDOW / 2 + 1)) == (CRASH_BACKOFF_MAX if i else 0.0)
