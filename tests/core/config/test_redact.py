"""Secrets kept out of what Siesta shows (app.core.config.redact): names, flags, URLs, free
text, command lines, environments and tables. Each secret below is a distinct string, and
every test checks both that it is gone and that what is not secret is kept as it was."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.config.redact import (
    REDACTED,
    is_secret_flag,
    is_secret_name,
    redact_args,
    redact_env,
    redact_mapping,
    redact_text,
    redact_url,
)

# ---- names and flags ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "api_key", "apiKey", "API_KEY", "OPENAI_API_KEY", "SIESTA_API_KEY", "SIESTA_REMOTE_GPUBOX_API_KEY", "HF_TOKEN",
    "hf-token", "token", "secret", "client_secret", "password", "PGPASSWORD", "db.password", "passwd",
    "passphrase", "auth", "Authorization", "x-api-key", "credentials", "cookie", "key", "private_key",
    "access_key", "HFToken", "api_keys",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name), name


@pytest.mark.parametrize("name", [
    "host", "port", "model", "ctx-size", "max_tokens", "n_keep", "keep_alive", "api_key_file", "ssl-key-file",
    "HF_TOKEN_PATH", "api_key_env", "token_url", "no-auth", "tokenizer.ggml.add_bos_token", "bos_token",
    "eos_token_id", "hotkey", "monkey", "SSH_AUTH_SOCK", "", "---", "CUDA_VISIBLE_DEVICES", "keyboard",
])
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name), name


@pytest.mark.parametrize("flag, secret", [
    ("--api-key", True), ("--api-key=x", True), ("--hf-token", True), ("-hft", True), ("--password", True),
    ("--api-key-file", False), ("--ssl-key-file", False), ("--no-auth", False), ("--port", False), ("-hf", False),
    ("-k", False), ("api-key", False), ("--", False), ("-", False), ("-t", False),
])
def test_secret_flags(flag: str, secret: bool) -> None:
    assert is_secret_flag(flag) is secret


# ---- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("http://user:s3cret@gpubox:8777", "http://***@gpubox:8777"),
    ("https://ghp_tokenonly@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("http://u:p@ss@host/path", "http://***@host/path"),  # a raw @ in the password
    ("https://host/v1/models?api_key=abc123&limit=5", "https://host/v1/models?api_key=***&limit=5"),
    ("https://host/x?token=t0k&x=1#frag", "https://host/x?token=***&x=1#frag"),
    ("http://127.0.0.1:8777", "http://127.0.0.1:8777"),
    ("http://[::1]:8777/api/v1/health", "http://[::1]:8777/api/v1/health"),
    ("file:///home/me/models", "file:///home/me/models"),
    ("https://huggingface.co/org/repo?revision=main", "https://huggingface.co/org/repo?revision=main"),
])
def test_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(url) == shown
    assert redact_url(shown) == shown  # idempotent


# ---- free text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, shown", [
    ("llama-server --api-key sk-live-1 --port 8080", "llama-server --api-key *** --port 8080"),
    ("llama-server --api-key=sk-live-2 -c 4096", "llama-server --api-key=*** -c 4096"),
    ('llama-server --api-key "two words" --port 1', 'llama-server --api-key "***" --port 1'),
    ("llama-server -hft hf_short -hf org/repo", "llama-server -hft *** -hf org/repo"),
    ("server --no-auth --port 9", "server --no-auth --port 9"),
    ("server --api-key --port 9", "server --api-key --port 9"),  # a switch: its "value" is the next option
    ('api_key = "toml-secret"', 'api_key = "***"'),
    ("api_key='single'", "api_key='***'"),
    ('{"api_key": "json-secret", "url": "http://gpubox"}', '{"api_key": "***", "url": "http://gpubox"}'),
    ("HF_TOKEN=env-secret ./server", "HF_TOKEN=*** ./server"),
    ("x-api-key: header-secret", "x-api-key: ***"),
    ("remotes:\n  gpubox:\n    api_key: yaml-secret\n", "remotes:\n  gpubox:\n    api_key: ***\n"),
    ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
    ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic ***"),
    ("sent with bearer xyz123", "sent with bearer ***"),
    # Python's repr of a recipe's lists and tables, as error messages quote them
    ("field 'args': expected a list of strings, got ['--ctx-size', '8192', '--api-key', 'repr-secret', 3.5j]",
     "field 'args': expected a list of strings, got ['--ctx-size', '8192', '--api-key', '***', 3.5j]"),
    ("got {'HF_TOKEN': 'dict-secret', 'CUDA_VISIBLE_DEVICES': '0'}",
     "got {'HF_TOKEN': '***', 'CUDA_VISIBLE_DEVICES': '0'}"),
    # tokens of a well-known shape, wherever they are
    ("a token hf_abcdefghijklmnopqrstuvwxyz0123 in prose", "a token *** in prose"),
    ("OPENAI sk-proj-abcdefghijklmnopqrstuvwx.", "OPENAI ***."),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789 and github_pat_11ABCDEFG0123456789_abcdefghijkl",
     "*** and ***"),
])
def test_text(text: str, shown: str) -> None:
    assert redact_text(text) == shown
    assert redact_text(shown) == shown  # idempotent


@pytest.mark.parametrize("text", [
    "api key: (set)", "api_key: (set)", '"api_key": null', "api_key = none", "token: ***",
    "ports below 1024 need privileges", "the token limit", "Basic settings apply",
    "--override-kv tokenizer.ggml.add_bos_token=bool:false", "/home/me/.cache/huggingface/token",
    "remote 'gpubox' at http://192.168.1.20:8777 is unreachable: connection refused",
    "", "model = ~/models/qwen3-4b-q4_k_m.gguf", "key://not-a-pair",
    "missing or wrong API key: send Authorization: Bearer <SIESTA_API_KEY>",  # prose, and a placeholder
])
def test_text_without_secrets_is_kept(text: str) -> None:
    assert redact_text(text) == text


# ---- command lines, environments, tables --------------------------------------------------------------


def test_args() -> None:
    args = ["--ctx-size", "8192", "--api-key", "a1", "--hf-token=a2", "-hft", "a3", "--api-key-file", "/etc/key",
            "--no-auth", "--port", "{port}", "--api-key", "--verbose", "--override-kv",
            "tokenizer.ggml.add_bos_token=bool:false", "--alias", "http://u:a4@mirror/x", "HF_TOKEN=a5"]
    shown = redact_args(args)
    assert shown == ["--ctx-size", "8192", "--api-key", REDACTED, f"--hf-token={REDACTED}", "-hft", REDACTED,
                     "--api-key-file", "/etc/key", "--no-auth", "--port", "{port}", "--api-key", "--verbose",
                     "--override-kv", "tokenizer.ggml.add_bos_token=bool:false", "--alias",
                     f"http://{REDACTED}@mirror/x", f"HF_TOKEN={REDACTED}"]
    assert not any(secret in " ".join(shown) for secret in ("a1", "a2", "a3", "a4", "a5"))
    assert redact_args(shown) == shown
    assert args[3] == "a1"  # a copy: the recipe's own arguments are untouched
    assert redact_args(["--api-key"]) == ["--api-key"]  # nothing follows
    assert redact_args([8192, "--api-key", 42]) == ["8192", "--api-key", REDACTED]
    assert redact_args(["--api-key k1 --port 1", "next"]) == [f"--api-key {REDACTED} --port 1", "next"]  # one string


def test_env() -> None:
    env = {"HF_TOKEN": "e1", "OPENAI_API_KEY": "e2", "CUDA_VISIBLE_DEVICES": "1", "HTTPS_PROXY": "http://u:e3@proxy",
           "HF_TOKEN_PATH": "/run/token", "EMPTY_TOKEN": ""}
    assert redact_env(env) == {"HF_TOKEN": REDACTED, "OPENAI_API_KEY": REDACTED, "CUDA_VISIBLE_DEVICES": "1",
                               "HTTPS_PROXY": f"http://{REDACTED}@proxy", "HF_TOKEN_PATH": "/run/token",
                               "EMPTY_TOKEN": ""}


def test_remote_tables_and_nested_data() -> None:
    remotes = {"remotes": {
        "gpubox": {"kind": "siesta", "url": "http://admin:m1@gpubox:8777", "api_key": "m2",
                   "timeouts": {"llama3:8b": "10m"}},
        "ollama": {"kind": "ollama", "url": "http://localhost:11434", "api_key": None},
        "openai": {"kind": "openai", "url": "https://api.example/v1", "api_key": "(set)"},
    }, "credentials": {"user": "m3", "tokens": ["m4", 5]}, "api_keys": ["m6", "m7"], "auth": True,
        "notes": ["--api-key m8"], "port": 8777, "args": ["--ctx-size", "8192", "--api-key", "m9"]}
    shown = redact_mapping(remotes)
    assert shown["remotes"]["gpubox"] == {"kind": "siesta", "url": f"http://{REDACTED}@gpubox:8777",
                                          "api_key": REDACTED, "timeouts": {"llama3:8b": "10m"}}
    assert shown["remotes"]["ollama"]["api_key"] is None  # says only that there is none
    assert shown["remotes"]["openai"]["api_key"] == "(set)"
    assert shown["credentials"] == {"user": REDACTED, "tokens": [REDACTED, REDACTED]}
    assert shown["api_keys"] == [REDACTED, REDACTED]
    assert shown["auth"] is True and shown["port"] == 8777
    assert shown["notes"] == [f"--api-key {REDACTED}"]
    assert shown["args"] == ["--ctx-size", "8192", "--api-key", REDACTED]  # a command line, read as one
    # what settings describe: the value hidden, where it came from kept
    assert redact_mapping({"api_key": {"value": "m10", "source": "env SIESTA_API_KEY"}}) == {
        "api_key": {"value": REDACTED, "source": "env SIESTA_API_KEY"}}
    text = json.dumps(shown)
    for secret in ("m1", "m2", "m3", "m4", "m6", "m7", "m8", "m9"):
        assert f'"{secret}"' not in text and f"{secret}@" not in text and f" {secret}" not in text
    assert remotes["remotes"]["gpubox"]["api_key"] == "m2"  # a copy
    assert redact_mapping(shown) == shown


# ---- any secret, anywhere -----------------------------------------------------------------------------

SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.~+/", min_size=6,
                 max_size=40).filter(lambda s: s.lower() not in ("(set)", "none", "null", "true", "false"))


@given(secret=SECRET, flag=st.sampled_from(["--api-key", "--hf-token", "-hft", "--password", "--auth-token"]))
def test_any_flag_value_is_hidden(secret: str, flag: str) -> None:
    line = f"llama-server -m /m.gguf {flag} {secret} --port 8080"
    assert redact_text(line) == f"llama-server -m /m.gguf {flag} *** --port 8080"
    assert redact_args(line.split()) == ["llama-server", "-m", "/m.gguf", flag, "***", "--port", "8080"]


@given(user=SECRET.filter(lambda s: "/" not in s), password=SECRET)  # a / before the : ends the host
def test_any_user_part_is_hidden(user: str, password: str) -> None:
    shown = redact_text(f"remote at http://{user}:{password}@10.0.0.2:8777/v1 failed")
    assert shown == "remote at http://***@10.0.0.2:8777/v1 failed"


def test_a_password_with_a_slash_and_an_at_in_the_path() -> None:
    assert redact_url("http://me:pa/ss@gpubox:8777/v1") == "http://***@gpubox:8777/v1"
    assert redact_url("https://mastodon.example/@someone") == "https://mastodon.example/@someone"  # no user part
    # the price of the rule above: a port followed by a path with an @ is taken for a password
    assert redact_url("http://host:8080/pkg/@scope/x") == "http://***@scope/x"
