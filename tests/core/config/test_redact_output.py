"""Redaction of what a model server prints (issue 26, item 7): every line of a model's log goes
through :func:`redact_text`, so it must hide what servers print about their secrets (vLLM's
``non-default args: {'api_key': ['...']}``) and leave llama-server's own output as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config.redact import redact_text

DATA = Path(__file__).resolve().parents[2] / "data"

LLAMA_SERVER_LINES = [
    "print_info: BOS token        = 1 '<s>'",
    "print_info: EOG token        = 2 '</s>'",
    "print_info: FIM PRE token    = 32007 '<PRE>'",
    "print_info: max token length = 48",
    "load: special tokens cache size = 3",
    "llama_model_loader: - kv  20:  tokenizer.ggml.bos_token_id u32 = 1",
    "slot update_slots: id  0 | task 5 | n_tokens = 128, memory_seq_rm [128, end)",
    "main: server is listening on http://127.0.0.1:8080",
    "srv  log_server_r: request: POST /v1/chat/completions 127.0.0.1 200",
]


@pytest.mark.parametrize("line", LLAMA_SERVER_LINES)
def test_llama_servers_output_is_kept(line: str) -> None:
    assert redact_text(line) == line


def test_recorded_llama_server_logs_are_kept() -> None:
    for path in sorted(DATA.glob("llama_server_*.log")):
        text = path.read_text(encoding="utf-8")
        assert redact_text(text) == text, path.name


@pytest.mark.parametrize("text, shown", [
    ("non-default args: {'api_key': ['token-abc123'], 'model': 'x'}", "non-default args: {'api_key': ***, 'model': 'x'}"),
    ('{"api_key": ["a", "b"]}', '{"api_key": ***}'),
    ("token = 5", "token = ***"),  # a key's own line, not a tokenizer's id
    ("password = 1234", "password = ***"),
    ("my token = abc", "my token = ***"),
    ("tokenString = abc", "tokenString = ***"),
])
def test_secrets_servers_print_are_hidden(text: str, shown: str) -> None:
    assert redact_text(text) == shown


@pytest.mark.parametrize("name", ["api_key", "HF_TOKEN", "apiKey", "tokenString", "PGPASSWORD", "GITHUBTOKEN", "x_auth",
                                  "Cookie", "credentials", "hfToken", "SESSION_SECRET", "passphrase", "TOKEN"])
def test_every_secret_name_is_still_found_in_a_log_line(name: str) -> None:
    """redact_text skips its rules on text without a word they need: never on a secret's name."""
    assert redact_text(f"env {name}=hunter2 ok") == f"env {name}=*** ok"
    flag = "--" + name.replace("_", "-")
    assert redact_text(f"{flag} hunter2") == f"{flag} ***"
