"""The one parser for llama-server's argument forms (app/core/models/llama_args.py): every form of
every option it reads, edits that keep the form the user wrote, unknown arguments untouched."""

from __future__ import annotations

import pytest

from app.core.models.llama_args import DEFAULTS, ArgsError, LlamaArgs, option_names, with_value, without

# (tokens, field, value) for every spelling and form llama-server (or another launcher) takes.
FORMS = [
    (["-c", "4096"], "ctx_size", 4096),
    (["--ctx-size", "4096"], "ctx_size", 4096),
    (["--ctx-size=4096"], "ctx_size", 4096),
    (["-c=4096"], "ctx_size", 4096),
    (["--ctx_size", "4096"], "ctx_size", 4096),
    (["-ngl", "99"], "n_gpu_layers", 99),
    (["--n-gpu-layers", "12"], "n_gpu_layers", 12),
    (["--gpu-layers", "0"], "n_gpu_layers", 0),
    (["--n-gpu-layers=all"], "n_gpu_layers", "all"),
    (["-ngl=auto"], "n_gpu_layers", "auto"),
    (["--gpu-layers=7"], "n_gpu_layers", 7),
    (["-ngl", "-1"], "n_gpu_layers", "auto"),
    (["-ngl", "-2"], "n_gpu_layers", "all"),
    (["-t", "4"], "threads", 4),
    (["--threads", "8"], "threads", 8),
    (["--threads=2"], "threads", 2),
    (["-np", "2"], "parallel", 2),
    (["--parallel", "1"], "parallel", 1),
    (["--parallel=3"], "parallel", 3),
    (["-b", "1024"], "batch_size", 1024),
    (["-ub", "256"], "ubatch_size", 256),
    (["--ubatch-size=128"], "ubatch_size", 128),
    (["-ctk", "q8_0"], "cache_type_k", "q8_0"),
    (["--cache-type-k", "q4_0"], "cache_type_k", "q4_0"),
    (["-ctv", "q8_0"], "cache_type_v", "q8_0"),
    (["--cache-type-v=f16"], "cache_type_v", "f16"),
    (["-fa", "on"], "flash_attn", "on"),
    (["--flash-attn", "off"], "flash_attn", "off"),
    (["--flash-attn=auto"], "flash_attn", "auto"),
    (["-fa", "1"], "flash_attn", "on"),
    (["-fa"], "flash_attn", "on"),  # older builds: a bare flag
    (["-nkvo"], "no_kv_offload", True),
    (["--no-kv-offload"], "no_kv_offload", True),
    (["-kvo"], "no_kv_offload", False),
    (["--kv-offload"], "no_kv_offload", False),
    (["-kvu"], "kv_unified", True),
    (["--no-kv-unified"], "kv_unified", False),
    (["--swa-full"], "swa_full", True),
    (["--fit", "off"], "fit", "off"),
    (["-fit", "on"], "fit", "on"),
    (["--fit=off"], "fit", "off"),
    (["--fit-target", "512"], "fit_target", (512,)),
    (["-fitt", "2048,1024"], "fit_target", (2048, 1024)),
    (["--fit-ctx", "8192"], "fit_ctx", 8192),
    (["--mmproj", "/m/proj.gguf"], "mmproj", "/m/proj.gguf"),
    (["-mm", "p.gguf"], "mmproj", "p.gguf"),
    (["-m", "/m/a.gguf"], "model", "/m/a.gguf"),
    (["--model", "/m/b.gguf"], "model", "/m/b.gguf"),
    (["--model=/m/c.gguf"], "model", "/m/c.gguf"),
]


@pytest.mark.parametrize(("tokens", "name", "value"), FORMS, ids=[" ".join(f[0]) for f in FORMS])
def test_every_argument_form_is_read(tokens: list[str], name: str, value: object) -> None:
    parsed = LlamaArgs.parse(["--temp", "0.7", *tokens, "--jinja"])
    assert getattr(parsed, name) == value
    assert parsed.extra == ("--temp", "0.7", "--jinja")


def test_nothing_given_means_llama_servers_defaults() -> None:
    parsed = LlamaArgs.parse([])
    assert parsed == LlamaArgs()
    assert parsed.get("ctx_size") == 0  # from the model
    assert parsed.get("parallel") == -1  # auto: 4 slots, one unified KV cache
    assert parsed.get("n_gpu_layers") == "auto" and parsed.get("fit") == "on"
    assert parsed.get("fit_target") == (1024,) and parsed.get("fit_ctx") == 4096
    assert parsed.get("cache_type_k") == parsed.get("cache_type_v") == "f16"
    assert parsed.get("ubatch_size") == 512 and parsed.get("batch_size") == 2048
    assert set(DEFAULTS) <= {f for f in LlamaArgs.__dataclass_fields__}


def test_the_last_occurrence_wins_as_in_llama_server() -> None:
    assert LlamaArgs.parse(["-c", "1024", "--ctx-size=2048", "-c", "4096"]).ctx_size == 4096
    assert LlamaArgs.parse(["-nkvo", "-kvo"]).no_kv_offload is False


def test_unknown_arguments_are_kept_in_order_with_their_values() -> None:
    args = ["--temp", "0.7", "-c", "512", "--override-kv", "a=int:1", "--alias", "x", "-hf", "org/repo", "--jinja"]
    assert LlamaArgs.parse(args).extra == ("--temp", "0.7", "--override-kv", "a=int:1", "--alias", "x",
                                           "-hf", "org/repo", "--jinja")


def test_a_bare_flash_attn_does_not_take_the_next_option_as_its_value() -> None:
    parsed = LlamaArgs.parse(["-fa", "-c", "2048"])
    assert parsed.flash_attn == "on" and parsed.ctx_size == 2048


def test_a_bare_switch_before_a_word_leaves_the_word_alone() -> None:
    parsed = LlamaArgs.parse(["-fa", "maybe", "--fit", "x"])  # not on/off/auto: bare switches
    assert (parsed.flash_attn, parsed.fit, parsed.extra) == ("on", "on", ("maybe", "x"))


@pytest.mark.parametrize("args", [["-c"], ["-c", "many"], ["--ctx-size=4k"], ["-ngl", "most"], ["-t", "1.5"],
                                  ["--fit-target", "1,x"], ["-np"], ["--fit=maybe"], ["-m"]])
def test_values_llama_server_would_refuse_raise_args_error(args: list[str]) -> None:
    with pytest.raises(ArgsError):
        LlamaArgs.parse(args)
    assert issubclass(ArgsError, ValueError)


# ---- edits ------------------------------------------------------------------------------

def test_with_value_keeps_the_two_token_form() -> None:
    assert with_value(["-c", "4096", "--jinja"], "ctx_size", 8192) == ["-c", "8192", "--jinja"]
    assert with_value(["--ctx-size", "4096"], "-c", 8192) == ["--ctx-size", "8192"]


def test_with_value_keeps_the_one_token_form() -> None:
    assert with_value(["--ctx-size=4096", "--jinja"], "ctx_size", 8192) == ["--ctx-size=8192", "--jinja"]
    assert with_value(["-c=4096"], "--ctx-size", 100) == ["-c=100"]
    assert with_value(["--n-gpu-layers=all"], "n_gpu_layers", 20) == ["--n-gpu-layers=20"]
    assert with_value(["--ctx_size", "1"], "ctx_size", 2) == ["--ctx_size", "2"]


def test_with_value_appends_an_absent_option_in_its_long_form() -> None:
    assert with_value(["--jinja"], "ctx_size", 4096) == ["--jinja", "--ctx-size", "4096"]
    assert with_value([], "-ngl", "all") == ["--n-gpu-layers", "all"]
    assert with_value([], "threads", 4) == ["--threads", "4"]
    assert with_value([], "parallel", 2) == ["--parallel", "2"]
    assert with_value([], "fit_target", (512, 256)) == ["--fit-target", "512,256"]
    assert with_value([], "no_kv_offload", True) == ["--no-kv-offload"]


def test_with_value_leaves_every_other_token_alone() -> None:
    args = ["--temp", "0.7", "-m", "/a b/c.gguf", "-t", "2", "--override-kv", "x=int:1", "-c", "512", "--jinja"]
    edited = with_value(args, "threads", 6)
    assert edited == ["--temp", "0.7", "-m", "/a b/c.gguf", "-t", "6", "--override-kv", "x=int:1", "-c", "512", "--jinja"]
    assert LlamaArgs.parse(edited).extra == LlamaArgs.parse(args).extra
    assert args[5] == "2"  # the input list is not changed


def test_with_value_edits_the_occurrence_that_counts_and_drops_dead_ones() -> None:
    assert with_value(["-c", "1", "--x", "--ctx-size=2"], "ctx_size", 3) == ["--x", "--ctx-size=3"]


def test_switches_flip_in_the_same_short_or_long_form() -> None:
    assert with_value(["-nkvo"], "no_kv_offload", False) == ["-kvo"]
    assert with_value(["--kv-offload"], "no_kv_offload", True) == ["--no-kv-offload"]
    assert with_value(["-kvu", "-c", "9"], "kv_unified", False) == ["-no-kvu", "-c", "9"]
    assert with_value(["--swa-full", "--jinja"], "swa_full", False) == ["--jinja"]
    with pytest.raises(ArgsError):
        with_value([], "swa_full", "yes")


def test_with_value_none_removes_and_bad_values_are_refused() -> None:
    assert with_value(["-c", "1", "--jinja"], "ctx_size", None) == ["--jinja"]
    with pytest.raises(ArgsError):
        with_value([], "ctx_size", "big")
    with pytest.raises(KeyError):
        with_value([], "--temp", 1)  # not an option the parser knows: edit it as text


def test_without_removes_every_form_and_its_value() -> None:
    args = ["-c", "1", "--temp", "0.7", "--ctx-size=2", "--ctx_size", "3", "-np", "2"]
    assert without(args, "ctx_size") == ["--temp", "0.7", "-np", "2"]
    assert without(["-nkvo", "--kv-offload", "-t", "1"], "no_kv_offload") == ["-t", "1"]
    assert without(["--jinja"], "-c") == ["--jinja"]


def test_round_trip_of_edits_reads_back_what_was_set() -> None:
    args: list[str] = ["--ctx-size=512", "-ngl", "4", "--jinja"]
    for option, value in (("ctx_size", 16384), ("n_gpu_layers", "all"), ("threads", 3), ("parallel", 1),
                          ("cache_type_k", "q8_0"), ("flash_attn", "off"), ("fit", "off")):
        args = with_value(args, option, value)
    parsed = LlamaArgs.parse(args)
    assert (parsed.ctx_size, parsed.n_gpu_layers, parsed.threads, parsed.parallel) == (16384, "all", 3, 1)
    assert (parsed.cache_type_k, parsed.flash_attn, parsed.fit, parsed.extra) == ("q8_0", "off", "off", ("--jinja",))
    assert args[:3] == ["--ctx-size=16384", "-ngl", "all"]


def test_option_names_lists_every_spelling() -> None:
    assert option_names("-c") == ("-c", "--ctx-size")
    assert set(option_names("n_gpu_layers")) == {"-ngl", "--gpu-layers", "--n-gpu-layers"}
    assert option_names("no_kv_offload") == ("-nkvo", "--no-kv-offload", "-kvo", "--kv-offload")
