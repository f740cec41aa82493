"""Ollama's ``/api/generate`` as the request that carries it (app/api/ollama/translate.py): a
chat of one user message, the prompt as is (``raw``), or llama-server's ``/infill``
(``suffix``); what it cannot carry is a 400's message."""

from __future__ import annotations

import base64

import pytest

from app.api.ollama.translate import TranslationError, generate_request

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(8)).decode()


def test_a_prompt_is_one_user_message_after_the_system_message():
    upstream = generate_request({"prompt": "why?", "system": "be brief", "images": [PNG], "think": True,
                                 "format": {"type": "object"}, "options": {"num_predict": 5, "seed": 1}}, "tiny")
    assert (upstream.path, upstream.kind) == ("/v1/chat/completions", "chat")
    body = upstream.body
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "why?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
    ]
    assert body["max_tokens"] == 5 and body["seed"] == 1 and body["stream"] is True
    assert body["response_format"]["type"] == "json_schema"
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert generate_request({"prompt": "hi", "stream": False}, "m").body["messages"] == [
        {"role": "user", "content": "hi"}]


def test_raw_sends_the_prompt_as_is_to_completions():
    upstream = generate_request({"prompt": "[INST] hi [/INST]", "raw": True, "stream": False, "format": "json",
                                 "options": {"num_predict": 3, "num_ctx": 99}}, "tiny")
    assert (upstream.path, upstream.kind, upstream.num_ctx) == ("/v1/completions", "completion", 99)
    assert upstream.body == {"model": "tiny", "prompt": "[INST] hi [/INST]", "stream": False,
                             "json_schema": {"type": "object"}, "max_tokens": 3}


def test_a_suffix_goes_to_llama_servers_infill():
    upstream = generate_request({"prompt": "def f(a, b):", "suffix": "    return result",
                                 "options": {"num_predict": 16, "temperature": 0}}, "coder")
    assert (upstream.path, upstream.kind) == ("/infill", "infill")
    assert upstream.body == {"input_prefix": "def f(a, b):", "input_suffix": "    return result", "stream": True,
                             "n_predict": 16, "temperature": 0}


@pytest.mark.parametrize(("request_body", "message"), [
    ({"prompt": "x", "template": "{{ .Prompt }}"}, "template is not supported"),
    ({"prompt": "x", "context": [1, 2, 3]}, "context is not supported"),
    ({"prompt": "x", "raw": True, "system": "s"}, "raw mode does not support template, system, or context"),
    ({"prompt": "x", "raw": True, "images": [PNG]}, "images go with a chat-templated prompt only"),
    ({"prompt": "x", "suffix": "y", "images": [PNG]}, "images go with a chat-templated prompt only"),
    ({"prompt": 3}, "prompt must be a string"),
    ({"prompt": "x", "think": "deep"}, "invalid think value"),
    ({"prompt": "x", "options": {"top_p": "high"}}, 'option "top_p" must be a number'),
])
def test_what_cannot_be_carried_is_refused_with_a_reason(request_body, message):
    with pytest.raises(TranslationError, match=message):
        generate_request(request_body, "tiny")


def test_an_empty_template_or_context_is_no_request_for_one():
    assert generate_request({"prompt": "x", "template": "", "context": []}, "m").kind == "chat"
