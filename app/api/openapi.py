"""The OpenAPI 3.1 document of the HTTP API Siesta itself answers, served at ``GET /api/v1/openapi.json``.

It describes the management API (``/api/v1/...``) and the OpenAI-compatible routes Siesta
answers itself (``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/...``), with the
error body every route shares (``{"error": {"message", "type", "code", ...}}``) and, for
each operation, the statuses and error codes it really gives. It is what clients and
fuzzers (``tests/api/test_schemathesis.py`` runs schemathesis against a live ``siesta
serve``) read; ``tests/api/test_openapi.py`` fails on a route of the app that is neither
documented here nor named in its ``NOT_DOCUMENTED`` list.

The document is built here as Python data, not kept as a JSON file, so that what the code
already says is written once: the settings and which of them may change at run time, the
model states, the error types, the body limit and the version come from the modules that
define them, and a new setting or state shows up here without an edit.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from app import __version__
from app.api.errors import _TYPES as ERROR_TYPES
from app.api.jsonio import json_response
from app.api.management import MAX_BODY
from app.api.metrics.routes import DAY_PATTERN, HISTORY_PATH, METRICS_PATH
from app.core.config.settings import FIELD_NAMES, RUNTIME_SETTABLE
from app.core.models.model import ModelState

PATH = "/api/v1/openapi.json"
PROXY_MAX_BODY_MB = 32  # app.api.server.MAX_REQUEST_BODY, which imports this module

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str) -> Schema:
    return {"type": [type_, "null"]}


# ---- schemas ---------------------------------------------------------------------------------

_DURATION: Schema = {
    "description": 'A duration: "90s", "5m", "1h30m", a number of seconds (90 or "90"), "0", or "never" '
                   "(any negative number means never too).",
    "type": ["string", "number"],
    "examples": ["5m", 90, "never"],
}

_MEMORY_LIMIT: Schema = {
    "description": 'A memory limit: a size ("20GB"), a share of the device ("85%"), "off", or a table per '
                   'device ({"ram": "16GB", "gpu0": "90%", "default": "off"}).',
    "type": ["string", "number", "object"],
    "additionalProperties": {"type": ["string", "number"]},
}

# Each setting's value as GET /api/v1/settings shows it (api_key only as "(set)").
_SETTING_VALUES: dict[str, Schema] = {
    "host": {"type": "string"},
    "port": {"type": "integer"},
    "global_unload_timeout": {**_nullable("number"), "description": "seconds; null = never"},
    "max_loaded_models": {"type": "integer", "minimum": 0},
    "llama_server": _nullable("string"),
    "stop_timeout": {"type": "number"},
    "load_timeout": {"type": "number"},
    "allowed_hosts": {"type": "array", "items": {"type": "string"}},
    "allowed_origins": {"type": "array", "items": {"type": "string"}},
    "notify_idle_unload": {"type": "boolean"},
    "notify_crash": {"type": "boolean"},
    "memory_budget": {"type": ["string", "object"], "additionalProperties": {"type": "string"}},
    "free_memory_floor": {"type": ["string", "object"], "additionalProperties": {"type": "string"}},
    "notify_memory_pressure": {"type": "boolean"},
    "loading_feedback": {"type": "boolean"},
    "api_key": {"enum": ["(set)", None], "description": "never the key itself"},
    "engine_releases_url": {"type": "string"},
    "ollama_port": {**_nullable("integer"), "description": "a second port for Ollama's clients; null = off"},
    "allow_pull_over_http": {"type": "boolean"},
}

# What PATCH /api/v1/settings takes for each setting it may change.
_SETTING_INPUTS: dict[str, Schema] = {
    "global_unload_timeout": _DURATION,
    "max_loaded_models": {"type": "integer", "minimum": 0, "description": "0 = no limit"},
    "notify_idle_unload": {"type": "boolean"},
    "notify_crash": {"type": "boolean"},
    "memory_budget": _MEMORY_LIMIT,
    "free_memory_floor": _MEMORY_LIMIT,
    "notify_memory_pressure": {"type": "boolean"},
    "allowed_origins": {
        "description": 'Origins whose pages may call Siesta: "http://localhost:5173", the host or the port may be '
                       '* ("http://localhost:*"); a list, or one comma-separated string',
        "type": ["array", "string"], "items": {"type": "string"}},
}

_SECONDS_OR_NULL = _nullable("number")
_BYTES_OR_NULL = _nullable("integer")

_MODEL: Schema = {
    "type": "object",
    "description": "One model, local (a recipe) or a remote's (REMOTE/MODEL, which also has the remote_* "
                   "fields). A remote model no longer listed by its remote has only name, remote and state.",
    "required": ["name", "state"],
    "properties": {
        "name": {"type": "string"},
        "state": {"enum": [s.value for s in ModelState]},
        "stale": {"type": "boolean", "description": "its recipe changed; the change applies at the next load"},
        "in_flight": {"type": "integer", "minimum": 0},
        "waiting": {"type": "integer", "minimum": 0, "description": "requests waiting for a load"},
        "unload_timeout": {**_SECONDS_OR_NULL, "description": "the effective timeout in seconds; null = never"},
        "timeout_source": {"enum": ["request", "recipe", "global", "remote"]},
        "recipe_unload_timeout": {**_SECONDS_OR_NULL, "description": "present only when the recipe sets one"},
        "idle_since": _SECONDS_OR_NULL,
        "unload_at": _SECONDS_OR_NULL,
        "unloads_in": _SECONDS_OR_NULL,
        "loading_since": _SECONDS_OR_NULL,
        "last_load_seconds": _SECONDS_OR_NULL,
        "last_unload_reason": _nullable("string"),
        "unloaded_at": _SECONDS_OR_NULL,
        "pid": _nullable("integer"),
        "error": _nullable("string"),
        "exit_code": _nullable("integer"),
        "crash_loop": {"type": "boolean"},
        "backend": _nullable("string"),
        "group": _nullable("string"),
        "preload": {"type": "boolean"},
        "log_tail": {"type": "string", "description": "present when the model has failed"},
        "log_file": _nullable("string"),
        "memory": {**_BYTES_OR_NULL, "description": "resident bytes (RAM) of the model's process tree"},
        "vram": {**_BYTES_OR_NULL, "description": "bytes on GPUs, summed; null where it cannot be measured"},
        "memory_by_device": {"type": ["object", "null"], "additionalProperties": _BYTES_OR_NULL},
        "memory_estimate": _BYTES_OR_NULL,
        "memory_estimate_source": {"enum": ["recipe", "measured", "gguf", None]},
        "remote": {"type": "string"},
        "remote_kind": {"type": "string"},
        "remote_model": {"type": "string"},
        "remote_status": {"type": "string"},
        "can_load": {"type": "boolean"},
        "given_back": {"type": "number", "minimum": 0,
                       "description": "byte-seconds of memory its idle and memory-pressure unloads gave back today "
                                      "(local day): the bytes it held times how long they stayed free"},
    },
}

_REMOTE: Schema = {
    "type": "object",
    "required": ["name", "kind", "url", "api_key", "status"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string"},
        "url": {"type": "string"},
        "api_key": {"enum": ["(set)", None], "description": "never the key itself"},
        "status": {"enum": ["connecting", "ok", "unreachable", "error"]},
        "error": _nullable("string"),
        "retry_in": _SECONDS_OR_NULL,
        "models": {"type": "integer", "minimum": 0},
    },
}

_SETTINGS: Schema = {
    "type": "object",
    "description": "Every setting in force, with where it came from (flag, env, file settings.toml, default).",
    "required": list(FIELD_NAMES),
    "properties": {
        name: {"type": "object", "required": ["value", "source"],
               "properties": {"value": _SETTING_VALUES.get(name, {}), "source": {"type": "string"}}}
        for name in FIELD_NAMES
    },
}

_DEVICE: Schema = {
    "type": "object",
    "required": ["id", "name", "kind", "total", "used", "free", "models"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string"},
        "total": _BYTES_OR_NULL, "used": _BYTES_OR_NULL, "free": _BYTES_OR_NULL,
        "models": {**_BYTES_OR_NULL, "description": "what Siesta's models use there"},
    },
}

_SYSTEM: Schema = {
    "type": "object",
    "required": ["memory"],
    "properties": {"memory": {
        "type": "object",
        "required": ["ram", "devices"],
        "properties": {
            "ram": {"type": "object", "required": ["total", "available", "models"],
                    "properties": {"total": _BYTES_OR_NULL, "available": _BYTES_OR_NULL, "models": _BYTES_OR_NULL}},
            "devices": {"type": "array", "items": _ref("Device")},
        },
    }},
}

_HEALTH: Schema = {
    "type": "object",
    "required": ["status", "version", "config_dir", "log_dir", "llama_server", "settings", "remotes", "models"],
    "properties": {
        "status": {"const": "ok"},
        "version": {"type": "string"},
        "config_dir": {"type": "string"},
        "log_dir": {"type": "string"},
        "llama_server": _nullable("string"),
        "settings": _ref("Settings"),
        "remotes": {"type": "array", "items": _ref("Remote")},
        "models": {"type": "array", "items": _ref("Model"), "description": "the models that are not unloaded"},
    },
}

_ERROR: Schema = {
    "type": "object",
    "description": "Every error Siesta answers itself, in OpenAI's shape.",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"enum": sorted(set(ERROR_TYPES.values()))},
            "code": {"type": "string"},
            "log_tail": {"type": "string", "description": "503: the end of the model's log, where there is one"},
            "candidates": {"type": "array", "items": {"type": "string"},
                           "description": "409 ambiguous_model: the qualified names"},
            "remote": {"type": "string", "description": "the remote an error of a remote's names"},
        },
    }},
}

_OPENAI_MODEL: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by", "state"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string", "description": "siesta, or the remote's name"},
        "state": {"type": "string"},
    },
}

_OPENAI_REQUEST: Schema = {
    "type": "object",
    "description": "Any body of the OpenAI API that names a model; everything but keep_alive goes to the "
                   "model's server as it is.",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "a recipe's name, or REMOTE/MODEL"},
        "keep_alive": {**_DURATION, "description": "this model's timeout for the idle period that follows; "
                                                   "removed before forwarding"},
        "stream": {"description": "true: the answer streams as text/event-stream (read by the model's server, "
                                  "not checked by Siesta). A stream that has waited 2 s for its model's load "
                                  "begins at once (200) with SSE comments ': loading NAME, 12 s' every second "
                                  "until the model's first byte (with loading_feedback, a chat stream gets "
                                  "chat.completion.chunk deltas of reasoning_content instead); a load that "
                                  "fails after that ends it with one event data: {\"error\": {...}} (no [DONE])"},
    },
    "additionalProperties": True,
}

_SSE_EVENT: Schema = {
    "type": "object",
    "description": "One server-sent event, as its fields (the schema of text/event-stream describes one event "
                   "before OpenAPI 3.2's itemSchema).",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer"}},
}

_MODEL_EVENT: Schema = {
    **_SSE_EVENT,
    "description": "One state change: event model, its data a JSON object with the model's full snapshot "
                   "and the reason (snapshot for the first event of each model).",
    "required": ["data"],
    "properties": {
        **_SSE_EVENT["properties"],
        "event": {"const": "model"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "type": "object", "required": ["reason", "model", "time"],
            "properties": {"reason": {"type": "string"}, "model": _ref("Model"), "time": {"type": "number"},
                           # memory_given_back: {"unloaded": [{"name", "bytes"}], "short": {device: bytes}}
                           "detail": {"type": "object"}}}},
    },
}

_BYTE_SECONDS: Schema = {"type": "number", "minimum": 0}

_GIVEN_BACK: Schema = {
    "type": "object",
    "description": "Memory given back by idle and memory-pressure unloads, in byte-seconds (the bytes a model held "
                   "at its unload times the time until its next load, its recipe's removal, Siesta's stop, or now), "
                   "from the history file",
    "required": ["today", "total", "since", "by_device"],
    "properties": {
        "today": {**_BYTE_SECONDS, "description": "since local midnight"},
        "total": {**_BYTE_SECONDS, "description": "in the whole history file"},
        "since": {**_SECONDS_OR_NULL, "description": "when the history file begins (Unix seconds); null: empty"},
        "by_device": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["today", "total"],
            "properties": {"today": _BYTE_SECONDS, "total": _BYTE_SECONDS}}},
    },
}

_SHARE: Schema = {"type": "number", "minimum": 0, "maximum": 1}

_HISTORY: Schema = {
    "type": "object",
    "description": "One local day of the history file, up to now when it is today",
    "required": ["day", "from", "to", "since", "models"],
    "properties": {
        "day": {"type": "string", "format": "date"},
        "from": {"type": "number", "description": "the day's first moment (Unix seconds)"},
        "to": {"type": "number", "description": "its end, or now"},
        "since": {**_SECONDS_OR_NULL, "description": "when the history file begins"},
        "models": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "loads", "loads_failed", "loaded", "idle", "unloaded", "given_back"],
            "properties": {
                "name": {"type": "string"},
                "loads": {"type": "integer", "minimum": 0, "description": "loads that ended ready"},
                "loads_failed": {"type": "integer", "minimum": 0},
                "loaded": {**_SHARE, "description": "share of the day (so far) its server was up"},
                "idle": {**_SHARE, "description": "share of the day it was loaded with no request: a part of loaded"},
                "unloaded": _SHARE,
                "given_back": {**_BYTE_SECONDS, "description": "byte-seconds given back that day"},
            }}},
    },
}

SCHEMAS: dict[str, Schema] = {
    "GivenBack": _GIVEN_BACK, "History": _HISTORY,
    "Error": _ERROR, "Model": _MODEL, "Remote": _REMOTE, "Settings": _SETTINGS, "Device": _DEVICE,
    "System": _SYSTEM, "Health": _HEALTH, "Duration": _DURATION, "OpenAIModel": _OPENAI_MODEL,
    "OpenAIRequest": _OPENAI_REQUEST, "ServerSentEvent": _SSE_EVENT, "ModelEvent": _MODEL_EVENT,
}

# ---- responses ---------------------------------------------------------------------------------

Codes = dict[int, list[str]]

_STATUS_TEXT = {400: "Malformed request", 401: "Missing or wrong API key", 403: "Refused before the body is read",
                404: "Not found", 408: "Body too slow", 409: "Conflict", 413: "Body too large",
                415: "Body is not JSON", 422: "A remote refused it", 500: "The file could not be written",
                502: "A server behind Siesta failed", 503: "The model cannot serve now"}

GUARD: Codes = {401: ["invalid_api_key"], 403: ["forbidden_host", "forbidden_origin"]}
"""Every route: the Host and Origin checks, and the API key when ``api_key`` is set."""

GUARD_BODY: Codes = {415: ["unsupported_content_type"]}
"""Every route that takes a body: a request with an Origin must say it sends JSON."""

BODY: Codes = {400: ["empty_body", "body_too_deep", "invalid_json", "invalid_body"], 408: ["body_too_slow"],
               413: ["body_too_large"]}
"""A route that reads a JSON object body (``/api/v1``: at most ``MAX_BODY`` bytes; ``/v1``: 32 MB)."""

JSON_BODY: Codes = {**BODY, **GUARD_BODY}
"""A management route's body, which must also be sent as JSON."""

AMBIGUOUS: Codes = {400: ["name_too_long"], 404: ["model_not_found"], 409: ["ambiguous_model"]}
"""A route that looks a model up by name (a name longer than any model's is refused)."""

REMOTE_ACTION: Codes = {400: ["not_supported", "remote_refused"], 404: ["remote_refused"],
                        409: ["remote_refused"], 422: ["remote_refused"], 502: ["remote_unreachable", "remote_error"]}
"""An action on a remote's model (load, unload, a timeout): the remote's refusal or failure."""

UNAVAILABLE: Codes = {503: ["model_unavailable", "model_not_found", "recipe_invalid", "crash_loop", "shutting_down",
                            "insufficient_memory", "no_capacity"]}
"""A load that could not be done: 503 with ``Retry-After``."""

PERSIST: Codes = {409: ["recipe_invalid"], 500: ["persist_failed"]}
"""A write to a recipe or settings.toml: a file that does not parse is left as it is."""


def _merge(*groups: Codes) -> Codes:
    """One operation's error codes by status, from the groups that apply to it."""
    out: Codes = {}
    for group in groups:
        for status, codes in group.items():
            out.setdefault(status, [])
            out[status] += [c for c in codes if c not in out[status]]
    return out


def _json(schema: Schema, description: str, example: Any = None) -> dict[str, Any]:
    """A response whose body is JSON of ``schema``."""
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _errors(codes: Codes) -> dict[str, Any]:
    """The error responses for ``codes`` (status -> the ``code`` values it may carry)."""
    out: dict[str, Any] = {}
    for status in sorted(codes):
        only_these = {"properties": {"error": {"properties": {"code": {"enum": codes[status]}}}}}
        schema = {"allOf": [_ref("Error"), only_these]}
        response = _json(schema, f"{_STATUS_TEXT[status]}: {', '.join(codes[status])}")
        if status == 503 and set(codes[status]) & set(UNAVAILABLE[503]):
            response["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                   "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        out[str(status)] = response
    return out


def _body(schema: Schema, *examples: Any) -> dict[str, Any]:
    """A required JSON request body; its examples name the model ``tiny`` (the demo model,
    and the fake model the fuzzing test serves), so a fuzzer reaches a real model."""
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {f"example{i}": {"value": value} for i, value in enumerate(examples, 1)}
    return {"required": True, "content": {"application/json": media}}


def _op(op_id: str, summary: str, ok: dict[str, Any], codes: Codes | None = None, *, tag: str = "management",
        **extra: Any) -> dict[str, Any]:
    """One operation: its 200 answer ``ok``, and an error response per status of ``codes``
    plus the guard's (401, 403), which every route may give."""
    return {"operationId": op_id, "summary": summary, "tags": [tag],
            "responses": {"200": ok, **_errors(_merge(GUARD, codes or {}))}, **extra}


_NAME_PARAM = {
    "name": "name", "in": "path", "required": True, "example": "tiny",
    "description": "a recipe's name, or a remote's model as REMOTE/MODEL (the / may be written as is)",
    "schema": {"type": "string", "minLength": 1},
}
_SCOPE_PARAM = {
    "name": "scope", "in": "query", "required": False,
    "description": "local: this machine's models only; any other value is ignored",
    "schema": {"type": "string"},
}
_MODEL_BODY = {"type": "object", "required": ["model"],
               "properties": {"model": {"type": "string", "minLength": 1}}}
_UNLOAD_BODY = {
    "type": "object",
    "properties": {"model": {"description": "the model to unload (ignored with all: true)"},
                   "all": {"description": "true unloads every model; any other value is ignored"}},
    "anyOf": [{"required": ["all"], "properties": {"all": {"const": True}}},
              {"required": ["model"], "properties": {"model": {"type": "string", "minLength": 1}}}],
}
_PATCH_MODEL_BODY = {
    "type": "object", "required": ["unload_timeout"], "additionalProperties": False,
    "properties": {"unload_timeout": {"description": 'a duration, "never", or "default" (removes the key: '
                                                    "the global timeout applies)", "type": ["string", "number"]}},
}
_PATCH_SETTINGS_BODY = {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "description": "Every value is checked before any is written.",
    "properties": {name: _SETTING_INPUTS.get(name, {}) for name in RUNTIME_SETTABLE},
}


def _management_paths() -> dict[str, Any]:
    """``/api/v1/...`` (app/api/management.py, and this document's own route)."""
    model = _json(_ref("Model"), "The model")
    loading = _merge(JSON_BODY, {400: ["missing_model"]}, AMBIGUOUS, REMOTE_ACTION)
    return {
        "/api/v1/health": {"get": _op(
            "health", "Status, version, the settings in force with their sources, the remotes, the loaded models",
            _json(_ref("Health"), "Siesta is up"))},
        "/api/v1/models": {"get": _op(
            "listModels", "Every recipe, loaded or not, then every remote model, and the remotes",
            _json({"type": "object", "required": ["models"],
                   "properties": {"models": {"type": "array", "items": _ref("Model")},
                                  "remotes": {"type": "array", "items": _ref("Remote"),
                                              "description": "absent with scope=local"},
                                  "given_back": _ref("GivenBack")}}, "The models"),
            parameters=[_SCOPE_PARAM])},
        "/api/v1/models/{name}": {
            "parameters": [_NAME_PARAM],
            "get": _op("getModel", "One model", model, AMBIGUOUS),
            "patch": _op(
                "setModelTimeout", "Sets the model's unload_timeout in its recipe (default removes the key); "
                "applies to a running countdown at once", model,
                _merge(JSON_BODY, {400: ["invalid_duration"]}, AMBIGUOUS, PERSIST, REMOTE_ACTION),
                requestBody=_body(_PATCH_MODEL_BODY, {"unload_timeout": "10m"}, {"unload_timeout": "default"})),
        },
        "/api/v1/remotes": {"get": _op(
            "listRemotes", "Each remote and whether it answers",
            _json({"type": "object", "required": ["remotes"],
                   "properties": {"remotes": {"type": "array", "items": _ref("Remote")}}}, "The remotes"))},
        "/api/v1/load": {"post": _op(
            "load", "Loads a model; answers when it is ready (also clears a crash loop)", model,
            _merge(loading, UNAVAILABLE), requestBody=_body(_MODEL_BODY, {"model": "tiny"}))},
        "/api/v1/unload": {"post": _op(
            "unload", "Unloads a model, or every model with {\"all\": true}; waits for requests in flight "
            "up to stop_timeout",
            {"description": "The model, or with all the names of the models unloaded", "content": {
                "application/json": {"schema": {"oneOf": [
                    _ref("Model"),
                    {"type": "object", "required": ["unloaded"], "additionalProperties": False,
                     "properties": {"unloaded": {"type": "array", "items": {"type": "string"}}}}]}}}},
            loading, requestBody=_body(_UNLOAD_BODY, {"model": "tiny"}, {"all": True}))},
        "/api/v1/settings": {
            "get": _op("getSettings", "The settings in force with their sources",
                       _json(_ref("Settings"), "The settings")),
            "patch": _op(
                "setSettings", "Writes run-time settings to settings.toml and applies them at once",
                _json(_ref("Settings"), "The settings in force afterwards"),
                _merge(JSON_BODY, {400: ["invalid_setting"], 409: ["setting_fixed"]}, PERSIST),
                requestBody=_body(_PATCH_SETTINGS_BODY, {"global_unload_timeout": "5m"})),
        },
        "/api/v1/events": {"get": _op(
            "events", "Server-sent events, one per state change, each with the full model object and a reason; "
            "first a snapshot event per model. The stream does not end.",
            {"description": "An endless text/event-stream of `event: model` with JSON data "
                            '{"reason", "model", "time"}; a comment every 15 s keeps it alive',
             "content": {"text/event-stream": {"schema": _ref("ModelEvent")}}},
            {503: ["too_many_streams"]}, parameters=[_SCOPE_PARAM])},
        "/api/v1/system": {"get": _op(
            "system", "RAM and each GPU: total, used, free, and what Siesta's models use there",
            _json(_ref("System"), "The machine's memory"))},
        PATH: {"get": _op("openapi", "This document", _json({"type": "object"}, "The OpenAPI 3.1 document"))},
        HISTORY_PATH: {"get": _op(
            "history", "One local day of the history of loads and unloads, per model: loads, the shares of the day "
            "it was loaded, idle in memory and unloaded, and the memory it gave back",
            _json(_ref("History"), "The day"), {400: ["invalid_day"]},
            parameters=[{"name": "day", "in": "query", "required": False, "example": "today",
                         "description": "today (the default), yesterday, or YYYY-MM-DD",
                         "schema": {"type": "string", "pattern": DAY_PATTERN}}])},
        METRICS_PATH: {"get": _op(
            "metrics", "Prometheus metrics: models loaded, requests, loads, unloads, memory, remotes, memory "
            "given back",
            {"description": "Prometheus's text format (OpenMetrics when the Accept header asks for it)",
             "content": {"text/plain": {"schema": {"type": "string"}},
                         "application/openmetrics-text": {"schema": {"type": "string"}}}},
            tag="metrics")},
    }


def _openai_paths() -> dict[str, Any]:
    """``/v1/...`` (app/api/openai_proxy.py): the model lists, and the forwarded POSTs, whose
    answer, once a model's server gives it, is that server's own (any status, any body)."""
    forward_codes = _merge({400: ["invalid_path"]}, BODY, GUARD_BODY, {400: ["missing_model", "invalid_keep_alive"]},
                           AMBIGUOUS, {502: ["backend_error", "remote_unreachable"]}, UNAVAILABLE)
    chat_example = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "2m"}
    examples = {
        "/v1/chat/completions": ("createChatCompletion", "A chat completion", chat_example),
        "/v1/completions": ("createCompletion", "A text completion", {"model": "tiny", "prompt": "hi"}),
        "/v1/embeddings": ("createEmbedding", "Embeddings", {"model": "tiny", "input": "hi"}),
        "/v1/{tail}": ("forward", "Any other POST /v1/* whose body names a model", {"model": "tiny"}),
    }
    answer = {
        "description": "The model server's answer, passed through as it comes (streamed as it is written "
                       "when it is text/event-stream)",
        "content": {"application/json": {"schema": {}}, "text/event-stream": {"schema": _ref("ServerSentEvent")}},
    }
    passed_through = {"description": "Once forwarded, the model server's own answer with its own status and body",
                      "content": {"*/*": {"schema": {}}}}
    paths: dict[str, Any] = {}
    for path, (op_id, summary, example) in examples.items():
        op = _op(op_id, f"{summary}: routed by the body's model, which is loaded first when it is not loaded",
                 answer, forward_codes, tag="openai", requestBody=_body(_ref("OpenAIRequest"), example))
        op["responses"]["default"] = passed_through
        paths[path] = {"post": op}
    paths["/v1/{tail}"]["parameters"] = [{
        "name": "tail", "in": "path", "required": True, "example": "rerank",
        "description": "the rest of the path (it may have more parts: /v1/audio/speech), sent to the model's "
                       "server as it is; each part must be a plain name (letters, digits, - _ . ~; not . or ..), "
                       "or 400 invalid_path",
        "schema": {"type": "string"}}]
    paths["/v1/models"] = {"get": _op(
        "listOpenAIModels", "Every recipe, then each remote's models as REMOTE/MODEL",
        _json({"type": "object", "required": ["object", "data"],
               "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("OpenAIModel")}}},
              "The models"), tag="openai")}
    paths["/v1/models/{name}"] = {
        "parameters": [{**_NAME_PARAM, "description": "a recipe's name, or a remote's bare model name"}],
        "get": _op("getOpenAIModel", "One model", _json(_ref("OpenAIModel"), "The model"), AMBIGUOUS, tag="openai"),
    }
    return paths


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once; callers must not change it)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Siesta",
            "version": __version__,
            "summary": "Runs local model servers on demand and unloads them when idle.",
            "description": "Siesta's management API (/api/v1) and the OpenAI-compatible routes it answers itself "
                           "(/v1). Every error is {\"error\": {\"message\", \"type\", \"code\"}}. Management bodies "
                           f"are JSON objects of at most {MAX_BODY // 1024} KB; /v1 bodies at most "
                           f"{PROXY_MAX_BODY_MB} MB. When api_key is set, every route needs "
                           "Authorization: Bearer <key>.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": "management", "description": "Siesta's own API"},
                 {"name": "openai", "description": "The OpenAI-compatible front door"},
                 {"name": "metrics", "description": "Prometheus metrics"}],
        "security": [{}, {"apiKey": []}],
        "paths": {**_management_paths(), **_openai_paths()},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "SIESTA_API_KEY, when it is set"}},
        },
    }


async def serve(request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json``."""
    return json_response(document())


def routes() -> list[web.AbstractRouteDef]:
    """The route that serves the document, for :func:`app.api.server.build_app`."""
    return [web.get(PATH, serve)]
