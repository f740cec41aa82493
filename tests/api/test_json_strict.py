"""JSON in and out of the front door (app/api/jsonio.py, app/api/bodies.py): bodies nested
too deep are 400 ``body_too_deep`` on ``/v1`` and ``/api/v1`` alike (30,000 levels gave
RecursionError, a 500), NaN and Infinity are not JSON, and nothing Siesta writes holds them.
"""

from __future__ import annotations

import json
import time

import pytest

from app.api import jsonio
from app.api.events import sse

pytestmark = pytest.mark.timeout(60)

DEEP = b'{"model": "a", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/load", "/api/v1/unload"])
async def test_a_body_nested_30000_deep_is_400(front_door, write_recipe, path):
    write_recipe("a")
    manager, http, url = await front_door()
    async with http.post(url + path, data=DEEP, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["code"] == "body_too_deep"
    assert "too deeply nested" in error["message"] and path in error["message"]
    assert manager.get("a").state.value == "unloaded"


async def test_nan_and_infinity_are_not_json(front_door, write_recipe):
    write_recipe("a")
    manager, http, url = await front_door()
    for body in (b'{"model": "a", "temperature": NaN}', b'{"model": "a", "top_p": -Infinity, "keep_alive": "5m"}'):
        async with http.post(f"{url}/v1/chat/completions", data=body,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_json"
    async with http.post(f"{url}/api/v1/load", data=b'{"model": "a", "n": Infinity}',
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    assert manager.get("a").state.value == "unloaded"


def test_depth_counts_brackets_outside_strings_only():
    limit = jsonio.MAX_DEPTH
    assert not jsonio.too_deep(b"[" * limit + b"]" * limit)
    assert jsonio.too_deep(b"[" * (limit + 1) + b"]" * (limit + 1))
    assert jsonio.too_deep(b'{"a":' * (limit + 1) + b"1" + b"}" * (limit + 1))
    inside = b'"' + b"[{" * 10_000 + b'\\"[' + b'"'  # brackets and an escaped quote in a string
    assert not jsonio.too_deep(b"[" + inside + b"]")
    wide = b"[" + b",".join([b"[1]"] * 10_000) + b"]"  # many brackets, depth 2
    assert not jsonio.too_deep(wide)
    assert jsonio.too_deep(b'["x\\\\", ' + b"[" * (limit + 1))  # an escaped backslash ends its string


def test_depth_check_is_cheap_on_large_bodies():
    image = b'{"model": "a", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": ' \
            b'{"url": "data:image/png;base64,' + b"A" * (32 * 1024 * 1024 - 200) + b'"}}]}]}'
    started = time.perf_counter()
    assert not jsonio.too_deep(image)
    assert time.perf_counter() - started < 0.25
    tools = json.dumps({"model": "a", "tools": [{"type": "function", "function": {"name": f"f{i}", "parameters": {
        "type": "object", "properties": {"q": {"type": "array", "items": {"type": "object"}}}}}}
        for i in range(200)]}).encode()
    started = time.perf_counter()
    for _ in range(100):
        assert not jsonio.too_deep(tools)
    assert (time.perf_counter() - started) / 100 < 0.005


def test_nothing_siesta_writes_holds_nan():
    with pytest.raises(ValueError):
        jsonio.dumps({"x": float("nan")})
    with pytest.raises(ValueError):
        jsonio.json_response({"x": float("inf")})
    with pytest.raises(ValueError):
        sse({"reason": "measured", "model": {"memory": float("nan")}, "time": 1.0})
    assert json.loads(jsonio.json_response({"x": 1.5}).text) == {"x": 1.5}


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_depth_matches_the_parsed_depth():
    """Against the depth of what json.loads reads, on documents whose strings hold brackets,
    quotes and backslashes in every arrangement."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.text(alphabet='[]{}"\\ab\n', max_size=6)
    values = st.recursive(st.none() | st.integers() | text,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                          max_leaves=40)

    @settings(max_examples=300, deadline=None)
    @given(values, st.integers(min_value=0, max_value=6))
    def check(value, limit):
        raw = json.dumps(value, ensure_ascii=False).encode()
        assert jsonio.too_deep(raw, limit) == (_depth(value) > limit), raw

    check()
