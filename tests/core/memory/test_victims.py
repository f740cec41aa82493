"""The victim choice (:mod:`app.core.memory.victims`) as a table of cases."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from app.core.memory.victims import (
    DEFAULT_LOAD_RATE,
    EXACT_LIMIT,
    TAU,
    TIE,
    UNLOAD_COST,
    Candidate,
    choose,
    cost,
    median_load_rate,
    reload_seconds,
)

MB = 1024 * 1024


def names(choice) -> set[str]:  # noqa: ANN001
    return {v.name for v in choice.victims}


def test_the_case_from_the_issue_the_big_one_alone_covers_the_shortfall() -> None:
    # tiny was used first (least recently used): LRU took it first and freed 17.5 MB of 384 MB
    tiny = Candidate("tiny", int(17.5 * MB), idle_s=120, load_s=0.4)
    big = Candidate("big", 706 * MB, idle_s=30, load_s=2.5)
    choice = choose([tiny, big], need_bytes=384 * MB)
    assert names(choice) == {"big"}
    assert [k.name for k in choice.kept] == ["tiny"]
    assert choice.covers and choice.freed == 706 * MB


def test_only_the_one_that_covers_goes_not_every_smaller_one() -> None:
    pool = [Candidate("a", 60 * MB, 10), Candidate("b", 120 * MB, 10), Candidate("c", 700 * MB, 10)]
    assert names(choose(pool, need_bytes=620 * MB)) == {"c"}


@pytest.mark.parametrize(("need", "expected"), [
    (50 * MB, {"small"}),  # the small one covers it: never the big one
    (100 * MB, {"mid"}),
    (150 * MB, {"small", "mid"}),  # cheaper together than the big one (reloads of 0.5 + 1 s vs 8 s)
    (400 * MB, {"big"}),
    (600 * MB, {"big", "mid"}),
])
def test_the_cheapest_set_that_covers(need: int, expected: set[str]) -> None:
    pool = [Candidate("small", 64 * MB, 0, load_s=0.5), Candidate("mid", 128 * MB, 0, load_s=1.0),
            Candidate("big", 512 * MB, 0, load_s=8.0)]
    choice = choose(pool, need_bytes=need)
    assert names(choice) == expected and choice.covers


def test_a_cheaper_set_beats_least_recently_used() -> None:
    # "old" is least recently used, but slow to reload; two quick ones cover the need for less
    old = Candidate("old", 300 * MB, idle_s=60, load_s=30.0)
    quick1 = Candidate("quick1", 200 * MB, idle_s=5, load_s=0.5)
    quick2 = Candidate("quick2", 200 * MB, idle_s=5, load_s=0.5)
    assert names(choose([old, quick1, quick2], need_bytes=250 * MB)) == {"quick1", "quick2"}


def test_a_long_idle_model_is_cheap_even_when_slow_to_reload() -> None:
    stale = Candidate("stale", 300 * MB, idle_s=10 * TAU, load_s=30.0)
    fresh = Candidate("fresh", 300 * MB, idle_s=0, load_s=3.0)
    assert names(choose([stale, fresh], need_bytes=100 * MB)) == {"stale"}


def test_when_nothing_covers_every_candidate_goes() -> None:
    pool = [Candidate("a", 10 * MB, 0), Candidate("b", 20 * MB, 0)]
    choice = choose(pool, need_bytes=100 * MB)
    assert names(choice) == {"a", "b"} and not choice.covers and choice.kept == ()


def test_nothing_needed_nothing_goes() -> None:
    choice = choose([Candidate("a", 10 * MB, 0)])
    assert choice.victims == () and choice.covers


def test_no_candidates() -> None:
    choice = choose([], need_bytes=MB)
    assert choice.victims == () and not choice.covers


def test_a_model_holding_nothing_is_never_taken_for_bytes() -> None:
    pool = [Candidate("empty", 0, 1000), Candidate("full", 100 * MB, 0, load_s=5)]
    assert names(choose(pool, need_bytes=MB)) == {"full"}


def test_slots_take_the_cheapest_models() -> None:
    pool = [Candidate("a", 8 * 1024 * MB, 0, load_s=20), Candidate("b", 100 * MB, 0, load_s=0.5),
            Candidate("c", 100 * MB, 0, load_s=0.7)]
    assert names(choose(pool, need_count=1)) == {"b"}
    assert names(choose(pool, need_count=2)) == {"b", "c"}


def test_slots_and_bytes_together() -> None:
    pool = [Candidate("a", 8 * 1024 * MB, 0, load_s=20), Candidate("b", 100 * MB, 0, load_s=0.5)]
    assert names(choose(pool, need_bytes=4 * 1024 * MB, need_count=1)) == {"a"}
    assert names(choose(pool, need_bytes=MB, need_count=2)) == {"a", "b"}


def test_an_eight_gb_load_evicts_the_one_eight_gb_model_not_five_small_ones() -> None:
    gb = 1024 * MB
    pool = [Candidate("big", 8 * gb, idle_s=1, load_s=6.0)]
    pool += [Candidate(f"small{i}", 2 * gb, idle_s=300, load_s=1.5) for i in range(5)]
    # five small ones cost five unloads plus their reloads; the big one one unload plus its reload
    assert names(choose(pool, need_bytes=8 * gb)) == {"big"}


def test_ties_break_by_fewer_bytes_beyond_the_need_then_by_name() -> None:
    a = Candidate("a", 200 * MB, 0, load_s=1.0)
    b = Candidate("b", 100 * MB, 0, load_s=1.0)
    assert names(choose([a, b], need_bytes=50 * MB)) == {"b"}
    c = Candidate("c", 100 * MB, 0, load_s=1.0)
    assert names(choose([c, b], need_bytes=50 * MB)) == {"b"}


def test_without_a_timed_load_the_reload_is_estimated_from_the_median_rate_then_the_default() -> None:
    untimed = Candidate("u", 2 * 1024 * MB, 0)
    assert reload_seconds(untimed) == pytest.approx(2 * 1024 * MB / DEFAULT_LOAD_RATE)
    rate = median_load_rate([(100 * MB, 1.0), (300 * MB, 1.0), (1000 * MB, 0.0), (0, 5.0)])
    assert rate == pytest.approx(200 * MB)
    assert reload_seconds(untimed, rate) == pytest.approx(10.24)
    assert median_load_rate([]) is None
    assert cost(Candidate("t", MB, 0, load_s=2.0)) == pytest.approx(2.0 + UNLOAD_COST)
    assert cost(Candidate("t", MB, TAU, load_s=2.0)) == pytest.approx(2.0 / math.e + UNLOAD_COST)


def _brute(pool: list[Candidate], need: int) -> float:
    best = math.inf
    for r in range(1, len(pool) + 1):
        for subset in itertools.combinations(pool, r):
            if sum(c.bytes for c in subset) >= need:
                best = min(best, sum(cost(c) for c in subset))
    return best


def test_the_exact_search_finds_the_cheapest_cover_every_time() -> None:
    rng = random.Random(7)
    for _ in range(200):
        pool = [Candidate(f"m{i}", rng.randint(1, 900) * MB, rng.uniform(0, 3600), rng.uniform(0.1, 40))
                for i in range(rng.randint(1, 7))]
        need = rng.randint(1, sum(c.bytes for c in pool))
        choice = choose(pool, need_bytes=need)
        assert choice.covers and choice.freed >= need
        assert _brute(pool, need) - 1e-9 <= choice.cost <= _brute(pool, need) + TIE


def test_beyond_the_exact_limit_the_greedy_choice_still_covers_and_drops_what_it_need_not_take() -> None:
    rng = random.Random(3)
    pool = [Candidate(f"m{i:02}", rng.randint(10, 900) * MB, rng.uniform(0, 600), rng.uniform(0.1, 10))
            for i in range(EXACT_LIMIT + 8)]
    need = 2000 * MB
    choice = choose(pool, need_bytes=need)
    assert choice.covers and choice.freed >= need
    for victim in choice.victims:  # no victim is unnecessary
        assert choice.freed - victim.bytes < need


def test_between_equal_costs_the_least_recently_used_goes() -> None:
    recent = Candidate("recent", 100 * MB, idle_s=5, load_s=0.1)
    older = Candidate("older", 100 * MB, idle_s=50, load_s=0.3)  # costs 0.2 s more: still a tie
    assert names(choose([recent, older], need_count=1)) == {"older"}
    assert names(choose([older, recent], need_bytes=MB)) == {"older"}
