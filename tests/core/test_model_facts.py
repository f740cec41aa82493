"""What Siesta tells about a local model without loading it (app/core/model_facts.py): Ollama's
number and quantization names, capabilities from the chat template and the recipe, the
digest rule, the cache, and files that cannot be read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from app.core import model_facts as facts_module
from app.core.config.recipes import Recipe
from app.core.model_facts import (
    args_text,
    file_facts,
    file_type_name,
    gguf_facts,
    human_number,
    model_facts,
    template_capabilities,
)
from app.demo_model import write_tiny_model
from tests.synthetic_gguf import write_synthetic_model


@pytest.mark.parametrize(("count", "text"), [
    (7_615_616_512, "7.6B"), (8_000_000_000, "8B"), (8_030_261_248, "8.0B"), (494_032_768, "494.03M"),
    (135_000_000, "135M"), (154_560, "155K"), (1_500, "2K"), (999, "999"), (0, "0"), (70_553_706_496, "70.6B"),
])
def test_parameter_counts_as_ollama_writes_them(count, text):
    assert human_number(count) == text


@pytest.mark.parametrize(("file_type", "name"), [
    (0, "F32"), (1, "F16"), (2, "Q4_0"), (7, "Q8_0"), (15, "Q4_K_M"), (14, "Q4_K_S"), (18, "Q6_K"), (30, "IQ4_XS"),
    (32, "BF16"), (38, "MXFP4_MOE"), (4, "unknown"), (999, "unknown"), (None, "unknown"), (True, "unknown"),
    ("15", "unknown"),
])
def test_quantization_named_from_the_file_type(file_type, name):
    assert file_type_name(file_type) == name


@pytest.mark.parametrize(("template", "found"), [
    ("{{ messages }}", []),
    ("{% if tools %}{{ tools | tojson }}{% endif %}", ["tools"]),
    ("<tool_call>{{ x }}</tool_call>", ["tools"]),
    ("<think>\n</think>", ["thinking"]),
    ("{% set c = message.content.split('</think>')[-1] %}{% if tools %}", ["tools", "thinking"]),
    ("{% set c = content.split('</think>') %}{{ reasoning_content }}", []),
    ("", []),
])
def test_tools_and_thinking_from_the_chat_template_as_ollama_reads_them(template, found):
    assert template_capabilities(template) == found


def test_args_as_text_one_option_a_line_secrets_hidden():
    args = ["-t", "1", "--ctx-size=4096", "--api-key", "sekrit", "--temp", "-1", "--override-kv", "a=b c", "--jinja"]
    assert args_text(args).splitlines() == ["-t 1", "--ctx-size=4096", "--api-key '***'", "--temp -1",
                                            "--override-kv 'a=b c'", "--jinja"]
    assert args_text([]) == ""


def test_the_digest_is_of_path_size_and_mtime_never_of_the_contents(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x" * 100)
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    first = file_facts(path)
    assert first.size == 100 and first.modified == pytest.approx(1_700_000_000.123456789)
    assert first.digest == hashlib.sha256(f"{path}\x00100\x00{1_700_000_000_123_456_789}".encode()).hexdigest()
    path.write_bytes(b"y" * 100)  # the same size, a new mtime: a new digest
    assert file_facts(path).digest != first.digest


def test_a_split_models_size_counts_every_part(tmp_path):
    parts = [tmp_path / f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for i, part in enumerate(parts):
        part.write_bytes(b"x" * (10 ** (i + 1)))
    assert file_facts(parts[0]).size == 1110
    assert file_facts(parts[1]).size == 100  # a later part alone is just itself


def test_header_facts_are_read_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    path = write_tiny_model(tmp_path / "tiny.gguf")
    reads: list[Path] = []
    real = facts_module.read_gguf
    monkeypatch.setattr(facts_module, "read_gguf", lambda p: reads.append(p) or real(p))
    first = gguf_facts(path)
    assert gguf_facts(path) is first and len(reads) == 1
    os.utime(path, ns=(1, 1))
    assert gguf_facts(path) == first and len(reads) == 2


def test_model_info_leaves_out_tokenizer_arrays_shortens_long_arrays_and_nulls_nan(tmp_path):
    path = write_synthetic_model(tmp_path / "m.gguf", n_embd=64, n_layers=8, n_ff=128, n_head=4, sparse=True,
                                 n_head_kv=[4, 4, 2, 2, 4, 4, 2, 2], extra_kv={"llama.pooling_type": 1})
    facts = gguf_facts(path)
    info = facts.model_info
    assert info["llama.attention.head_count_kv"] == []  # eight values: Ollama shows [] without "verbose"
    assert "tokenizer.ggml.tokens" not in info and "tokenizer.ggml.model" in info
    assert facts.pooling and info["llama.pooling_type"] == 1
    assert info["general.parameter_count"] == facts.parameter_count > 0


def test_capabilities_come_from_the_recipe_and_the_header(tmp_path):
    tiny = write_tiny_model(tmp_path / "tiny.gguf")
    recipe = Recipe("tiny", tmp_path / "tiny.toml", "llamacpp", model=tiny, args=("--ctx-size", "128"))
    facts = model_facts(recipe)
    assert facts.capabilities == ("completion",) and facts.context_length == 128 and facts.error is None
    embedder = Recipe("e", tmp_path / "e.toml", "llamacpp", model=tiny, args=("--embeddings", "-mm", "p.gguf"))
    assert model_facts(embedder).capabilities == ("embedding", "vision")
    assert model_facts(Recipe("d", tmp_path / "d.toml", "llamacpp", model=tiny)).context_length == 512


@pytest.mark.parametrize("content", [b"", b"not a gguf file", b"GGUF\x03\x00\x00\x00" + b"\xff" * 20])
def test_a_file_that_is_not_a_readable_gguf_leaves_the_header_facts_out(tmp_path, content):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    recipe_file = tmp_path / "b.toml"
    recipe_file.write_text("", encoding="utf-8")
    facts = model_facts(Recipe("b", recipe_file, "llamacpp", model=path))
    assert facts.gguf is None and facts.file is not None and facts.file.size == len(content)
    assert facts.error and str(path) in facts.error and facts.capabilities == ("completion",)


def test_a_missing_model_file_is_known_by_its_recipe(tmp_path):
    recipe_file = tmp_path / "gone.toml"
    recipe_file.write_text("", encoding="utf-8")
    facts = model_facts(Recipe("gone", recipe_file, "llamacpp", model=tmp_path / "gone.gguf"))
    assert facts.file is None and facts.error and facts.listed == file_facts(recipe_file)
