"""Ollama's ``/api/chat`` to and from OpenAI's chat completions (app/api/ollama/translate.py),
both ways, as pure functions: options, tools and tool calls, think, images, format, and
llama-server's timings as Ollama's durations."""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime

import pytest

from app.api.ollama.translate import (
    Answer,
    Piece,
    ToolCalls,
    TranslationError,
    chat_messages,
    chat_request,
    created_at,
    done_reason,
    format_params,
    image_part,
    metrics,
    read_piece,
    sampling,
    sse_event,
    think_params,
    tool_arguments,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(32)).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(32)).decode()


# ---- options -------------------------------------------------------------------------------------

def test_options_map_to_the_servers_sampling_fields():
    params, num_ctx = sampling({
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "stop": ["\n", "user:"],
        "num_predict": 12, "repeat_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25,
        "typical_p": 0.7, "repeat_last_n": 33, "num_keep": 5,
        "num_ctx": 4096, "num_gpu": 99, "num_thread": 8, "use_mmap": True, "numa": False, "main_gpu": 0,
    })
    assert params == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "stop": ["\n", "user:"],
                      "max_tokens": 12, "repeat_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25,
                      "typical_p": 0.7, "repeat_last_n": 33, "n_keep": 5}
    assert num_ctx == 4096  # compared with the loaded context, never sent: the recipe sets it


def test_num_predict_on_llama_servers_own_routes_and_without_a_limit():
    assert sampling({"num_predict": 8}, native=True)[0] == {"n_predict": 8}
    assert sampling({"num_predict": -1})[0] == {}  # Ollama's "no limit": none set
    assert sampling({"num_predict": -2})[0] == {}
    assert sampling({"num_predict": 0})[0] == {"max_tokens": 0}
    assert sampling(None) == ({}, None)
    assert sampling({"temperature": None}) == ({}, None)


def test_option_types_are_checked_as_ollama_does():
    assert sampling({"stop": "x"})[0] == {"stop": ["x"]}
    assert sampling({"top_k": 40.0, "seed": 3.9})[0] == {"top_k": 40, "seed": 3}  # Go drops the fraction
    for bad in ({"temperature": "hot"}, {"top_k": True}, {"stop": [1]}, {"num_predict": "8"}, {"num_ctx": []}):
        with pytest.raises(TranslationError, match="option"):
            sampling(bad)
    with pytest.raises(TranslationError, match="options must be an object"):
        sampling(["temperature"])


# ---- format and think ----------------------------------------------------------------------------

def test_format_is_response_format_or_llama_servers_json_schema():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert format_params("json") == {"response_format": {"type": "json_object"}}
    assert format_params(schema) == {"response_format": {"type": "json_schema",
                                                         "json_schema": {"name": "format", "schema": schema}}}
    assert format_params("json", native=True) == {"json_schema": {"type": "object"}}
    assert format_params(schema, native=True) == {"json_schema": schema}
    assert format_params(None) == format_params("") == {}
    with pytest.raises(TranslationError, match="invalid format"):
        format_params("yaml")


def test_think_is_llama_servers_reasoning_switch():
    assert think_params(None) == {}
    assert think_params(True) == {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_format": "deepseek"}
    assert think_params(False) == {"chat_template_kwargs": {"enable_thinking": False}}
    assert think_params("low") == {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": "low"},
                                   "reasoning_format": "deepseek", "reasoning_effort": "low"}
    assert think_params("max")["reasoning_effort"] == "high"
    for bad in ("maybe", 1, {"level": "high"}):
        with pytest.raises(TranslationError, match="invalid think value"):
            think_params(bad)


# ---- messages: images, tool calls --------------------------------------------------------------

def test_images_become_image_parts_after_the_text():
    (message,) = chat_messages([{"role": "USER", "content": "what is this?", "images": [PNG, JPEG]}])
    assert message["role"] == "user"  # Ollama reads roles in lower case
    text, png, jpeg = message["content"]
    assert text == {"type": "text", "text": "what is this?"}
    assert png == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert jpeg["image_url"]["url"].startswith("data:image/jpeg;base64,")
    (only_image,) = chat_messages([{"role": "user", "images": [PNG]}])
    assert [part["type"] for part in only_image["content"]] == ["image_url"]
    wrapped = PNG[:20] + "\n" + PNG[20:]
    assert image_part(wrapped, "x")["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    with pytest.raises(TranslationError, match=r"messages\[0\].images\[0\]: an image is not valid base64"):
        chat_messages([{"role": "user", "content": "x", "images": ["not base64!"]}])
    with pytest.raises(TranslationError, match="base64 string"):
        chat_messages([{"role": "user", "content": "x", "images": [7]}])


def test_tool_calls_get_json_string_arguments_and_made_up_ids_and_answers_find_them():
    messages = chat_messages([
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "thinking": "two cities",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                        {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
                        {"id": "t9", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "content": "11 C", "tool_name": "get_weather"},
        {"role": "tool", "content": "20 C", "tool_name": "get_weather"},
        {"role": "tool", "content": "noon", "tool_call_id": "t9"},
    ])
    assistant = messages[1]
    assert assistant["reasoning_content"] == "two cities"
    assert assistant["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        {"id": "t9", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert [(m["tool_call_id"], m.get("name")) for m in messages[2:]] == [
        ("call_0", "get_weather"), ("call_1", "get_weather"), ("t9", None)]
    with pytest.raises(TranslationError, match="tool call"):
        chat_messages([{"role": "assistant", "tool_calls": [{"name": "f"}]}])


def test_messages_are_checked():
    for bad, match in (("hi", "list of messages"), ([["hi"]], "an object"), ([{"content": "hi"}], "role"),
                       ([{"role": "user", "content": 3}], "content must be a string")):
        with pytest.raises(TranslationError, match=match):
            chat_messages(bad)


def test_a_chat_request_as_a_whole():
    upstream = chat_request({
        "model": "tiny:latest", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "format": "json", "think": "high", "options": {"num_predict": 4, "num_ctx": 1024},
    }, "tiny")
    assert upstream.path == "/v1/chat/completions" and upstream.kind == "chat" and upstream.num_ctx == 1024
    body = upstream.body
    assert body["model"] == "tiny" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}  # stream defaults to true
    assert body["tools"][0]["function"]["name"] == "f" and body["max_tokens"] == 4
    assert body["response_format"] == {"type": "json_object"} and body["reasoning_format"] == "deepseek"
    assert "num_ctx" not in body and "options" not in body and "think" not in body
    assert chat_request({"messages": [], "stream": False}, "m").body["stream"] is False
    with pytest.raises(TranslationError, match="stream must be true or false"):
        chat_request({"messages": [], "stream": "yes"}, "m")


# ---- answers -------------------------------------------------------------------------------------

def test_streamed_tool_call_deltas_come_back_whole_with_object_arguments():
    calls = ToolCalls()
    calls.add([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
    calls.add([{"index": 0, "function": {"arguments": '{"city": '}}])
    calls.add([{"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "{}"}}])
    calls.add([{"index": 0, "function": {"arguments": '"Tokyo"}'}}])
    assert calls.take() == [
        {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}},
        {"id": "call_b", "function": {"index": 1, "name": "get_time", "arguments": {}}},
    ]
    assert calls.take() == []
    calls.add([{"id": "w", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
               {"type": "function", "function": {"name": "g", "arguments": {"y": 2}}}])  # whole calls: no index
    assert [c["function"]["arguments"] for c in calls.take()] == [{"x": 1}, {"y": 2}]


def test_tool_arguments_that_are_no_json_object_are_given_as_empty(caplog):
    assert tool_arguments('{"a": [1]}') == {"a": [1]}
    assert tool_arguments(None) == tool_arguments("") == {}
    with caplog.at_level(logging.WARNING):
        assert tool_arguments("{not json") == {}
        assert tool_arguments("[1, 2]") == {}
    assert len([r for r in caplog.records if "not a JSON object" in r.message]) == 2


def test_timings_become_ollamas_durations_in_nanoseconds():
    timings = {"cache_n": 16, "prompt_n": 17, "prompt_ms": 0.858, "predicted_n": 5, "predicted_ms": 83.6}
    assert metrics(timings, None, total=1.5, load=1.25) == {
        "total_duration": 1_500_000_000, "load_duration": 1_250_000_000,
        "prompt_eval_count": 17, "prompt_eval_duration": 858_000, "eval_count": 5, "eval_duration": 83_600_000}
    usage = {"prompt_tokens": 26, "completion_tokens": 9, "total_tokens": 35}
    assert metrics(None, usage, total=0.1, load=0) == {  # a server with no timings: the counts alone
        "total_duration": 100_000_000, "load_duration": 0, "prompt_eval_count": 26, "prompt_eval_duration": 0,
        "eval_count": 9, "eval_duration": 0}
    assert metrics(timings, usage, total=0, load=0)["prompt_eval_count"] == 17  # timings first
    assert metrics({"prompt_n": "x", "predicted_ms": True}, None, total=0, load=0)["eval_duration"] == 0


def test_done_reasons():
    assert done_reason("length") == "length"
    assert [done_reason(r) for r in ("stop", "tool_calls", None, "eos")] == ["stop"] * 4


def test_created_at_is_rfc_3339_in_utc():
    stamp = created_at()
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def test_server_sent_event_lines():
    assert sse_event(b'data: {"a": 1}\r') == {"a": 1}
    assert sse_event(b"data:{\"a\": 2}") == {"a": 2}
    assert sse_event(b"data: [DONE]") is None
    assert sse_event(b": keep-alive") is None and sse_event(b"") is None and sse_event(b"data: {bad") is None
    assert sse_event(b'error: {"code": 500, "message": "boom"}') == {"error": {"code": 500, "message": "boom"}}
    assert sse_event(b'error: {"error": {"message": "boom"}}') == {"error": {"message": "boom"}}


def test_pieces_of_chat_completion_and_infill_answers():
    delta = {"choices": [{"index": 0, "delta": {"content": "Hi", "reasoning_content": "hm"}, "finish_reason": None}]}
    assert read_piece("chat", delta) == Piece(text="Hi", thinking="hm")
    last = {"choices": [{"delta": {}, "finish_reason": "length"}], "timings": {"predicted_n": 3}}
    piece = read_piece("chat", last)
    assert piece.finish == "length" and piece.timings == {"predicted_n": 3}
    whole = {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
                          "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3}}
    piece = read_piece("chat", whole, whole=True)
    assert piece.tool_calls == [{"function": {"name": "f"}}] and piece.usage == {"prompt_tokens": 3}
    assert read_piece("chat", {"choices": [{"delta": {"reasoning": "r"}}]}).thinking == "r"  # Ollama's own /v1
    assert read_piece("completion", {"choices": [{"text": "abc", "finish_reason": "stop"}]}) == Piece(text="abc",
                                                                                                       finish="stop")
    assert read_piece("infill", {"content": "x", "stop": True, "stop_type": "limit"}).finish == "length"
    assert read_piece("infill", {"content": "x", "stop": False}).finish is None
    assert read_piece("chat", {"error": {"code": 400, "message": "bad"}}).error == "bad"
    assert read_piece("chat", {"choices": []}) == Piece() and read_piece("chat", "junk") == Piece()


def test_an_answer_streamed_then_whole():
    answer = Answer("chat", "tiny:latest")
    assert answer.add(Piece()) is None  # the role-only first chunk shows nothing
    shown = answer.add(Piece(thinking="let me see"))
    assert shown["message"] == {"role": "assistant", "content": "", "thinking": "let me see"}
    assert shown["done"] is False and shown["model"] == "tiny:latest" and shown["created_at"].endswith("Z")
    assert answer.add(Piece(text="Hel"))["message"] == {"role": "assistant", "content": "Hel"}
    answer.add(Piece(text="lo", tool_calls=[{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]))
    answer.add(Piece(finish="tool_calls", timings={"prompt_n": 2, "prompt_ms": 1, "predicted_n": 3, "predicted_ms": 2}))
    final = answer.final(whole=True, total=0.5, load=0.25)
    assert final["message"] == {"role": "assistant", "content": "Hello", "thinking": "let me see",
                                "tool_calls": [{"id": "c", "function": {"index": 0, "name": "f", "arguments": {}}}]}
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"], final["load_duration"]) == (2, 3, 250_000_000)

    streamed = Answer("generate", "tiny")
    streamed.add(Piece(text="a", tool_calls=[{"index": 0, "function": {"name": "f", "arguments": '{"q": 1}'}}]))
    calls = streamed.calls_object()
    assert calls["tool_calls"] == [{"function": {"index": 0, "name": "f", "arguments": {"q": 1}}}]
    assert streamed.calls_object() is None
    last = streamed.final(whole=False, total=1, load=0)
    assert last["response"] == "" and last["done"] is True and last["done_reason"] == "stop"
    assert "message" not in last and json.dumps(last)
