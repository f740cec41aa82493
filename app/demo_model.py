"""A tiny but real GGUF model, written on demand.

`write_tiny_model` produces a llama-architecture GGUF file (about 0.5 MB, all
F32, random weights) that the real llama.cpp ``llama-server`` loads and
generates text from. The text is gibberish; the point is a model that needs no
download, so the tests and the ``siesta demo`` command can exercise the whole
path (spawn a server, wait for /health, proxy a chat completion, unload)
against a real engine in a second or two.

The vocabulary is SentencePiece-style (``tokenizer.ggml.model = "llama"``):
``<unk>``, ``<s>``, ``</s>``, the 256 byte-fallback tokens, then word pieces
with a leading U+2581. Each word's prefixes are in the vocabulary too, so
llama.cpp's merge-based tokenizer can build common English words instead of
always falling back to bytes.

The output is deterministic for a given seed.
"""

from __future__ import annotations

import os
import pathlib
import secrets

import numpy as np

__all__ = ["write_tiny_model", "ARCH", "N_EMBD", "N_LAYER", "N_HEAD", "N_FF", "N_CTX", "vocab"]

ARCH = "llama"
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX = 512
RMS_EPS = 1e-5
ROPE_DIM = N_EMBD // N_HEAD  # 16

BOS_ID = 1
EOS_ID = 2
UNK_ID = 0

# Token types as in gguf.TokenType (kept as ints so this module's constants
# don't depend on the gguf import).
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

_SPACE = "\u2581"

_WORDS = """
the of and to a in is it you that he was for on are with as i his they be at
one have this from or had by hot word but what some we can out other were all
there when up use your how said an each she which do their time if will way
about many then them write would like so these her long make thing see him
two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find any new work part
take get place made live where after back hello world siesta llama model
server sleep
""".split()


def vocab() -> tuple[list[str], list[float], list[int]]:
    """The token list, scores and token types, in id order."""
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    scores: list[float] = [0.0, 0.0, 0.0]
    types: list[int] = [_UNKNOWN, _CONTROL, _CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(_BYTE)

    # Word pieces: the bare marker, single letters, then each word (with the
    # leading marker) together with all of its prefixes, so the SPM merge
    # tokenizer can reach the whole word by pairwise merges. Unique, in
    # first-seen order.
    pieces: list[str] = [_SPACE]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [_SPACE + chr(c) for c in range(ord("a"), ord("z") + 1)]
    for word in _WORDS:
        piece = _SPACE + word
        pieces += [piece[:k] for k in range(2, len(piece) + 1)]
    # Punctuation; anything else (newline, digits, non-ASCII) falls back to
    # the byte tokens, as in Llama's own vocabulary.
    pieces += [".", ",", "!", "?", ":", "'"]

    seen = set(tokens)
    unique: list[str] = []
    for p in pieces:
        if p not in seen:
            seen.add(p)
            unique.append(p)

    # SPM scores: higher wins a merge. Longer pieces score higher so whole
    # words beat fragments; ties broken by order.
    for i, p in enumerate(unique):
        tokens.append(p)
        scores.append(float(len(p)) - i * 1e-4 - 100.0)
        types.append(_NORMAL)
    return tokens, scores, types


def _tensors(n_vocab: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(name, array) pairs; numpy shapes are ggml's ne reversed."""

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones((n,), dtype=np.float32)

    head_dim = N_EMBD // N_HEAD
    n_embd_kv = head_dim * N_HEAD_KV
    out: list[tuple[str, np.ndarray]] = [
        ("token_embd.weight", w(n_vocab, N_EMBD)),
        ("output_norm.weight", ones(N_EMBD)),
        ("output.weight", w(n_vocab, N_EMBD)),
    ]
    for i in range(N_LAYER):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", ones(N_EMBD)),
            (b + "attn_q.weight", w(N_EMBD, N_EMBD)),
            (b + "attn_k.weight", w(n_embd_kv, N_EMBD)),
            (b + "attn_v.weight", w(n_embd_kv, N_EMBD)),
            (b + "attn_output.weight", w(N_EMBD, N_EMBD)),
            (b + "ffn_norm.weight", ones(N_EMBD)),
            (b + "ffn_gate.weight", w(N_FF, N_EMBD)),
            (b + "ffn_up.weight", w(N_FF, N_EMBD)),
            (b + "ffn_down.weight", w(N_EMBD, N_FF)),
        ]
    return out


def _write(path: pathlib.Path, seed: int) -> None:
    import gguf  # imported lazily: only the demo and the tests need it

    tokens, scores, types = vocab()
    rng = np.random.default_rng(seed)

    writer = gguf.GGUFWriter(str(path), ARCH)
    try:
        writer.add_name("siesta-tiny-demo")
        writer.add_file_type(0)  # ALL_F32
        writer.add_context_length(N_CTX)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        writer.add_rope_dimension_count(ROPE_DIM)
        writer.add_vocab_size(len(tokens))

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_unk_token_id(UNK_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)

        for name, arr in _tensors(len(tokens), rng):
            writer.add_tensor(name, arr)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def write_tiny_model(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Writes the tiny llama-architecture GGUF to `path` (atomically: temp file in the same dir, then os.replace) and returns path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: that makes the file 0600. O_EXCL with 0o666 gets
    # the usual umask-derived mode without touching the process-wide umask.
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        _write(tmp, seed)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
