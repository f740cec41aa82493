"""A synthetic llama-architecture GGUF of a few hundred MB, for the reload-after-idle figures.

``app.demo_model`` writes a 0.5 MB model: it loads in a few milliseconds, so it says
nothing about what unloading an idle model costs when it is wanted again. This one has
the same vocabulary and chat template but wide layers (``N_EMBD`` x ``N_FF``, F32, random
weights), so llama-server really maps, pages in and warms up about 300 MB before it
answers, while one token still takes only tens of milliseconds on one CPU thread.

The file is written once into ``~/.cache/siesta-bench/`` (never into the repository) and
reused while its name (which carries the shape) matches.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

from app import demo_model

N_EMBD = 1024
N_HEAD = 16
N_FF = 2816
N_LAYER = 6
N_CTX = 2048
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "siesta-bench"

# llama-server flags for it: one compute thread as in the rest of the suite, one slot and a
# small context, so the KV cache (F16, 2 x 6 layers x 1024 x 1024) stays at 24 MB.
ARGS = ["-t", "1", "--ctx-size", "1024", "-np", "1"]


def size_bytes() -> int:
    """The weights' size (F32): what a load has to page in."""
    n_vocab = len(demo_model.vocab()[0])
    per_layer = 4 * N_EMBD * N_EMBD + 3 * N_EMBD * N_FF + 2 * N_EMBD
    return 4 * (2 * n_vocab * N_EMBD + N_EMBD + N_LAYER * per_layer)


def default_path() -> Path:
    return CACHE_DIR / f"reload-llama-{N_EMBD}x{N_FF}x{N_LAYER}-f32.gguf"


def ensure_model(path: Path | None = None) -> Path:
    """The synthetic model at ``path`` (default: in ``~/.cache/siesta-bench``), written if missing."""
    path = Path(path or default_path())
    if path.is_file() and path.stat().st_size >= size_bytes():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write(path: Path, seed: int = 0) -> None:
    import gguf

    tokens, scores, types = demo_model.vocab()
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        out = rng.standard_normal(shape, dtype=np.float32)
        out *= np.float32(0.02)
        return out

    def ones(n: int) -> np.ndarray:
        return np.ones((n,), dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), demo_model.ARCH)
    try:
        writer.add_name("siesta-bench-reload")
        writer.add_file_type(0)  # ALL_F32
        writer.add_context_length(N_CTX)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD)
        writer.add_layer_norm_rms_eps(demo_model.RMS_EPS)
        writer.add_rope_dimension_count(N_EMBD // N_HEAD)
        writer.add_vocab_size(len(tokens))
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(demo_model.BOS_ID)
        writer.add_eos_token_id(demo_model.EOS_ID)
        writer.add_unk_token_id(demo_model.UNK_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(demo_model.CHAT_TEMPLATE)
        n_vocab = len(tokens)
        writer.add_tensor("token_embd.weight", w(n_vocab, N_EMBD))
        writer.add_tensor("output_norm.weight", ones(N_EMBD))
        writer.add_tensor("output.weight", w(n_vocab, N_EMBD))
        for i in range(N_LAYER):
            b = f"blk.{i}."
            writer.add_tensor(b + "attn_norm.weight", ones(N_EMBD))
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                writer.add_tensor(b + name + ".weight", w(N_EMBD, N_EMBD))
            writer.add_tensor(b + "ffn_norm.weight", ones(N_EMBD))
            writer.add_tensor(b + "ffn_gate.weight", w(N_FF, N_EMBD))
            writer.add_tensor(b + "ffn_up.weight", w(N_FF, N_EMBD))
            writer.add_tensor(b + "ffn_down.weight", w(N_EMBD, N_FF))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def evict(path: Path) -> None:
    """Drops ``path`` from the page cache (``POSIX_FADV_DONTNEED``: no privileges needed; pages
    still mapped by a running process stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path: Path) -> float | None:
    """The share of ``path``'s pages in the page cache (``mincore`` on a private mapping), or None."""
    import ctypes
    import mmap

    size = path.stat().st_size
    if size == 0:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)  # writable, so ctypes can address it
        try:
            view = (ctypes.c_char * size).from_buffer(mapped)
            try:
                rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size), vec)
            finally:
                del view
        finally:
            mapped.close()
        return sum(b & 1 for b in vec) / pages if rc == 0 else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
