"""Synthetic GGUF models of any shape, for the memory-estimate tests.

`write_synthetic_model` writes a ``llama`` GGUF (or ``deci``: the same tensors, with KV
heads per layer; or ``gemma3``: sliding-window layers) with the tokenizer of the tiny demo
model (``app.demo_model.vocab``), so the real llama-server loads it and answers a completion. Weights are a repeated block of small random numbers: fast to write,
and every page of the file is real data (the server maps and reads all of it).

``sparse=True`` writes only the header and tensor infos and extends the file to its full
size without writing the weights (a sparse file), so a "big" model costs nothing: the
header-only reader must not notice the difference.

Arrays are ggml-shaped in the writer's numpy order (``(rows, cols)`` = ggml ``{cols, rows}``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_synthetic_model", "tensor_shapes"]

_BLOCK = np.random.default_rng(0).standard_normal(1 << 20, dtype=np.float32) * np.float32(0.02)


def _per_layer(value: int | Sequence[int], n_layers: int) -> list[int]:
    return [int(value)] * n_layers if isinstance(value, int) else [int(v) for v in value]


def tensor_shapes(*, arch: str, n_embd: int, n_layers: int, n_ff: int, n_head: int,
                  n_head_kv: int | Sequence[int], head_dim: int, n_vocab: int,
                  tied_output: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) of every tensor, in file order."""
    kv = _per_layer(n_head_kv, n_layers)
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, n_embd)),
                                              ("output_norm.weight", (n_embd,))]
    if not tied_output:
        out.append(("output.weight", (n_vocab, n_embd)))
    for i in range(n_layers):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (n_embd,)),
                (b + "attn_q.weight", (n_head * head_dim, n_embd)),
                (b + "attn_k.weight", (kv[i] * head_dim, n_embd)),
                (b + "attn_v.weight", (kv[i] * head_dim, n_embd)),
                (b + "attn_output.weight", (n_embd, n_head * head_dim)),
                (b + "ffn_norm.weight", (n_embd,)),
                (b + "ffn_gate.weight", (n_ff, n_embd)),
                (b + "ffn_up.weight", (n_ff, n_embd)),
                (b + "ffn_down.weight", (n_embd, n_ff))]
        if arch == "gemma3":
            out += [(b + "attn_q_norm.weight", (head_dim,)), (b + "attn_k_norm.weight", (head_dim,)),
                    (b + "post_attention_norm.weight", (n_embd,)), (b + "post_ffw_norm.weight", (n_embd,))]
    return out


def write_synthetic_model(path: Path, *, n_embd: int, n_layers: int, n_ff: int, n_head: int = 8,
                          n_head_kv: int | Sequence[int] | None = None, head_dim: int | None = None,
                          n_vocab: int | None = None, context_length: int = 4096, arch: str = "llama",
                          dtype: str = "f32", sliding_window: int | None = None,
                          swa_pattern: int | Sequence[bool] | None = None, key_length: int | None = None,
                          value_length: int | None = None, extra_kv: dict[str, int] | None = None,
                          sparse: bool = False) -> Path:
    """Writes the model to ``path`` and returns it.

    ``n_head_kv`` may be a list (one per layer: ``attention.head_count_kv`` as an array).
    ``head_dim`` defaults to ``n_embd // n_head``; ``key_length``/``value_length`` write those
    keys (they do not change the tensors: for header-only tests). ``dtype`` is ``f32`` or
    ``f16`` (2-D weights; norms stay f32). ``n_vocab`` pads the demo vocabulary with extra tokens.
    ``sliding_window`` / ``swa_pattern`` write ``attention.sliding_window`` and
    ``attention.sliding_window_pattern`` (an int period or a per-layer bool list).
    """
    import gguf

    from app.demo_model import CHAT_TEMPLATE, vocab

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head_dim = head_dim or n_embd // n_head
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    tokens, scores, types = vocab()
    if n_vocab is not None and n_vocab > len(tokens):
        extra = n_vocab - len(tokens)
        tokens += [f"<extra_{i}>" for i in range(extra)]
        scores += [-1000.0] * extra
        types += [1] * extra
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"synthetic-{arch}-{n_embd}x{n_layers}")
    w.add_file_type(1 if dtype == "f16" else 0)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    if isinstance(n_head_kv, int):
        w.add_head_count_kv(n_head_kv)
    else:
        w.add_array(f"{arch}.attention.head_count_kv", [int(v) for v in n_head_kv])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    if key_length is not None:
        w.add_key_length(key_length)
    if value_length is not None:
        w.add_value_length(value_length)
    if head_dim != n_embd // n_head and key_length is None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if sliding_window is not None:
        w.add_sliding_window(sliding_window)
    if isinstance(swa_pattern, int):
        w.add_uint32(f"{arch}.attention.sliding_window_pattern", swa_pattern)
    elif swa_pattern is not None:
        w.add_array(f"{arch}.attention.sliding_window_pattern", [bool(v) for v in swa_pattern])
    for key, value in (extra_kv or {}).items():
        w.add_uint32(key, value)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    shapes = tensor_shapes(arch=arch, n_embd=n_embd, n_layers=n_layers, n_ff=n_ff, n_head=n_head,
                           n_head_kv=n_head_kv, head_dim=head_dim, n_vocab=n_vocab)

    def np_type(shape: tuple[int, ...]) -> type:
        return np.float16 if dtype == "f16" and len(shape) > 1 else np.float32

    for name, shape in shapes:
        t = np_type(shape)
        w.add_tensor_info(name, shape, np.dtype(t), int(np.prod(shape)) * np.dtype(t).itemsize)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        if sparse:
            fout = w.fout[0]
            end = -(-fout.tell() // w.data_alignment) * w.data_alignment
            for _name, shape in shapes:
                end += -(-int(np.prod(shape)) * np.dtype(np_type(shape)).itemsize // w.data_alignment) * w.data_alignment
            fout.flush()
            os.ftruncate(fout.fileno(), end)
        else:
            for name, shape in shapes:
                count = int(np.prod(shape))
                data = (np.ones(count, np.float32) if name.endswith("norm.weight")
                        else np.resize(_BLOCK, count))
                w.write_tensor_data(data.astype(np_type(shape)).reshape(shape))
    finally:
        w.close()
    return path
