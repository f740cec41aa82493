"""The words of the groups by machine or engine (remotes), checked without Qt."""

from __future__ import annotations

from typing import Any

from app.ui import text

GB = 1024 ** 3
MB = 1024 ** 2
NOW = 1_800_000_000.0


def snap(name: str, state: str = "ready", **extra: Any) -> dict[str, Any]:
    remote, _, model = name.partition("/") if "/" in name else (None, "", name)
    base: dict[str, Any] = {"name": name, "state": state, "in_flight": 0, "waiting": 0, "unload_timeout": 300.0,
                            "timeout_source": "global", "unload_at": None, "memory": None, "vram": None,
                            "backend": "command", "error": None}
    if remote:
        base.update(remote=remote, remote_model=model, remote_kind="ollama", can_load=True, backend="ollama")
    base.update(extra)
    return base


def remote(name: str, kind: str = "siesta", url: str = "http://192.168.1.20:8777", status: str = "ok",
           error: str | None = None) -> dict[str, Any]:
    return {"name": name, "kind": kind, "url": url, "api_key": None, "status": status, "error": error,
            "retry_in": None, "models": 0}


def test_where_a_remote_is_in_a_few_characters() -> None:
    assert text.remote_address("http://192.168.1.20:8777", "siesta") == "192.168.1.20"  # Siesta's own port
    assert text.remote_address("http://127.0.0.1:11434", "ollama") == "127.0.0.1"
    assert text.remote_address("http://127.0.0.1:11434", "siesta") == "127.0.0.1:11434"
    assert text.remote_address("http://gpubox:13305", "lemonade") == "gpubox"
    assert text.remote_address("https://api.example.com/v1", "openai") == "api.example.com"
    assert text.remote_address("https://proxy.lan/siesta", "siesta") == "proxy.lan/siesta"
    assert text.remote_address("http://[::1]:9000", "openai") == "[::1]:9000"
    assert text.remote_address(None) == ""


def test_a_groups_memory_is_its_models_ram_and_vram_together() -> None:
    models = [snap("a", memory=400 * MB, vram=int(5.1 * GB)), snap("b", memory=10 * MB, vram=GB),
              snap("c", state="unloaded")]
    assert text.group_memory(models) == "410 MB + 6.1 GB VRAM"
    assert text.group_memory([snap("a", memory=int(1.2 * GB))]) == "1.2 GB"
    assert text.group_memory([snap("a", state="unloaded")]) == ""
    assert text.group_memory([]) == ""
    # A model wholly on the GPU (Ollama reports its RAM as 0) is worded by its VRAM alone.
    assert text.memory_text({"memory": 0, "vram": 2 * GB}) == "2.0 GB VRAM"


def test_group_titles() -> None:
    here = [snap("qwen", memory=400 * MB, vram=int(9.2 * GB))]
    assert text.group_title(None, here) == "This computer · 400 MB + 9.2 GB VRAM"
    assert text.group_title(None, []) == "This computer"
    assert text.group_title(None, [], here="gpubox") == "gpubox"
    box = [snap("gpubox/qwen", memory=int(6.1 * GB))]
    assert text.group_title(remote("gpubox"), box) == "gpubox — Siesta at 192.168.1.20 · 6.1 GB"
    assert text.group_title(remote("gpubox"), []) == "gpubox — Siesta at 192.168.1.20"
    assert text.group_title(remote("ol", "ollama", "http://127.0.0.1:11434"), []) == "ol — Ollama at 127.0.0.1"
    assert text.group_title(remote("r", "llama.cpp-router", "http://h:8080"), []) == "r — llama.cpp router at h"
    assert (text.group_title(remote("gpt", "openai", "https://api.example.com/v1"), [])
            == "gpt — OpenAI-compatible server at api.example.com")
    assert (text.group_title(remote("gpubox", status="connecting"), [])
            == "gpubox — Siesta at 192.168.1.20: connecting...")


def test_a_remote_that_cannot_be_used_says_why_and_that_it_is_tried_again() -> None:
    gone = remote("gpubox", status="unreachable",
                  error="remote 'gpubox' at http://192.168.1.20:8777 is unreachable: connection refused")
    assert text.remote_problem(gone) == "gpubox — cannot reach http://192.168.1.20:8777: connection refused; trying again"
    assert text.group_title(gone, []) == text.remote_problem(gone)
    refused = remote("gpubox", status="error", error="remote 'gpubox': list models failed: HTTP 401: wrong key")
    assert (text.remote_problem(refused)
            == "gpubox — http://192.168.1.20:8777 answered: list models failed: HTTP 401: wrong key; trying again")
    assert text.remote_problem(remote("gpubox")) is None
    assert text.remote_problem(remote("gpubox", status="connecting")) is None
    long = remote("gpubox", status="error", error="remote 'gpubox': list models failed: HTTP 500: " + "x" * 300)
    title = text.group_title(long, [])
    assert len(title) == text.PROBLEM_CHARS and title.endswith("…")


def test_models_are_grouped_this_computer_first_then_each_remote_by_name() -> None:
    models = [snap("tiny"), snap("ol/llama3"), snap("gpubox/qwen"), snap("zeta")]
    described = [remote("gpubox"), remote("gone", status="unreachable"), remote("ol", "ollama")]
    groups = text.model_groups(models, described)
    assert [(r["name"] if r else None, [m["name"] for m in ms]) for r, ms in groups] == [
        (None, ["tiny", "zeta"]), ("gone", []), ("gpubox", ["gpubox/qwen"]), ("ol", ["ol/llama3"])]
    # without remotes: one group, every model in it
    assert text.model_groups([snap("tiny")], []) == [(None, [snap("tiny")])]
    # a model listed before its remote is described still gets a group
    (_, (late, late_models)) = text.model_groups([snap("new/m")], [])
    assert late["name"] == "new" and late["status"] == "ok" and [m["name"] for m in late_models] == ["new/m"]


def test_the_menu_counts_idle_routed_models_beyond_its_limit() -> None:
    routed = [snap(f"gpt/m{i}", can_load=False) for i in range(12)]
    routed[7]["in_flight"] = 1
    shown, more = text.menu_models(routed, 4)
    assert [m["name"] for m in shown] == ["gpt/m0", "gpt/m1", "gpt/m2", "gpt/m3", "gpt/m7"] and more == 7
    assert text.menu_models(routed[:3], 4) == (routed[:3], 0)
    loaded = [snap(f"ol/m{i}") for i in range(6)] + [snap("ol/off", state="unloaded")]
    assert text.menu_models(loaded, 4) == (loaded[:6], 0)  # models that hold a server are all listed


def test_remote_models_words() -> None:
    model = snap("gpubox/qwen", memory=int(1.2 * GB), unload_at=NOW + 252)
    assert text.menu_label(model, NOW, short=True) == "qwen (1.2 GB): idle, unloads in 4:12"
    assert text.menu_label(model, NOW) == "gpubox/qwen (1.2 GB): idle, unloads in 4:12"
    routed = snap("gpt/gpt-4o", can_load=False, unload_timeout=None, remote_kind="openai")
    assert text.status_text(routed, NOW) == "available"
    assert text.status_text({**routed, "in_flight": 2}, NOW) == "busy (2 requests)"
    # what Siesta only routes to is never "loaded" for the icon and tooltip
    assert text.overall_state([routed]) == text.ICON_EMPTY
    assert text.overall_state([{**routed, "in_flight": 1}]) == text.ICON_BUSY
    assert text.tooltip_text([routed]) == "Siesta: no models loaded"
    # another machine's llama.cpp models do not need a llama-server here
    assert not text.engine_needed([snap("tiny"), snap("gpubox/qwen", backend="llamacpp")])
    assert text.engine_needed([snap("gpubox/qwen", backend="llamacpp")])  # no recipe here yet: the first will


def test_where_a_remote_models_timeout_is_kept() -> None:
    assert text.use_global_label(snap("tiny"), 300.0) == "Use global (5 min)"
    assert text.use_global_label(snap("ol/llama3"), 300.0) == "Use global (5 min)"
    box = snap("gpubox/qwen", remote_kind="siesta")
    assert text.use_global_label({**box, "unload_timeout": 600.0}, 300.0) == "Use global (10 min)"
    assert text.use_global_label({**box, "timeout_source": "recipe"}, 300.0) == "Use gpubox's global"
    assert text.timeout_tip(snap("tiny")).endswith("(saved in its recipe)")
    assert text.timeout_tip(box).endswith("(saved in its recipe on gpubox)")
    assert text.timeout_tip(snap("ol/llama3")).endswith("(saved in settings.toml, [remotes.ol.timeouts])")
