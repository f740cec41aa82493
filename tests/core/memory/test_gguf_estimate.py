"""The memory estimate before loading (app/core/memory/gguf_estimate.py) and recipe sizes
(app/core/config/sizes.py): header-only GGUF reading, the KV cache formula (context, slots, cache
types, per-layer KV heads, key/value lengths, sliding windows), placement on GPUs, llama-
server's printed buffer sizes, and the real llama-server's resident memory against the
estimate for a synthetic model of about 620 MB at two context sizes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from app.core.config.sizes import SizeError, format_bytes, parse_size
from app.core.memory.gguf_estimate import MemoryEstimate, estimate_llamacpp, parse_buffer_sizes, read_gguf
from tests.conftest import LLAMA_SERVER
from tests.synthetic_gguf import write_synthetic_model

MiB = 1 << 20
DATA = Path(__file__).resolve().parents[2] / "data"
FLOOR = 16 * MiB  # the module's documented process floor


def kv_bytes(model: Path, args: list[str]) -> int:
    """The estimate's KV cache alone, through the public API: ``-nkvo`` moves exactly the KV
    cache from the GPU to RAM when every layer is offloaded."""
    on_gpu = estimate_llamacpp(model, [*args, "-ngl", "all"], {"gpu0": None})
    in_ram = estimate_llamacpp(model, [*args, "-ngl", "all", "-nkvo"], {"gpu0": None})
    assert on_gpu is not None and in_ram is not None and on_gpu.total == in_ram.total
    return in_ram.by_device["ram"] - on_gpu.by_device["ram"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


def small(models: Path, name: str, **shape: object) -> Path:
    """A sparse synthetic model (512 x 4 layers, n_ff 1024 unless told), written once per module."""
    path = models / f"{name}.gguf"
    if not path.exists():
        write_synthetic_model(path, sparse=True, **{"n_embd": 512, "n_layers": 4, "n_ff": 1024, **shape})
    return path


# ---- header-only reading ----------------------------------------------------------------

def test_a_64_gib_model_with_a_150k_vocabulary_reads_fast_without_touching_its_weights(tmp_path: Path) -> None:
    path = write_synthetic_model(tmp_path / "big.gguf", n_embd=8192, n_layers=80, n_ff=28672, n_head=64,
                                 n_head_kv=8, n_vocab=150_000, dtype="f16", sparse=True)
    assert path.stat().st_size > 64 * 2**30
    assert path.stat().st_blocks * 512 < 64 * MiB  # sparse: the weights were never written
    rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    info = read_gguf(path)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, elapsed  # reading 64 GiB (even of holes) would take far longer
    assert psutil.Process().memory_info().rss - rss < 64 * MiB
    assert path.stat().st_blocks * 512 < 64 * MiB
    per_layer = 2 * (8192 * 8192 * 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672) + 2 * 8192 * 4
    assert info.layer_bytes == (per_layer,) * 80
    assert info.input_bytes == info.token_embd_bytes == 150_000 * 8192 * 2
    assert info.output_bytes == 150_000 * 8192 * 2 + 8192 * 4
    assert info.meta["llama.block_count"] == 80 and info.meta["tokenizer.ggml.tokens"] == 150_000
    assert abs(path.stat().st_size - info.weights) < 16 * MiB  # the rest is the header


def test_header_reads_are_cached_by_path_size_and_mtime(models: Path) -> None:
    path = small(models, "cached")
    first = read_gguf(path)
    assert read_gguf(path) is first
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert read_gguf(path) is not first and read_gguf(path) == first


def raw_gguf(path: Path, tensors: dict[str, tuple[int, int]], keys: dict[str, int], **options) -> None:
    """A bare llama GGUF with zero f32 tensors of the given (rows, cols) and uint32 keys."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama", **options)
    for key, value in keys.items():
        writer.add_uint32(f"llama.{key}", value)
    for name, shape in tensors.items():
        writer.add_tensor(name, np.zeros(shape, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_split_files_are_read_in_full(tmp_path: Path) -> None:
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.attn_q.weight", "output.weight"]
    raw_gguf(tmp_path / "m.gguf", {name: (16, 8 * (i + 1)) for i, name in enumerate(names)}, {"block_count": 2},
             split_max_tensors=2)
    first = tmp_path / "m-00001-of-00002.gguf"
    info = read_gguf(first)
    assert info.layer_bytes == (16 * 16 * 4, 16 * 24 * 4)
    assert (info.input_bytes, info.output_bytes) == (16 * 8 * 4, 16 * 32 * 4)


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all", b"GGUF\x03\x00\x00\x00\x01"])
def test_unreadable_files_and_arguments_give_no_estimate(tmp_path: Path, models: Path, content: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    assert estimate_llamacpp(bad, []) is None
    assert estimate_llamacpp(tmp_path / "missing.gguf", []) is None
    assert estimate_llamacpp(small(models, "ok"), ["-c", "lots"]) is None
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(small(models, "ok").read_bytes()[:3000])
    assert estimate_llamacpp(truncated, []) is None


# ---- the KV cache -----------------------------------------------------------------------

def test_kv_cache_grows_with_ctx_size_exactly_by_the_formula(models: Path) -> None:
    # 6 layers, 4 KV heads of 64: per cell and layer 2 (K, V) x 4 x 64 x 2 B (f16)
    path = small(models, "gqa", n_layers=6, n_head=8, n_head_kv=4, context_length=65536)
    per_cell = 6 * 2 * 4 * 64 * 2
    for ctx in (512, 1000, 4096, 32768):
        assert kv_bytes(path, ["-c", str(ctx)]) == -(-ctx // 256) * 256 * per_cell
    small_ctx, big_ctx = estimate_llamacpp(path, ["-c", "2048"]), estimate_llamacpp(path, ["-c", "8192"])
    assert small_ctx is not None and big_ctx is not None
    mask = (8192 - 2048) * 512 * 2  # the compute allowance's f16 attention mask grows too
    assert big_ctx.total - small_ctx.total == (8192 - 2048) * per_cell + mask
    assert kv_bytes(path, []) == 65536 * per_cell  # no ctx-size: the model's context_length


def test_kv_cache_types_and_slots(models: Path) -> None:
    path = small(models, "types", n_head=8, n_head_kv=8, context_length=8192)
    cells, row = 4096, 8 * 64  # 4 layers
    assert kv_bytes(path, ["-c", "4096", "-ctk", "q8_0", "-ctv", "q4_0"]) == 4 * cells * (row * 34 // 32 + row * 18 // 32)
    assert kv_bytes(path, ["-c", "4096", "--cache-type-k=f32"]) == 4 * cells * (row * 4 + row * 2)
    # the default 4 unified slots and -np N per-slot caches hold n_ctx cells in all
    assert kv_bytes(path, ["-c", "4096", "-np", "4"]) == kv_bytes(path, ["-c", "4096"]) == 4 * cells * row * 4
    # ... rounded up per slot: -c 8000 -np 3 -> 3 x 2816 cells
    assert kv_bytes(path, ["-c", "8000", "-np", "3"]) == 4 * 3 * 2816 * row * 4
    # no ctx-size with -np 2: fitting gives every slot the model's context
    assert kv_bytes(path, ["-np", "2"]) == 4 * 2 * 8192 * row * 4


def test_per_layer_kv_heads_and_key_value_lengths(models: Path) -> None:
    path = small(models, "perlayer", arch="deci", n_head=8, n_head_kv=[8, 4, 2, 1], context_length=8192)
    assert kv_bytes(path, ["-c", "4096"]) == 4096 * (8 + 4 + 2 + 1) * 64 * 2 * 2
    # without flash attention V is stored transposed, every layer as wide as the widest
    assert kv_bytes(path, ["-c", "4096", "-fa", "off"]) == 4096 * ((8 + 4 + 2 + 1) * 64 * 2 + 4 * 8 * 64 * 2)
    lengths = small(models, "lengths", n_head=8, n_head_kv=2, key_length=192, value_length=128, context_length=4096)
    assert kv_bytes(lengths, ["-c", "1024"]) == 4 * 1024 * 2 * (192 + 128) * 2
    mla = small(models, "mla", n_head=8, n_head_kv=1, key_length=576, value_length=512,
                extra_kv={"llama.attention.key_length_mla": 192}, context_length=4096)
    assert kv_bytes(mla, ["-c", "1024"]) == 4 * 1024 * 576 * 2  # MLA: no V cache


def test_sliding_window_layers_count_only_their_window(models: Path) -> None:
    shape = dict(arch="gemma3", n_embd=512, n_layers=6, n_ff=1024, n_head=8, n_head_kv=2, head_dim=128,
                 context_length=32768, sliding_window=256)
    row = 2 * 2 * 128 * 2  # K and V, 2 heads of 128, f16
    gemma3 = small(models, "gemma3", **shape)  # gemma3's own pattern: 5 of every 6 layers slide
    # 4 unified slots: min(8192, 256 x 4 + 512) = 1536 cells for each sliding layer
    assert kv_bytes(gemma3, ["-c", "8192"]) == (1 * 8192 + 5 * 1536) * row
    assert kv_bytes(gemma3, ["-c", "8192", "-np", "1"]) == (8192 + 5 * 768) * row
    assert kv_bytes(gemma3, ["-c", "8192", "-np", "2"]) == (8192 + 5 * 2 * 768) * row  # one window per slot
    assert kv_bytes(gemma3, ["-c", "1024"]) == 6 * 1024 * row  # the window holds the whole context
    assert kv_bytes(gemma3, ["-c", "8192", "--swa-full"]) == 6 * 8192 * row
    grows = kv_bytes(gemma3, ["-c", "16384"]) - kv_bytes(gemma3, ["-c", "8192"])
    assert grows == 8192 * row  # only the one full-attention layer grows
    listed = small(models, "gemma3_list", swa_pattern=[True, False, True, False, True, False], **shape)
    assert kv_bytes(listed, ["-c", "8192"]) == (3 * 8192 + 3 * 1536) * row
    period = small(models, "gemma3_period3", swa_pattern=3, **shape)
    assert kv_bytes(period, ["-c", "8192"]) == (2 * 8192 + 4 * 1536) * row
    llama = small(models, "llama_window", **{**shape, "arch": "llama", "n_head_kv": 8, "head_dim": 64})
    assert kv_bytes(llama, ["-c", "8192"]) == 6 * 8192 * 2 * 8 * 64 * 2  # llama.cpp reads no window here


# ---- placement --------------------------------------------------------------------------

def test_no_gpu_puts_everything_in_ram(models: Path) -> None:
    estimate = estimate_llamacpp(small(models, "ram"), ["-c", "2048", "-ngl", "99"])
    assert estimate == MemoryEstimate(estimate.total, {"ram": estimate.total}, "gguf")


def test_ngl_offloads_the_output_layer_and_the_last_layers(models: Path) -> None:
    path = small(models, "ngl", n_layers=8, context_length=4096)
    info = read_gguf(path)
    kv_layer = 1024 * 2 * 512 * 2
    for ngl in (1, 3, 9):
        est = estimate_llamacpp(path, ["-c", "1024", "-ngl", str(ngl)], {"gpu0": 64 * 2**30})
        layers = min(ngl - 1, 8)
        compute = est.by_device["gpu0"] - info.output_bytes - layers * (info.layer_bytes[0] + kv_layer)
        assert 0 < compute < 32 * MiB, (ngl, est)
    none = estimate_llamacpp(path, ["-c", "1024", "-ngl", "0"], {"gpu0": 64 * 2**30})
    assert none.by_device["ram"] > info.weights  # weights and KV stay in RAM; gpu0 gets compute only
    everything = estimate_llamacpp(path, ["-c", "1024", "-ngl", "all"], {"gpu0": 64 * 2**30})
    assert everything.by_device["ram"] < info.input_bytes + FLOOR + 4 * MiB


def test_auto_fits_layers_into_free_memory_minus_the_fit_target(models: Path) -> None:
    path = small(models, "fit", n_layers=12, n_embd=1024, n_ff=4096, context_length=2048)
    plenty = estimate_llamacpp(path, [], {"gpu0": 64 * 2**30})
    assert plenty.by_device["ram"] < read_gguf(path).input_bytes + FLOOR + 8 * MiB  # all offloaded
    for free in (1200 * MiB, 1400 * MiB, 1700 * MiB):
        est = estimate_llamacpp(path, [], {"gpu0": free})
        assert est.by_device.get("gpu0", 0) <= free - 1024 * MiB
        assert plenty.total - 64 * MiB < est.total <= plenty.total + 64 * MiB  # moved, not lost
    tight = estimate_llamacpp(path, [], {"gpu0": 1200 * MiB}).by_device["gpu0"]
    assert tight < estimate_llamacpp(path, [], {"gpu0": 1700 * MiB}).by_device["gpu0"]
    lower_target = estimate_llamacpp(path, ["--fit-target", "256"], {"gpu0": 1200 * MiB}).by_device["gpu0"]
    assert tight < lower_target <= 1200 * MiB - 256 * MiB
    no_fit = estimate_llamacpp(path, ["--fit", "off"], {"gpu0": 1200 * MiB})
    assert no_fit.by_device["gpu0"] == plenty.by_device["gpu0"]  # auto without fit: all layers
    unknown = estimate_llamacpp(path, [], {"gpu0": None})
    assert unknown.by_device == plenty.by_device


def test_an_unset_context_is_lowered_before_layers_are_kept_back(models: Path) -> None:
    path = small(models, "longctx", n_layers=8, context_length=131072)  # KV: 2 GiB at 131072
    full = estimate_llamacpp(path, [], {"gpu0": 64 * 2**30})
    fitted = estimate_llamacpp(path, [], {"gpu0": 2 * 2**30})
    assert fitted.by_device["ram"] == full.by_device["ram"]  # still every layer on the GPU
    assert fitted.by_device["gpu0"] <= 1024 * MiB < full.by_device["gpu0"]
    fixed = estimate_llamacpp(path, ["-c", "131072"], {"gpu0": 2 * 2**30})
    assert fixed.by_device["ram"] > 1024 * MiB  # a context the user set stays; layers move


def test_two_gpus_share_the_layers_and_no_kv_offload_keeps_kv_in_ram(models: Path) -> None:
    path = small(models, "twogpus", n_layers=8, context_length=4096)
    est = estimate_llamacpp(path, ["-c", "4096", "-ngl", "all"], {"gpu1": 6 * 2**30, "gpu0": 2 * 2**30})
    assert est.by_device["gpu1"] > 2 * est.by_device["gpu0"] > 0  # in proportion to free memory
    nkvo = estimate_llamacpp(path, ["-c", "4096", "-ngl", "all", "-nkvo"], {"gpu0": 2 * 2**30, "gpu1": 6 * 2**30})
    assert nkvo.by_device["ram"] - est.by_device["ram"] == 8 * 4096 * 2 * 512 * 2
    assert nkvo.total == est.total


def test_a_tied_output_layer_on_the_gpu_gets_its_own_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "tied.gguf"  # no output.weight: the output layer reads token_embd
    raw_gguf(path, {"token_embd.weight": (1000, 64), "blk.0.attn_q.weight": (64, 64)},
             {"block_count": 1, "embedding_length": 64, "feed_forward_length": 128, "attention.head_count": 4,
              "context_length": 512})
    on_gpu = estimate_llamacpp(path, ["-ngl", "1"], {"gpu0": 2**30})
    in_ram = estimate_llamacpp(path, ["-ngl", "0"], {"gpu0": 2**30})
    assert on_gpu.total - in_ram.total == 1000 * 64 * 4


def test_a_projector_is_added_to_the_first_gpu(models: Path) -> None:
    path, projector = small(models, "main"), small(models, "projector")
    base = estimate_llamacpp(path, ["-c", "512"], {"gpu0": 2**33})
    est = estimate_llamacpp(path, ["-c", "512", "--mmproj", str(projector)], {"gpu0": 2**33})
    assert est.by_device["gpu0"] - base.by_device["gpu0"] == read_gguf(projector).weights
    kept = estimate_llamacpp(path, ["-c", "512", "--mmproj", str(projector), "--no-mmproj-offload"], {"gpu0": 2**33})
    assert kept.by_device["ram"] - base.by_device["ram"] == read_gguf(projector).weights


# ---- what llama-server printed -------------------------------------------------------------

def test_buffer_sizes_from_real_llama_server_output() -> None:
    lines = (DATA / "llama_server_lv4_llama_620mb.log").read_text().splitlines()
    assert parse_buffer_sizes(lines) == {"ram": round(592.51 * MiB) + round(0.01 * MiB) + 96 * MiB + round(26.51 * MiB)}
    swa = (DATA / "llama_server_lv4_gemma3_swa.log").read_text().splitlines()  # two KV lines: both count
    assert parse_buffer_sizes(swa) == {"ram": round(68.26 * MiB) + round(0.01 * MiB) + round(15.5 * MiB) + round(18.52 * MiB)}


def test_buffer_sizes_per_device_and_only_the_last_set() -> None:
    probe = ["load_tensors:        CUDA0 model buffer size =  9000.00 MiB",
             "llama_kv_cache:        CUDA0 KV buffer size =  4096.00 MiB",
             "sched_reserve:      CUDA0 compute buffer size =   500.00 MiB"]
    final = ["load_tensors:   CPU_Mapped model buffer size =   400.50 MiB",
             "load_tensors:        CUDA0 model buffer size =  3000.00 MiB",
             "load_tensors:        CUDA1 model buffer size =  2000.00 MiB",
             "load_tensors:   CPU_REPACK model buffer size =    10.00 MiB",
             "llama_context:  CUDA_Host  output buffer size =     0.50 MiB",
             "llama_kv_cache:        CUDA0 KV buffer size =  1024.00 MiB",
             "llama_kv_cache:        CUDA1 KV buffer size =   512.00 MiB",
             "sched_reserve:        CUDA0 compute buffer size =   300.00 MiB",
             "sched_reserve:        CUDA1 compute buffer size =   200.00 MiB",
             "sched_reserve:    CUDA_Host compute buffer size =    20.00 MiB",
             "srv    load_model: initializing, n_slots = 4"]
    assert parse_buffer_sizes(probe + ["other line"] + final) == {
        "ram": round(400.5 * MiB) + 10 * MiB + MiB // 2 + 20 * MiB, "gpu0": 4324 * MiB, "gpu1": 2712 * MiB}
    others = ["0.01 I load_tensors: ROCm1 model buffer size = 1.00 MiB", "load_tensors: Vulkan0 model buffer size = 2.00 MiB",
              "\x1b[32mload_tensors:  Metal_Mapped model buffer size =   4.00 MiB\x1b[0m", " Metal KV buffer size = 8.00 MiB"]
    assert parse_buffer_sizes(others) == {"gpu1": MiB, "gpu0": 2 * MiB, "ram": 12 * MiB}  # Apple: unified
    assert parse_buffer_sizes(["main: server is listening", "load_tensors: loading model tensors"]) is None
    assert parse_buffer_sizes([]) is None


@pytest.mark.parametrize(("text", "value"), [
    ("6GB", 6 * 2**30), ("6 GiB", 6 * 2**30), ("6gb", 6 * 2**30), ("1.5 GB", 3 * 2**29), ("512MB", 512 * MiB),
    ("512 mib", 512 * MiB), ("100 B", 100), ("4096", 4096), ("2KB", 2048), ("1 KiB", 1024), ("1TB", 2**40),
    ("0.5TiB", 2**39), (".5 kb", 512), ("3g", 3 * 2**30), (" 7 MB ", 7 * MiB), (1234, 1234)])
def test_parse_size_reads_binary_units(text: str | int, value: int) -> None:
    assert parse_size(text) == value
    assert format_bytes(parse_size("6GB")) == "6.0 GB"  # the same units as the tray prints


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "6 GBs", "1e9", "iB", "6 i", "1.2.3 GB", "six GB", "6 PB", -1, True, None])
def test_parse_size_refuses_what_it_cannot_read(text) -> None:
    with pytest.raises(ValueError) as raised:
        parse_size(text)
    assert raised.type is SizeError


def start_server(model: Path, args: list[str], *, log: Path) -> tuple[subprocess.Popen, int]:
    from app.core.models.backend import free_port

    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(LLAMA_SERVER), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                 "-t", "1", *args], stdout=out, stderr=subprocess.STDOUT)
    for _ in range(600):  # 30 s
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"llama-server did not come up:\n{log.read_text(errors='replace')[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    finally:
        proc.kill()  # a no-op once it has exited
        proc.wait()


GEMMA3 = dict(arch="gemma3", n_head=8, n_head_kv=2, head_dim=128, context_length=32768, sliding_window=256)


@pytest.mark.llama
@pytest.mark.parametrize(("shape", "args"), [
    (dict(n_head=8, n_head_kv=4, context_length=32768), ["-c", "4096"]),
    (dict(n_head=8, n_head_kv=4, context_length=3000), []),
    (dict(n_head=8, n_head_kv=8, context_length=8192), ["-c", "8000", "-np", "3", "-ctk", "q8_0", "-ctv", "q4_0"]),
    (dict(arch="deci", n_head=8, n_head_kv=[8, 4, 2, 1], context_length=8192), ["-c", "4096", "-fa", "off"]),
    (GEMMA3, ["-c", "8192"]), ({**GEMMA3, "swa_pattern": [True, False, True, False]}, ["-c", "8192", "-np", "2"]),
], ids=["gqa", "model-ctx", "slots-quantized", "per-layer-kv-fa-off", "swa", "swa-list-per-slot"])
def test_the_estimate_matches_what_llama_server_allocates(tmp_path: Path, shape: dict, args: list[str]) -> None:
    model = write_synthetic_model(tmp_path / "m.gguf", n_embd=512, n_layers=4, n_ff=1024, sparse=True, **shape)
    proc, _port = start_server(model, ["-lv", "4", "--no-warmup", *args], log=tmp_path / "server.log")
    stop_server(proc)
    text = (tmp_path / "server.log").read_text(errors="replace")
    printed_kv = sum(float(m) for m in re.findall(r"KV buffer size =\s+([\d.]+) MiB", text)) * MiB
    printed_compute = sum(float(m) for m in re.findall(r"compute buffer size =\s+([\d.]+) MiB", text)) * MiB
    assert abs(kv_bytes(model, args) - printed_kv) < 0.01 * MiB  # exact, to the printed 2 decimals
    estimate = estimate_llamacpp(model, args)
    compute = estimate.total - FLOOR - read_gguf(model).weights - kv_bytes(model, args)
    assert 0.9 * printed_compute < compute < 1.15 * printed_compute, (compute / MiB, printed_compute / MiB)
    printed = parse_buffer_sizes(text.splitlines())
    assert printed is not None and 0.95 < (estimate.total - FLOOR) / printed["ram"] < 1.2


@pytest.fixture(scope="session")
def model_620mb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_model(tmp_path_factory.mktemp("big") / "synthetic-620mb.gguf", n_embd=1024, n_layers=12,
                                 n_ff=2816, n_head=16, context_length=8192)


@pytest.mark.llama
@pytest.mark.timeout(90)
def test_estimate_against_the_resident_memory_of_the_real_llama_server(model_620mb: Path, tmp_path: Path) -> None:
    figures = {}
    for ctx in (512, 8192):
        args = ["-c", str(ctx)]
        estimate = estimate_llamacpp(model_620mb, args)
        proc, port = start_server(model_620mb, args, log=tmp_path / f"server-{ctx}.log")
        try:
            body = json.dumps({"prompt": "hello world", "max_tokens": 8}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as resp:
                assert json.loads(resp.read())["choices"][0]["text"] is not None
            measured = psutil.Process(proc.pid).memory_info().rss
        finally:
            stop_server(proc)
        figures[ctx] = (estimate.total, measured)
        print(f"\nsynthetic llama 1024x12, n_ff 2816, f32 ({model_620mb.stat().st_size / MiB:.0f} MiB), --ctx-size {ctx}: "
              f"estimate {estimate.total / MiB:.1f} MiB, measured RSS {measured / MiB:.1f} MiB ({estimate.total / measured:.2f})")
        assert 0.5 * measured <= estimate.total <= 2 * measured
    kv_growth = kv_bytes(model_620mb, ["-c", "8192"]) - kv_bytes(model_620mb, ["-c", "512"])
    estimate_growth, measured_growth = (figures[8192][i] - figures[512][i] for i in (0, 1))
    print(f"growth 512 -> 8192: estimate {estimate_growth / MiB:.1f} MiB, measured {measured_growth / MiB:.1f} MiB, "
          f"KV cache {kv_growth / MiB:.1f} MiB")
    assert kv_growth == (8192 - 512) * 12 * 2 * 1024 * 2
    assert abs(estimate_growth - kv_growth) < 0.05 * kv_growth
    assert abs(measured_growth - kv_growth) < 0.15 * kv_growth
