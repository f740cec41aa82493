"""Ollama's ``/api/chat`` and ``/api/generate`` as the requests a model's OpenAI-compatible
server answers, and its answers back as Ollama's objects: pure functions, no I/O.

Requests (:func:`chat_request`, :func:`generate_request`):

* ``messages`` as OpenAI's: ``images`` (base64) become ``image_url`` parts with a data URL,
  ``thinking`` becomes ``reasoning_content``, ``tool_calls`` get their ``arguments`` as a JSON
  string (Ollama sends an object) and an ``id`` where they have none (``call_N``), and a
  ``tool`` message's ``tool_name`` is matched to the call it answers (``tool_call_id``);
* ``options`` (:func:`sampling`): temperature, top_p, top_k, min_p, seed, stop,
  num_predict (``max_tokens``, or ``n_predict`` for llama-server's own routes),
  repeat_penalty, presence_penalty, frequency_penalty, and the few others llama-server
  reads; ``num_ctx`` is handed back to be compared with the loaded context; the options
  that shape a load (``num_gpu``, ``num_thread``, ...) are the recipe's business and left out;
* ``format`` (``"json"`` or a JSON schema) as ``response_format`` (llama-server's
  ``json_schema`` on its own routes); ``think`` (true, false, ``"low"``, ``"medium"``,
  ``"high"``, ``"max"``) as llama-server's switch: ``chat_template_kwargs.enable_thinking``
  (and ``reasoning_effort``) with ``reasoning_format`` ``deepseek``, which puts the thinking
  in ``reasoning_content``;
* ``/api/generate`` goes to ``/v1/chat/completions`` as one user message (after
  ``system``), to ``/v1/completions`` with the prompt as is when ``raw``, and to
  llama-server's ``/infill`` when it has a ``suffix``; ``template`` and ``context`` are
  refused (:class:`TranslationError`, a 400).

Answers (:class:`Answer`): each upstream chunk (:func:`sse_event`, :func:`read_piece`) becomes
Ollama's object (``message`` or ``response``, ``thinking``, ``tool_calls`` with their
arguments as objects), and the last one has ``done_reason`` and the durations in
nanoseconds (:func:`metrics`, from llama-server's ``timings``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
INFILL_PATH = "/infill"  # llama-server's own fill-in-the-middle route


class TranslationError(ValueError):
    """A request Siesta cannot carry to the model's server: answered 400 with the message."""


# ---- requests ----------------------------------------------------------------------------------

_FLOAT, _INT = "a number", "an integer"
# Ollama's option -> (the name llama-server and OpenAI-compatible servers read, its kind)
_SAMPLING: dict[str, tuple[str, str]] = {
    "temperature": ("temperature", _FLOAT),
    "top_p": ("top_p", _FLOAT),
    "top_k": ("top_k", _INT),
    "min_p": ("min_p", _FLOAT),
    "seed": ("seed", _INT),
    "repeat_penalty": ("repeat_penalty", _FLOAT),
    "presence_penalty": ("presence_penalty", _FLOAT),
    "frequency_penalty": ("frequency_penalty", _FLOAT),
    "typical_p": ("typical_p", _FLOAT),
    "repeat_last_n": ("repeat_last_n", _INT),
    "num_keep": ("n_keep", _INT),
    "mirostat": ("mirostat", _INT),
    "mirostat_tau": ("mirostat_tau", _FLOAT),
    "mirostat_eta": ("mirostat_eta", _FLOAT),
}
THINK_LEVELS = ("low", "medium", "high", "max")
_IMAGE_KINDS = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                (b"BM", "image/bmp"))


def _number(value: object, option: str, kind: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranslationError(f'option "{option}" must be {kind}, not {json.dumps(value)[:60]}')
    return int(value) if kind == _INT else value  # Go's reader drops a fraction of an integer option too


def sampling(options: object, *, native: bool = False) -> tuple[dict[str, Any], int | None]:
    """``options`` as the sampling fields of the server's request, and the ``num_ctx`` asked
    for (None when absent). ``native``: llama-server's own routes (``n_predict``, not
    ``max_tokens``). A negative ``num_predict`` (Ollama's -1, without limit) sets none."""
    if options is None:
        return {}, None
    if not isinstance(options, dict):
        raise TranslationError("options must be an object")
    params: dict[str, Any] = {}
    for option, value in options.items():
        if value is None:
            continue
        if option in _SAMPLING:
            name, kind = _SAMPLING[option]
            params[name] = _number(value, option, kind)
        elif option == "num_predict":
            limit = _number(value, option, _INT)
            if limit >= 0:
                params["n_predict" if native else "max_tokens"] = limit
        elif option == "stop":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise TranslationError('option "stop" must be a list of strings')
            params["stop"] = value
    num_ctx = options.get("num_ctx")
    return params, None if num_ctx is None else int(_number(num_ctx, "num_ctx", _INT))


def format_params(fmt: object, *, native: bool = False) -> dict[str, Any]:
    """``format``: ``"json"`` or a JSON schema, as ``response_format`` (``native``: llama-server's
    ``json_schema``); nothing for ``null`` or ``""``."""
    if fmt is None or fmt == "":
        return {}
    if fmt == "json":
        return {"json_schema": {"type": "object"}} if native else {"response_format": {"type": "json_object"}}
    if isinstance(fmt, dict):
        if native:
            return {"json_schema": fmt}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}}
    raise TranslationError(f'invalid format {json.dumps(fmt)[:60]}: expected "json" or a JSON schema (an object)')


def think_params(think: object) -> dict[str, Any]:
    """``think`` as llama-server's reasoning switch (``enable_thinking`` for the chat template,
    ``reasoning_format`` so the thinking comes apart in ``reasoning_content``); a level is
    also passed as ``reasoning_effort`` (``max`` as ``high``, the highest OpenAI's names have)."""
    if think is None:
        return {}
    if think is False:
        return {"chat_template_kwargs": {"enable_thinking": False}}
    if think is True:
        return {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_format": "deepseek"}
    if isinstance(think, str) and think in THINK_LEVELS:
        effort = "high" if think == "max" else think
        return {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": effort},
                "reasoning_format": "deepseek", "reasoning_effort": effort}
    raise TranslationError(f'invalid think value {json.dumps(think)[:60]}: must be "high", "medium", "low", '
                           '"max", true, or false')


def image_part(image: object, where: str) -> dict[str, Any]:
    """One base64 image as an OpenAI ``image_url`` part with a data URL (its type read from
    its first bytes; llama-server reads the image itself whatever the type says)."""
    if not isinstance(image, str) or not image:
        raise TranslationError(f"{where}: each image must be a base64 string")
    text = "".join(image.split())  # Go's base64 reader skips line breaks too
    try:
        head = base64.b64decode(text, validate=True)[:16]
    except (binascii.Error, ValueError):
        raise TranslationError(f"{where}: an image is not valid base64") from None
    mime = next((kind for magic, kind in _IMAGE_KINDS if head.startswith(magic)), None)
    if mime is None:
        mime = "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else "image/png"
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{text}"}}


def _images(value: object, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TranslationError(f"{where}: images must be a list of base64 strings")
    return [image_part(image, f"{where}.images[{i}]") for i, image in enumerate(value)]


def _with_images(text: str, parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if not parts:
        return text
    return ([{"type": "text", "text": text}] if text else []) + parts


class _ToolCallIds:
    """The tool calls of one conversation: the ids they go by (made up where Ollama's client
    sent none), and which of them a ``tool`` message has answered."""

    def __init__(self) -> None:
        self._calls: list[tuple[str, str]] = []  # (id, function name), in order
        self._answered: set[str] = set()

    def call(self, call: object, where: str) -> dict[str, Any]:
        """An Ollama tool call as OpenAI's (``arguments`` a JSON string)."""
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f'{where}: a tool call must be '
                                   '{"function": {"name": ..., "arguments": {...}}}')
        arguments = function.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, (dict, str)):
            raise TranslationError(f"{where}: a tool call's arguments must be an object")
        given = call.get("id")
        call_id = given if isinstance(given, str) and given else f"call_{len(self._calls)}"
        self._calls.append((call_id, function["name"]))
        return {"id": call_id, "type": "function",
                "function": {"name": function["name"],
                             "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}

    def answer(self, call_id: object, name: object) -> str | None:
        """The id of the call a ``tool`` message answers: its own ``tool_call_id``, else the
        first call not yet answered of the function ``name`` (of any function without one)."""
        if not isinstance(call_id, str) or not call_id:
            call_id = next((i for i, n in self._calls if i not in self._answered and (name in (None, "") or n == name)),
                           None)
        if call_id is not None:
            self._answered.add(call_id)
        return call_id


def chat_messages(messages: object) -> list[dict[str, Any]]:
    """Ollama's ``messages`` as OpenAI's."""
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list of messages")
    ids = _ToolCallIds()
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where}: a message must be an object")
        role = message.get("role")
        content = message.get("content")
        if not isinstance(role, str) or not role:
            raise TranslationError(f"{where}: a message needs a role")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TranslationError(f"{where}: content must be a string")
        role = role.lower()  # as Ollama reads it
        item: dict[str, Any] = {"role": role, "content": _with_images(content, _images(message.get("images"), where))}
        thinking = message.get("thinking")
        if isinstance(thinking, str) and thinking:
            item["reasoning_content"] = thinking
        calls = message.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise TranslationError(f"{where}: tool_calls must be a list")
            item["tool_calls"] = [ids.call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(calls)]
        if role == "tool":
            name = message.get("tool_name")
            call_id = ids.answer(message.get("tool_call_id"), name)
            if call_id is not None:
                item["tool_call_id"] = call_id
            if isinstance(name, str) and name:
                item["name"] = name
        out.append(item)
    return out


def wants_stream(data: dict[str, Any]) -> bool:
    """``stream``, which Ollama takes as true unless it is false."""
    stream = data.get("stream")
    if stream is None:
        return True
    if not isinstance(stream, bool):
        raise TranslationError("stream must be true or false")
    return stream


def _tools(tools: object) -> dict[str, Any]:
    if tools is None or tools == []:
        return {}
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise TranslationError("tools must be a list of tools")
    return {"tools": tools}  # Ollama's tools are OpenAI's


def _stream_fields(stream: bool) -> dict[str, Any]:
    # usage in the last chunk, for servers that send no timings (llama-server sends both)
    return {"stream": True, "stream_options": {"include_usage": True}} if stream else {"stream": False}


@dataclass
class Upstream:
    """A translated request: where it goes, what it says, and how its answer reads."""

    path: str
    body: dict[str, Any]
    kind: str  # "chat" (/v1/chat/completions), "completion" (/v1/completions) or "infill" (/infill)
    num_ctx: int | None = None


def chat_request(data: dict[str, Any], model: str) -> Upstream:
    """An ``/api/chat`` body as a ``/v1/chat/completions`` request for ``model``."""
    stream = wants_stream(data)
    params, num_ctx = sampling(data.get("options"))
    body = {"model": model, "messages": chat_messages(data.get("messages")), **_stream_fields(stream),
            **_tools(data.get("tools")), **format_params(data.get("format")), **think_params(data.get("think")),
            **params}
    return Upstream(CHAT_PATH, body, "chat", num_ctx)


def _text_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TranslationError(f"{name} must be a string")
    return value


def generate_request(data: dict[str, Any], model: str) -> Upstream:
    """An ``/api/generate`` body (with a prompt) as the request that carries it: a chat of
    one user message, the prompt as is (``raw``), or llama-server's ``/infill`` (``suffix``)."""
    if data.get("template"):
        raise TranslationError("template is not supported: Siesta uses the model's own chat template "
                               "(from its GGUF file, or llama-server's --chat-template in its recipe)")
    if data.get("context"):
        raise TranslationError("context is not supported (Ollama has deprecated it): send the conversation "
                               "to /api/chat as messages instead")
    prompt, suffix, system = (_text_field(data, name) for name in ("prompt", "suffix", "system"))
    raw = data.get("raw") is True
    stream = wants_stream(data)
    images = _images(data.get("images"), "the request")
    if raw and system:
        raise TranslationError("raw mode does not support template, system, or context")
    if suffix or raw:
        if images:
            raise TranslationError("images go with a chat-templated prompt only: not with raw or suffix")
        params, num_ctx = sampling(data.get("options"), native=bool(suffix))
        fmt = format_params(data.get("format"), native=True)
        if suffix:  # llama-server's own route: its own field names
            body = {"input_prefix": prompt, "input_suffix": suffix, "stream": stream, **fmt, **params}
            return Upstream(INFILL_PATH, body, "infill", num_ctx)
        body = {"model": model, "prompt": prompt, **_stream_fields(stream), **fmt, **params}
        return Upstream(COMPLETIONS_PATH, body, "completion", num_ctx)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _with_images(prompt, images)})
    params, num_ctx = sampling(data.get("options"))
    body = {"model": model, "messages": messages, **_stream_fields(stream), **format_params(data.get("format")),
            **think_params(data.get("think")), **params}
    return Upstream(CHAT_PATH, body, "chat", num_ctx)


# ---- answers -----------------------------------------------------------------------------------

def created_at(now: datetime | None = None) -> str:
    """An RFC 3339 time in UTC, as Ollama stamps each object: ``2024-07-22T20:47:51.147561Z``."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def _count(value: object) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0


def metrics(timings: dict[str, Any] | None, usage: dict[str, Any] | None, *, total: float,
            load: float) -> dict[str, int]:
    """Ollama's counts and durations (nanoseconds): ``total`` and ``load`` in seconds, the rest
    from llama-server's ``timings`` (``prompt_n``, ``prompt_ms``, ``predicted_n``,
    ``predicted_ms``), or the token counts of OpenAI's ``usage`` where a server sends no timings."""
    out = {"total_duration": nanoseconds(total), "load_duration": nanoseconds(load),
           "prompt_eval_count": 0, "prompt_eval_duration": 0, "eval_count": 0, "eval_duration": 0}
    if isinstance(usage, dict):
        out["prompt_eval_count"] = _count(usage.get("prompt_tokens"))
        out["eval_count"] = _count(usage.get("completion_tokens"))
    if isinstance(timings, dict):
        for ollama_count, ollama_duration, n, ms in (
                ("prompt_eval_count", "prompt_eval_duration", "prompt_n", "prompt_ms"),
                ("eval_count", "eval_duration", "predicted_n", "predicted_ms")):
            if n in timings:
                out[ollama_count] = _count(timings.get(n))
            millis = timings.get(ms)
            if isinstance(millis, (int, float)) and not isinstance(millis, bool):
                out[ollama_duration] = nanoseconds(millis / 1000)
    return out


def done_reason(finish_reason: object) -> str:
    """OpenAI's ``finish_reason`` as Ollama's ``done_reason``: ``length`` or ``stop`` (a turn
    that ends in tool calls is ``stop`` in Ollama)."""
    return "length" if finish_reason == "length" else "stop"


def tool_arguments(raw: object) -> dict[str, Any]:
    """A tool call's ``arguments`` as the object Ollama gives (OpenAI's are a JSON string)."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    value: Any = None
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
    if isinstance(value, dict):
        return value
    log.warning("a tool call's arguments are not a JSON object; passed on as {}: %.200r", raw)
    return {}


@dataclass
class Piece:
    """What one upstream chunk (or a whole answer) says."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's, whole or in deltas
    finish: str | None = None
    timings: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def error_message(payload: object) -> str | None:
    """The message of an error answer: OpenAI's ``{"error": {"message"}}``, Ollama's
    ``{"error": "..."}``; None when ``payload`` is no error."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) else json.dumps(error)[:2000]
    if isinstance(error, str):
        return error
    return None


def read_piece(kind: str, payload: object, *, whole: bool = False) -> Piece:
    """One upstream JSON object (``whole``: a whole answer, not a stream's chunk) of a ``kind``
    of request (:class:`Upstream`) as a :class:`Piece`."""
    if not isinstance(payload, dict):
        return Piece()
    piece = Piece(error=error_message(payload))
    timings, usage = payload.get("timings"), payload.get("usage")
    piece.timings = timings if isinstance(timings, dict) else None
    piece.usage = usage if isinstance(usage, dict) else None
    if kind == "infill":  # llama-server's own shape: content, stop, stop_type
        piece.text = _text(payload.get("content"))
        if payload.get("stop") is True:
            piece.finish = "length" if payload.get("stop_type") == "limit" else "stop"
        return piece
    choices = payload.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    finish = choice.get("finish_reason")
    piece.finish = finish if isinstance(finish, str) else None
    if kind == "completion":
        piece.text = _text(choice.get("text"))
        return piece
    part = choice.get("message" if whole else "delta")
    if isinstance(part, dict):
        piece.text = _text(part.get("content"))
        piece.thinking = _text(part.get("reasoning_content")) or _text(part.get("reasoning"))
        calls = part.get("tool_calls")
        piece.tool_calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    return piece


def sse_event(line: bytes) -> dict[str, Any] | None:
    """One line of a server-sent event stream as its JSON object: ``data: {...}``, or
    llama-server's ``error: {...}``; None for the rest (``data: [DONE]``, comments, blank
    lines, what does not parse)."""
    line = line.strip()
    for prefix in (b"data:", b"error:"):
        if line.startswith(prefix):
            text = line[len(prefix):].strip()
            if not text.startswith(b"{"):
                return None
            try:
                payload = json.loads(text)
            except ValueError:
                return None
            if not isinstance(payload, dict):
                return None
            if prefix == b"error:" and "error" not in payload:
                payload = {"error": payload}
            return payload
    return None


class ToolCalls:
    """Tool calls as they come in (OpenAI's streamed deltas: an ``index``, the name once, the
    arguments in pieces; or whole calls), given back as Ollama's."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, calls: list[dict[str, Any]]) -> None:
        for position, call in enumerate(calls):
            index = call.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                index = position  # a whole call (an answer not streamed) has no index
            entry = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if isinstance(call.get("id"), str):
                entry["id"] = call["id"]
            function = call.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str) and not entry["name"]:
                    entry["name"] = function["name"]  # sent once, in the call's first delta
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    entry["arguments"] += arguments
                elif isinstance(arguments, dict):
                    entry["arguments"] = json.dumps(arguments)

    def take(self) -> list[dict[str, Any]]:
        """The calls gathered so far, as Ollama's (``arguments`` an object), and forgets them."""
        out = []
        for index in sorted(self._calls):
            entry = self._calls[index]
            call: dict[str, Any] = {"function": {"index": index, "name": entry["name"],
                                                 "arguments": tool_arguments(entry["arguments"])}}
            if entry["id"]:
                call["id"] = entry["id"]
            out.append(call)
        self._calls.clear()
        return out


class Answer:
    """One Ollama answer built from the upstream's pieces: ``chat`` (``message``) or
    ``generate`` (``response``) objects for model ``model`` (the name the client sent)."""

    def __init__(self, route: str, model: str) -> None:
        self.route = route
        self.model = model
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.tool_calls = ToolCalls()
        self.finish: str | None = None
        self.timings: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None

    def _object(self, text: str, thinking: str, tool_calls: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "created_at": created_at()}
        if self.route == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            out["message"] = message
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
            if tool_calls:
                out["tool_calls"] = tool_calls
        out["done"] = done
        return out

    def add(self, piece: Piece) -> dict[str, Any] | None:
        """Takes one piece in; the object a stream sends for it (None when it says nothing
        to show: tool calls are sent whole, once the answer says it has finished)."""
        self.text.append(piece.text)
        self.thinking.append(piece.thinking)
        self.tool_calls.add(piece.tool_calls)
        self.finish = piece.finish or self.finish
        self.timings = piece.timings or self.timings
        self.usage = piece.usage or self.usage
        if not piece.text and not piece.thinking:
            return None
        return self._object(piece.text, piece.thinking, [], False)

    def calls_object(self) -> dict[str, Any] | None:
        """In a stream, the object with the answer's tool calls (None when it made none)."""
        calls = self.tool_calls.take()
        return self._object("", "", calls, False) if calls else None

    def final(self, *, whole: bool, total: float, load: float) -> dict[str, Any]:
        """The last object: ``done``, ``done_reason`` and the durations; with the whole text,
        thinking and tool calls when ``whole`` (an answer that is not streamed)."""
        if whole:
            out = self._object("".join(self.text), "".join(self.thinking), self.tool_calls.take(), True)
        else:
            out = self._object("", "", [], True)
        out["done_reason"] = done_reason(self.finish)
        out.update(metrics(self.timings, self.usage, total=total, load=load))
        return out
