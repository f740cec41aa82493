"""The tiny demo GGUF: well-formed per gguf's reader, and loadable by the real llama-server."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

gguf = pytest.importorskip("gguf")

from app.demo_model import write_tiny_model  # noqa: E402

N_TENSORS = 3 + 2 * 9  # token_embd, output_norm, output + 9 per block


def _field_value(reader, key: str):
    field = reader.fields[key]
    return field.contents()


def test_writes_a_valid_llama_gguf(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "models" / "tiny.gguf"
    assert write_tiny_model(path) == path
    assert path.is_file()
    assert 300_000 < path.stat().st_size < 2_000_000
    # Atomic write leaves no temp file behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf"]

    reader = gguf.GGUFReader(path)
    assert _field_value(reader, "general.architecture") == "llama"
    assert _field_value(reader, "tokenizer.ggml.model") == "llama"
    assert len(reader.tensors) == N_TENSORS

    tokens = _field_value(reader, "tokenizer.ggml.tokens")
    n_vocab = len(tokens)
    assert n_vocab > 259 + 100
    assert len(set(tokens)) == n_vocab
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3] == "<0x00>" and tokens[258] == "<0xFF>"
    assert len(_field_value(reader, "tokenizer.ggml.scores")) == n_vocab
    types = _field_value(reader, "tokenizer.ggml.token_type")
    assert len(types) == n_vocab
    assert types[:3] == [2, 3, 3] and set(types[3:259]) == {6} and set(types[259:]) == {1}
    assert _field_value(reader, "llama.vocab_size") == n_vocab
    assert _field_value(reader, "llama.block_count") == 2
    assert _field_value(reader, "llama.embedding_length") == 64
    assert _field_value(reader, "tokenizer.ggml.bos_token_id") == 1
    assert _field_value(reader, "tokenizer.ggml.eos_token_id") == 2
    assert "messages" in _field_value(reader, "tokenizer.chat_template")

    by_name = {t.name: t for t in reader.tensors}
    # ggml ne order: token_embd is [n_embd, n_vocab].
    assert list(by_name["token_embd.weight"].shape) == [64, n_vocab]
    assert list(by_name["blk.1.ffn_down.weight"].shape) == [128, 64]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_deterministic_per_seed(tmp_path: pathlib.Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", seed=7).read_bytes()
    b = write_tiny_model(tmp_path / "b.gguf", seed=7).read_bytes()
    c = write_tiny_model(tmp_path / "c.gguf", seed=8).read_bytes()
    assert a == b
    assert a != c
    # Overwriting an existing file works (os.replace).
    write_tiny_model(tmp_path / "a.gguf", seed=8)
    assert (tmp_path / "a.gguf").read_bytes() == c


def _find_llama_server() -> str | None:
    env = os.environ.get("SIESTA_TEST_LLAMA_SERVER")
    if env:
        return env
    cached = pathlib.Path.home() / ".cache/siesta/engine/llama-cpp-python-0.3.36/llama-server"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("llama-server")


# Resolved at import (collection) time: the autouse fixture in conftest.py points
# HOME at a temporary folder while a test runs.
LLAMA_SERVER = _find_llama_server()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.llama
def test_real_llama_server_loads_and_generates(tmp_path: pathlib.Path) -> None:
    binary = LLAMA_SERVER
    if not binary:
        pytest.skip("no llama-server binary (set SIESTA_TEST_LLAMA_SERVER)")
    model = write_tiny_model(tmp_path / "tiny.gguf")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "llama-server.log"

    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", "1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = t0 + 30.0
            healthy = False
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                        if resp.status == 200:
                            healthy = True
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                time.sleep(0.05)
            t_health = time.monotonic() - t0
            if not healthy:
                log.flush()
                pytest.fail(
                    f"llama-server not healthy after {t_health:.1f}s (exit code {proc.poll()}):\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )

            body = json.dumps(
                {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
            ).encode()
            req = urllib.request.Request(
                base + "/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            t1 = time.monotonic()
            with urllib.request.urlopen(req, timeout=30) as resp:
                status = resp.status
                data = json.loads(resp.read())
            t_completion = time.monotonic() - t1
            assert status == 200
            content = data["choices"][0]["message"]["content"]
            assert isinstance(content, str)
            print(
                f"\nllama-server: /health 200 after {t_health:.3f}s; "
                f"8-token completion in {t_completion:.3f}s; content={content!r}"
            )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
