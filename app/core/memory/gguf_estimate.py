"""How much memory a llama.cpp model will take before it is loaded, and what llama-server
said it took after. Plain functions for a worker thread: no Qt, no asyncio.

`estimate_llamacpp(model, args, gpu_free)` reads the GGUF header and tensor infos through a
read-only map (only the header's pages are touched, never the weights) and adds up per
device ("ram", "gpu0", ...):

* **weights**: each tensor's bytes (elements / block x block bytes of its ggml type) per
  layer (``blk.N.*``), input embeddings (``token_embd`` etc., always RAM) and output layer
  (all other tensors; a GPU holding a tied output gets its own ``token_embd``); all split files.
* **KV cache** per layer: cells x n_head_kv x (key_length x bytes(ctk) + value_length x
  bytes(ctv)), f16 = 2 B, q8_0 = 34/32, q4_0 = 18/32, ... cells = n_ctx (ctx-size, else the
  model's ``context_length``, rounded up to 256; ``-np N``: one cache per slot of n_ctx/N
  cells, and an unset ctx-size becomes N x context_length as fitting does). A sliding-window
  layer holds min(cells per cache, window x slots sharing it + ubatch), rounded up to 256,
  unless ``--swa-full``. From ``head_count_kv`` (number or per layer), ``key_length``/
  ``value_length`` (and ``_swa``), ``sliding_window`` + ``sliding_window_pattern`` or the
  architecture's pattern; no V for MLA, none for ``shared_kv_layers``; without flash
  attention V rows are as wide as the widest layer's.
* **compute allowance** on each device holding layers (and gpu0): ubatch x 4 B x (4 x n_ff
  + n_embd) + ubatch x 2 B x the cells of each KV cache (f16 masks: full and sliding), +
  ubatch x n_head x 4 B x the largest cache's cells without flash attention; within 5 % of this llama-server's ``compute buffer size`` for n_embd 512-4096,
  n_ff 1024-14336, ctx 512-32768. RAM also holds the output buffer (slots x n_vocab x 4 B)
  and a 16 MiB floor (llama-server on a 0.5 MB model is 16.8 MiB resident).

**Placement** as llama-server does it: the last ``-ngl`` of the n_layer + 1 layers (output
last) go to the GPUs in runs split by free memory, the rest to RAM; ``all`` (or ``auto`` with
``--fit off``) offloads all; ``auto`` with fit on (the default) as many as fit in each GPU's
free memory minus ``--fit-target`` (1024 MiB), after lowering an unset context towards
``--fit-ctx`` (4096). ``-nkvo``: KV in RAM. No GPU given: all RAM. Not modelled: host-memory
fitting, ``-ts``/``-sm``/``-ot``, SSM state, the projector's compute buffer.

`parse_buffer_sizes(lines)` reads llama-server's ``... buffer size = N MiB`` lines (printed
at ``-lv 4``) into bytes per device, keeping only the last set printed.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import re
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.models.llama_args import LlamaArgs

__all__ = ["MemoryEstimate", "GgufInfo", "read_gguf", "estimate_llamacpp", "parse_buffer_sizes"]

MiB = 1 << 20
PROCESS_FLOOR = 16 * MiB
_CACHE_TYPES = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18),
                "q4_1": (32, 20), "iq4_nl": (32, 18), "q5_0": (32, 22), "q5_1": (32, 24)}
# The SWA period llama.cpp gives an architecture whose file names none ("+": dense layer first).
_SWA_PATTERNS = dict(p.split(":") for p in (
    "gemma2:2 gemma3:6 gemma3n:5 cohere2:4 cohere2moe:4+ exaone4:4 exaone-moe:4 gpt-oss:2 llama4:4 "
    "olmo2:4 afmoe:4 smallthinker:4+ plamo3:8 mellum:4 laguna:4+ muse-glimmer:4").split())
_NO_KV_ARCHS = set("bert modern-bert nomic-bert nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 eurobert "
                   "gemma-embedding wavtokenizer-dec dream llada llada-moe rnd1".split())  # no KV cache
_INPUT = ("token_embd.", "token_types.", "position_embd.", "token_embd_norm.")


@dataclass(frozen=True)
class MemoryEstimate:
    total: int
    by_device: dict[str, int]  # "ram", "gpu0", ...
    source: str  # "gguf" | "measured" | "recipe"


@dataclass(frozen=True)
class GgufInfo:
    """What the estimate needs from a GGUF file: its metadata (scalars and numeric arrays;
    string arrays and tokenizer arrays only as their length) and its weights by layer."""

    meta: dict[str, Any]
    layer_bytes: tuple[int, ...]  # blk.N.* per layer
    input_bytes: int  # token_embd and friends: always in RAM
    output_bytes: int  # output, output_norm and other model-level tensors
    token_embd_bytes: int
    tied_output: bool  # no output.weight: the output layer reads token_embd
    parameters: int = 0  # elements of every tensor: the model's parameter count
    unkept_arrays: frozenset[str] = frozenset()  # array keys whose meta value is only their length

    @property
    def weights(self) -> int:
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes

    def key(self, name: str, default: Any = None) -> Any:
        return self.meta.get(f"{self.meta.get('general.architecture', '')}.{name}", default)


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _Walker:
    """Reads GGUF values from a buffer, skipping what is not kept."""

    def __init__(self, buf: Any, order: str) -> None:
        self.buf, self.order, self.pos = buf, order, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        self.pos += struct.calcsize(self.order + fmt)
        return struct.unpack_from(self.order + fmt, self.buf, self.pos - struct.calcsize(self.order + fmt))

    def skip(self, n: int) -> int:
        self.pos += n
        if self.pos > len(self.buf):
            raise ValueError("truncated GGUF header")
        return self.pos - n

    def string(self) -> str:
        start = self.skip(self.take("Q")[0])
        return bytes(self.buf[start:self.pos]).decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])[0]
        if vtype == 8:
            return self.string()
        if vtype != 9:
            raise ValueError(f"unknown GGUF value type {vtype}")
        etype, count = self.take("I")[0], self.take("Q")[0]
        if etype in _SCALARS and keep and count <= 65536:
            return list(self.take(f"{count}{_SCALARS[etype]}"))
        if etype in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[etype]))
        elif etype == 8:  # strings (a vocabulary, merges): only their lengths are read
            unpack, buf, pos, fmt = struct.unpack_from, self.buf, self.pos, self.order + "Q"
            for _ in range(count):
                pos += 8 + unpack(fmt, buf, pos)[0]
            self.pos = pos
            self.skip(0)
        else:
            for _ in range(count):
                self.value(etype, False)
        return count  # an array not kept: its length


def _read_one(path: Path) -> tuple[dict[str, Any], list[tuple[str, int]], int, frozenset[str]]:
    """(metadata, [(tensor name, bytes)], elements of all tensors, the array keys kept only as
    their length) of one GGUF file; touches only the header pages."""
    from gguf.constants import GGML_QUANT_SIZES  # lazily: numpy comes with it

    try:
        meta, infos, file_end, unkept = _walk(path)
    except struct.error as exc:  # ran past the end of the file
        raise ValueError(f"{path}: truncated GGUF header ({exc})") from None
    offsets = sorted(o for *_, o in infos)
    ends = dict(zip(offsets, offsets[1:] + [file_end]))
    sizes = {int(t): bs for t, bs in GGML_QUANT_SIZES.items()}
    # a type newer than the gguf package: the room the tensor takes in the file
    return meta, [(name, -(-math.prod(dims) // sizes[t][0]) * sizes[t][1] if t in sizes else ends[o] - o)
                  for name, dims, t, o in infos], sum(math.prod(dims) for _, dims, _, _ in infos), unkept


def _walk(path: Path) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int, int]], int, frozenset[str]]:
    """Metadata, tensor infos (name, dims, type, offset), the data section's length, and the
    array keys whose metadata value is only their length."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        order = "<" if struct.unpack_from("<I", buf, 4)[0] < 65536 else ">"
        w = _Walker(buf, order)
        w.skip(4)
        version, n_tensors, n_kv = w.take("IQQ")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        meta: dict[str, Any] = {}
        unkept = set()
        for _ in range(n_kv):
            key = w.string()
            vtype = w.take("I")[0]
            meta[key] = w.value(vtype, keep=not key.startswith("tokenizer."))
            if vtype == 9 and not isinstance(meta[key], list):
                unkept.add(key)
        infos = []
        for _ in range(n_tensors):
            name = w.string()
            infos.append((name, w.take(f"{w.take('I')[0]}Q"), *w.take("IQ")))
        align = int(meta.get("general.alignment", 32))
        return meta, infos, len(buf) - -(-w.pos // align) * align, frozenset(unkept)


_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_cache: dict[tuple[str, int, int], GgufInfo] = {}
_cache_lock = threading.Lock()


def read_gguf(path: Path) -> GgufInfo:
    """The header of ``path`` (and of its other split files), cached by (path, size,
    mtime_ns). Raises OSError or ValueError when it cannot be read."""
    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    meta, tensors, parameters, unkept = _read_one(path)
    shard = _SHARD.match(path.name)
    if shard and int(meta.get("split.count", 1)) > 1:
        for i in range(2, int(shard["total"]) + 1):
            _, more, more_parameters, _ = _read_one(path.with_name(f"{shard['prefix']}-{i:05d}-of-{shard['total']}.gguf"))
            tensors += more
            parameters += more_parameters
    layers: dict[int, int] = {}
    for name, size in tensors:
        if name.startswith("blk.") and name.split(".")[1].isdigit():
            layers[int(name.split(".")[1])] = layers.get(int(name.split(".")[1]), 0) + size
    n_layers = max([*layers, int(meta.get(f"{meta.get('general.architecture')}.block_count", 0)) - 1]) + 1
    input_bytes = sum(size for name, size in tensors if name.startswith(_INPUT))
    info = GgufInfo(meta, tuple(layers.get(i, 0) for i in range(n_layers)), input_bytes,
                    sum(size for _, size in tensors) - sum(layers.values()) - input_bytes,
                    sum(size for name, size in tensors if name.startswith("token_embd.")),
                    not any(name == "output.weight" for name, _ in tensors), parameters, unkept)
    with _cache_lock:
        if len(_cache) >= 64:  # forget the oldest
            _cache.pop(next(iter(_cache)))
        _cache[key] = info
    return info


def _per_layer(value: Any, n: int, default: int) -> list[int]:
    values = value if isinstance(value, list) else [default if value is None else value] * n
    return [int(v) for v in values[:n]] + [default] * (n - len(values))


def _pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


def _row_bytes(elements: int, cache_type: str) -> int:
    block, size = _CACHE_TYPES.get(cache_type.lower(), (1, 2))
    return _pad(elements, block) // block * size


def _window(info: GgufInfo) -> int:
    """The sliding window; llama4 has a chunked one of 8192 when the file names none."""
    llama4 = info.meta.get("general.architecture") == "llama4"
    return int(info.key("attention.sliding_window", 8192 if llama4 else 0) or 0)


def _swa_layers(info: GgufInfo, n_layers: int) -> list[bool]:
    pattern = info.key("attention.sliding_window_pattern")
    if isinstance(pattern, list) and _window(info):
        return [bool(v) for v in pattern[:n_layers]] + [False] * (n_layers - len(pattern))
    default = _SWA_PATTERNS.get(info.meta.get("general.architecture", ""))
    if not _window(info) or (pattern is None and default is None):
        return [False] * n_layers  # no window, or none llama.cpp reads for this architecture
    period = int(pattern) if pattern is not None else int(default.rstrip("+"))
    if default and default.endswith("+"):  # dense first
        return [period == 0 or il % period != 0 for il in range(n_layers)]
    return [period == 0 or il % period < period - 1 for il in range(n_layers)]


def _kv_per_layer(info: GgufInfo, a: LlamaArgs, n_ctx: int, n_seq: int, unified: bool, ubatch: int,
                  flash: bool) -> tuple[list[int], set[int]]:
    """Bytes of KV cache per repeating layer, and the cells (per slot) of each distinct cache."""
    n = len(info.layer_bytes)
    if info.meta.get("general.architecture") in _NO_KV_ARCHS:
        return [0] * n, set()
    n_embd = int(info.key("embedding_length", 0))
    heads = _per_layer(info.key("attention.head_count"), n, 0)
    head0 = next((h for h in heads if h), 1)
    kv_heads = heads if info.key("attention.head_count_kv") is None else _per_layer(
        info.key("attention.head_count_kv"), n, 0)
    k_len = int(info.key("attention.key_length", n_embd // head0))
    v_len = int(info.key("attention.value_length", n_embd // head0))
    k_swa = int(info.key("attention.key_length_swa", k_len))
    v_swa = int(info.key("attention.value_length_swa", v_len))
    mla = info.key("attention.key_length_mla") is not None
    with_kv = n - int(info.key("attention.shared_kv_layers", 0))
    swa, streams = _swa_layers(info, n), 1 if unified else n_seq
    swa_cells = n_ctx if a.get("swa_full") else streams * _pad(
        min(n_ctx // streams, _window(info) * (n_seq if unified else 1) + ubatch))
    k_rows = [kv_heads[i] * (k_swa if swa[i] else k_len) for i in range(n)]
    v_rows = [0 if mla else kv_heads[i] * (v_swa if swa[i] else v_len) for i in range(n)]
    if not flash and not mla and with_kv > 0:
        v_rows = [max(v_rows[:with_kv])] * n  # transposed V: every layer as wide as the widest
    cells = [0 if i >= with_kv else swa_cells if swa[i] else n_ctx for i in range(n)]
    return [cells[i] * (_row_bytes(k_rows[i], a.get("cache_type_k")) + _row_bytes(v_rows[i], a.get("cache_type_v")))
            for i in range(n)], {c // streams for c in cells if c}


def _compute(info: GgufInfo, caches: set[int], ubatch: int, flash: bool) -> int:
    """The compute allowance; ``caches``: the cells of each distinct KV cache (per slot)."""
    n_embd = int(info.key("embedding_length", 0))
    n_ff = max(_per_layer(info.key("feed_forward_length"), len(info.layer_bytes), 0) or [0])
    n_ff = max(n_ff, int(info.key("expert_feed_forward_length", 0)) * int(info.key("expert_used_count", 0)))
    heads = max(_per_layer(info.key("attention.head_count"), len(info.layer_bytes), 1) or [1])
    return ubatch * 4 * (4 * n_ff + n_embd) + ubatch * (2 * sum(caches) + (0 if flash else 4 * heads * max(caches)))


def _split(n_off: int, devices: list[str], weights: list[float]) -> list[str]:
    """Device of each of the ``n_off`` offloaded layers, in llama.cpp's way: contiguous runs
    in proportion to ``weights`` (equal when none is positive)."""
    weights = weights if any(w > 0 for w in weights) else [1.0] * len(devices)
    cumulative = [sum(weights[: k + 1]) / sum(weights) for k in range(len(devices))]
    return [devices[next((k for k, c in enumerate(cumulative) if c > j / n_off), len(devices) - 1)]
            for j in range(n_off)]


def estimate_llamacpp(model: Path, args: Sequence[str], gpu_free: Mapping[str, int | None] = {}) -> MemoryEstimate | None:
    """What loading ``model`` with ``args`` will take per device ("ram", "gpu0", ...), from
    the GGUF header; ``gpu_free`` maps "gpuN" to its free bytes (None: unknown, taken as
    room enough). None when the file cannot be read or the arguments are invalid."""
    try:
        a = LlamaArgs.parse(args)
        info = read_gguf(Path(model))
    except (OSError, ValueError):
        return None
    n_layer, ngl, fit = len(info.layer_bytes), a.get("n_gpu_layers"), a.get("fit") != "off"
    gpus = sorted((d for d in gpu_free if re.fullmatch(r"gpu\d+", d)), key=lambda d: int(d[3:]))
    targets = list(a.get("fit_target"))
    budget = {d: None if gpu_free[d] is None else gpu_free[d] - MiB * targets[min(k, len(targets) - 1)]
              for k, d in enumerate(gpus)}
    weights = [float(max(budget[d] if fit else gpu_free[d], 0)) if gpu_free[d] is not None else 0.0
               for d in gpus]
    n_seq, unified = (4, True) if a.get("parallel") < 0 else (max(a.get("parallel"), 1), bool(a.kv_unified))
    ctx_auto = a.get("ctx_size") <= 0
    n_ctx_train = int(info.key("context_length", 0)) or 4096
    n_ctx_max = n_ctx_train * (n_seq if fit and not unified else 1) if ctx_auto else a.get("ctx_size")
    ubatch = min(a.get("ubatch_size"), a.get("batch_size"))
    flash = a.get("flash_attn") != "off"
    n_embd = int(info.key("embedding_length", 0))
    tokens = info.meta.get("tokenizer.ggml.tokens")
    n_vocab = int(info.key("vocab_size", tokens if isinstance(tokens, int) else 0))

    def place(n_ctx: int, n_off: int) -> dict[str, int]:
        n_ctx = _pad(_pad(n_ctx) // n_seq) * n_seq if not unified else _pad(n_ctx)
        kv, caches = _kv_per_layer(info, a, n_ctx, n_seq, unified, ubatch, flash)
        used = {"ram": info.input_bytes + PROCESS_FLOOR + n_seq * n_vocab * 4}  # + the output buffer
        devices = ["ram"] * (n_layer + 1 - n_off) + _split(n_off, gpus, weights)
        for il in range(n_layer):
            used[devices[il]] = used.get(devices[il], 0) + info.layer_bytes[il]
            kv_dev = "ram" if a.get("no_kv_offload") else devices[il]
            used[kv_dev] = used.get(kv_dev, 0) + kv[il]
        out = devices[n_layer]
        used[out] = used.get(out, 0) + info.output_bytes + (info.token_embd_bytes if info.tied_output and out != "ram" else 0)
        compute = _compute(info, caches or {ubatch}, ubatch, flash)
        for dev in set(devices) | set(gpus[:1]):
            used[dev] = used.get(dev, 0) + compute
        if "ram" not in devices:  # all offloaded: the host still stages inputs and outputs
            used["ram"] += ubatch * n_embd * 4 * 2
        return used

    def fits(n_ctx: int, n_off: int) -> bool:
        used = place(n_ctx, n_off)
        return all(budget[d] is None or used.get(d, 0) <= budget[d] for d in gpus)

    n_off = 0 if not gpus else n_layer + 1 if ngl in ("all", "auto") else max(0, min(int(ngl), n_layer + 1))
    n_ctx = n_ctx_max
    if gpus and fit and not fits(n_ctx, n_off):
        n_ctx_min = min(a.get("fit_ctx") * (1 if unified else n_seq), n_ctx_max)
        if ctx_auto and n_ctx_max > n_ctx_min:  # lower an unset context first, in steps of 256
            lo, hi = n_ctx_min // 256, n_ctx_max // 256
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid * 256, n_off) else (lo, mid - 1)
            n_ctx = max(lo * 256, n_ctx_min)
        while ngl == "auto" and n_off > 0 and not fits(n_ctx, n_off):  # then offload fewer layers
            n_off -= 1
    used = place(n_ctx, n_off)
    if a.mmproj:  # the projector's weights, on the first GPU unless told otherwise
        dev = gpus[0] if gpus and "--no-mmproj-offload" not in a.extra else "ram"
        with contextlib.suppress(OSError, ValueError):
            used[dev] = used.get(dev, 0) + read_gguf(Path(a.mmproj)).weights
    by_device = {d: v for d, v in used.items() if d == "ram" or v}
    return MemoryEstimate(sum(by_device.values()), by_device, "gguf")


_LISTENING = re.compile(r"\blistening on https?://")
_BUFFER = re.compile(r"(?P<dev>[A-Za-z][\w\[\]:.-]*)\s+(?P<kind>model|KV|compute|output|RS)\s+buffer size\s*=\s*"
                     r"(?P<mib>\d+(?:\.\d+)?)\s*MiB")
_GPU = re.compile(r"^[A-Za-z]+?(\d+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _device_key(name: str) -> str:
    """CPU, CPU_Mapped, CPU_REPACK, CUDA_Host, Metal (unified memory) ... -> "ram";
    CUDA0, ROCm1, Vulkan0, SYCL0 ... -> "gpu0", "gpu1", ..."""
    match = _GPU.match(name)
    return "ram" if match is None or name.upper().startswith(("CPU", "METAL", "MTL")) else f"gpu{int(match[1])}"


def load_printed(lines: Iterable[str]) -> bool:
    """Whether llama-server's output has come as far as ``... listening on http://...``,
    which it prints once loaded (at its default verbosity too): every buffer size line it
    printed while loading is then in ``lines``."""
    return any(_LISTENING.search(line) for line in lines)


def parse_buffer_sizes(lines: Iterable[str]) -> dict[str, int] | None:
    """Bytes per device ("ram", "gpu0", ...) from llama-server's ``... model/KV/compute/
    output buffer size = N MiB`` lines, summing the last set printed (fitting probes print
    earlier ones: a ``model buffer size`` line after KV/compute/output lines starts a new
    set). None when there are no such lines (llama-server prints them at ``-lv 4``)."""
    current: dict[str, int] = {}
    seen_other = found = False
    for line in lines:
        match = _BUFFER.search(_ANSI.sub("", line))
        if match is None:
            continue
        found = True
        if match["kind"] == "model" and seen_other:
            current, seen_other = {}, False
        elif match["kind"] != "model":
            seen_other = True
        dev = _device_key(match["dev"])
        current[dev] = current.get(dev, 0) + round(float(match["mib"]) * MiB)
    return current if found else None
