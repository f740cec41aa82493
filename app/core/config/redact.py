"""Secrets kept out of what Siesta shows: pure functions, no I/O.

What counts as a secret:

* **A named value whose name says so** (:func:`is_secret_name`): the name's words (split at
  ``-``, ``_``, ``.`` and camelCase) include ``key``, ``token``, ``secret``, ``password``,
  ``passwd``, ``passphrase``, ``apikey``, ``auth``, ``authorization``, ``credential(s)`` or
  ``cookie``: ``--api-key``, ``--hf-token``, ``HF_TOKEN``, ``OPENAI_API_KEY``, ``api_key``,
  ``apiKey``. A name whose last word says it holds where the secret is, not the secret
  (``file``, ``path``, ``dir``, ``env``, ``var``, ``name``, ``id``, ``url``, ...:
  ``--api-key-file``, ``--ssl-key-file``, ``HF_TOKEN_PATH``) is not one, nor is a switch
  that turns something off (``--no-auth``), nor a tokenizer's token
  (``tokenizer.ggml.add_bos_token``).
* **A flag's value** (:func:`redact_args`): the argument after a secret flag, or what follows
  its ``=``; also llama-server's short ``-hft`` (``--hf-token``). A value that is itself a
  long option (``--port``) is left alone: the secret flag was a switch.
* **The user part of a URL**: ``http://user:pass@host`` becomes ``http://***@host`` (a token
  is often the user part alone), and a URL's query values with secret names
  (``?api_key=...``). A password with a raw ``/`` or ``@`` is hidden whole; the price is that
  ``http://host:8080/path/@x``, with an ``@`` in its path, is hidden up to that ``@`` too.
* **Authorization headers** (``Authorization: Basic ...``, ``Bearer ...`` anywhere) and tokens of a well-known shape
  (Hugging Face ``hf_...``, OpenAI ``sk-...``, GitHub ``ghp_...``/``github_pat_...``) anywhere
  in a text.

Every function returns a copy with each secret replaced by :data:`REDACTED` and is
idempotent. :func:`redact_text` finds secrets in free text (an error message, a log line, a
command line): ``--api-key X``, ``--api-key=X``, ``api_key = "X"``, ``"api_key": "X"``,
``HF_TOKEN=X``, Python's repr of a list or dict (``['--api-key', 'X']``, ``{'HF_TOKEN': 'X'}``).
A value that already says nothing (``(set)``, ``none``, ``null``, empty) is kept, and a list is
hidden whole (``'api_key': ['X']``, as vLLM prints its arguments). A ``name:`` that follows
another word is prose ("wrong API key: send it..."), not a pair, and is kept too, as is a
tokenizer's token id (``BOS token = 1``, in llama-server's output); prose that names a secret
flag (``--api-key``) loses the word after it.

:func:`redact_text` is cheap on text that cannot hold a secret (a model server's log, most of
it): each rule runs only when a word it needs is in the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_name", "is_secret_flag", "redact_url", "redact_args", "redact_env",
           "redact_mapping", "redact_text"]

REDACTED = "***"
"""What a secret is replaced by."""

SECRET_WORDS = frozenset({
    "key", "keys", "apikey", "apikeys", "token", "secret", "secrets", "password", "passwords", "passwd",
    "passphrase", "auth", "authorization", "credential", "credentials", "cookie",
})
"""A name with one of these words names a secret (unless :data:`HOLDER_WORDS` ends it)."""

SECRET_ENDINGS = ("password", "passwd", "passphrase", "secret", "apikey", "token")
"""A word ending so names a secret too: ``PGPASSWORD``, ``GITHUBTOKEN``."""

HOLDER_WORDS = frozenset({
    "file", "files", "path", "dir", "folder", "env", "var", "name", "id", "type", "url", "uri", "sock", "socket",
    "count", "limit", "size", "len", "length", "set", "header", "source", "from", "origin",
})
"""A name ending in one of these names where a secret is, or something about it, not the secret."""

TOKENIZER_WORDS = frozenset({"tokenizer", "vocab", "bos", "eos", "eot", "eom", "pad", "unk", "sep", "cls", "mask",
                             "fim", "special", "add"})
"""A name with one of these words is about a tokenizer's tokens, not a secret: a GGUF key such as
``tokenizer.ggml.add_bos_token`` in llama-server's ``--override-kv``."""

SECRET_SHORT_FLAGS = frozenset({"-hft"})
"""Short flags that take a secret: llama-server's ``-hft`` (``--hf-token``)."""

SAYS_NOTHING = frozenset({"", REDACTED, "(set)", "(not set)", "(none)", "none", "null", "nil", "true", "false"})
"""Values kept as they are where a secret could be: they tell only whether one is set."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")

# scheme://userinfo@ : the user part ends at the last @ before the path (a password with a raw @);
# after "user:" it may hold a raw / too (invalid, but written), so host:port/path/@x is hidden as well
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
                       r"(?P<userinfo>[^/?#\s'\"<>@:]*:[^\s'\"<>]*|[^/?#\s'\"<>]*)@")
_QUERY = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#;\s'\"]+)=(?P<value>[^&#;\s'\"]*)")
_BEARER = re.compile(r"\b(?P<head>(?:Bearer|bearer|BEARER)\s+)(?P<value>[A-Za-z0-9._~+/=-]+)")
_AUTHORIZATION = re.compile(r"(?P<head>\b(?:Proxy-)?Authorization[\"']?\s*[:=]\s*[\"']?[A-Za-z]+\s+)"
                            r"(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_AUTH_SCHEMES = ("bearer", "basic", "digest", "negotiate", "token")
_KNOWN_TOKENS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,})(?![A-Za-z0-9_-])")
_AFTER_A_WORD = re.compile(r"\w[ \t]+$")
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
_LIST = r"\[[^\[\]\n]*\]"
# What every secret a rule below finds has in it (lower case): a text with none of it skips that
# rule. Every secret name (SECRET_WORDS, SECRET_ENDINGS) holds one of these words or "token" as a
# word of its own: not "tokens" (n_tokens, on most lines of llama-server's log) nor "tokenizer".
_NAME_HINTS = ("key", "secret", "pass", "auth", "credential", "cookie")
_TOKEN_WORD = re.compile(r"token(?!s(?![a-z])|izer)")
_TOKEN_HINTS = ("hf_", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")
# --flag VALUE, --flag=VALUE, and a flag and its value as items of a repr'd list: '--flag', 'VALUE'
_FLAG = re.compile(
    r"(?P<flag>(?<![\w-])--?[A-Za-z][A-Za-z0-9_.-]*)"
    r"(?P<sep>=|[ \t]+|[\"']\s*,\s*[\"'])"
    rf"(?P<value>{_QUOTED}|\([^()\s]*\)|[^\s'\",\]\)]+)")
# name = value, name: value, "name": "value", 'name': 'value', NAME=value
_PAIR = re.compile(
    r"(?P<name>(?P<q>[\"']?)(?<![\w.-])(?P<word>[A-Za-z_][A-Za-z0-9_.-]*)(?P=q))"
    r"(?P<sep>[ \t]*[:=][ \t]*)"
    rf"(?P<value>{_QUOTED}|{_LIST}|\([^()\s]*\)|[^\s,;}}\]\)&'\"]+)")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.split(_CAMEL.sub("_", name)) if w]


def is_secret_name(name: str) -> bool:
    """Whether a value named ``name`` (a flag, a variable, a key of a table) is a secret."""
    words = _words(name)
    if not words or words[0] == "no" or words[-1] in HOLDER_WORDS or TOKENIZER_WORDS.intersection(words):
        return False
    return any(w in SECRET_WORDS or w.endswith(SECRET_ENDINGS) for w in words)


def is_secret_flag(flag: str) -> bool:
    """Whether a command-line flag (``--api-key``, ``-hft``; ``=VALUE`` ignored) takes a secret."""
    flag = flag.partition("=")[0]
    if not flag.startswith("-") or flag.strip("-") == "":
        return False
    return flag in SECRET_SHORT_FLAGS or (flag.startswith("--") and is_secret_name(flag[2:]))


def _hidden(value: str) -> str:
    """A value replaced by REDACTED, keeping its quotes; one that says nothing is kept."""
    quote = value[0] if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0] else ""
    inner = value[1:-1] if quote else value
    if inner.strip().lower() in SAYS_NOTHING:
        return value
    return f"{quote}{REDACTED}{quote}"


def redact_url(url: str) -> str:
    """``url`` without its user part and without the values of secret query parameters."""
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", url)
    return _QUERY.sub(lambda m: f"{m['lead']}{m['name']}={_hidden(m['value'])}" if is_secret_name(m["name"])
                      else m.group(0), url)


def redact_text(text: str) -> str:
    """``text`` with every secret it shows replaced (see the module's docstring)."""
    if not text:
        return text
    low = text.lower()
    names = any(hint in low for hint in _NAME_HINTS) or _TOKEN_WORD.search(low) is not None
    if "://" in low or names:
        text = redact_url(text)
    if "authorization" in low:
        text = _AUTHORIZATION.sub(lambda m: f"{m['head']}{REDACTED}", text)
    if "bearer" in low:
        text = _BEARER.sub(lambda m: f"{m['head']}{REDACTED}", text)
    if any(hint in low for hint in _TOKEN_HINTS):
        text = _KNOWN_TOKENS.sub(REDACTED, text)
    if not names and not any(flag in low for flag in SECRET_SHORT_FLAGS):
        return text

    def flag(m: re.Match[str]) -> str:
        if not is_secret_flag(m["flag"]) or m["value"].startswith("--"):
            return m.group(0)
        return f"{m['flag']}{m['sep']}{_hidden(m['value'])}"

    text = _FLAG.sub(flag, text)
    if not names:
        return text

    def pair(m: re.Match[str]) -> str:
        if not is_secret_name(m["word"]) or m["value"].lower() in _AUTH_SCHEMES:
            return m.group(0)  # (Authorization: Bearer X: its X is redacted above)
        if m["sep"].strip() == ":" and m["value"].startswith("//"):
            return m.group(0)  # scheme://, not name: value
        after_a_word = not m["q"] and _AFTER_A_WORD.search(m.string, 0, m.start("name"))
        if m["sep"].strip() == ":" and after_a_word:
            return m.group(0)  # prose ("wrong API key: send it as..."), not a key: value line
        if after_a_word and m["word"].lower() == "token" and m["value"].isdigit():
            return m.group(0)  # a tokenizer's token id: "print_info: BOS token = 1 '<s>'"
        return f"{m['name']}{m['sep']}{_hidden(m['value'])}"

    return _PAIR.sub(pair, text)


def redact_args(args: Iterable[str]) -> list[str]:
    """A command line (a recipe's ``args`` or ``command``) with the values of secret flags,
    URLs' user parts and ``NAME=VALUE`` secrets replaced."""
    out: list[str] = []
    hide_next = False
    for arg in (str(a) for a in args):
        if hide_next:
            hide_next = False
            if not arg.startswith("--"):
                out.append(_hidden(arg))
                continue
        flag, eq, value = arg.partition("=")
        if arg.startswith("-") and not any(c.isspace() for c in flag) and is_secret_flag(flag):
            if eq:
                out.append(f"{flag}={_hidden(value)}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact_text(arg))
    return out


def redact_env(env: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables (a recipe's ``env``) with the values of secret names replaced,
    and the others' URLs' user parts."""
    return {str(name): _hidden(str(value)) if is_secret_name(str(name)) else redact_text(str(value))
            for name, value in env.items()}


def redact_mapping(data: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, strings, numbers) with the value of every key
    with a secret name replaced (a table of remotes, settings, a health answer), every list of
    strings read as a command line (:func:`redact_args`), and every other string passed through
    :func:`redact_text`."""
    if isinstance(data, Mapping):
        out = {}
        for key, value in data.items():
            out[key] = _hide_all(value) if is_secret_name(str(key)) else redact_mapping(value)
        return out
    if isinstance(data, (list, tuple)):
        if data and all(isinstance(v, str) for v in data):
            return redact_args(data)  # a list of strings may be a command line: --api-key, then its value
        return [redact_mapping(v) for v in data]
    if isinstance(data, str):
        return redact_text(data)
    return data


def _hide_all(value: Any) -> Any:
    """Everything under a secret name: each string or number replaced (``None`` and booleans say
    only whether it is set, and stay), except what a table says about it under a name that
    holds no secret (``{"value": ..., "source": "env SIESTA_API_KEY"}``: the source stays)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return {k: redact_mapping(v) if (words := _words(str(k))) and words[-1] in HOLDER_WORDS else _hide_all(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_hide_all(v) for v in value]
    return _hidden(str(value))
