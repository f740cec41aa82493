"""The words the GUI uses for a model, checked without Qt."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.ui import text

NOW = 1_800_000_000.0
GB = 1024 ** 3
MB = 1024 ** 2


def snap(name: str = "tiny", state: str = "ready", **extra: Any) -> dict[str, Any]:
    base = {
        "name": name, "state": state, "stale": False, "in_flight": 0, "waiting": 0,
        "unload_timeout": 300.0, "timeout_source": "global", "idle_since": None, "unload_at": None,
        "unloads_in": None, "loading_since": None, "pid": None, "memory": None, "error": None,
        "exit_code": None, "crash_loop": False, "log_file": f"/logs/{name}.log", "backend": "command",
        "group": None, "preload": False,
    }
    base.update(extra)
    return base


@pytest.mark.parametrize(("value", "expected"), [
    (None, ""), (0, "0 B"), (512, "512 B"), (2048, "2.0 KB"), (9.5 * MB, "9.5 MB"), (230 * MB, "230 MB"),
    (1.2 * GB, "1.2 GB"), (5.1 * GB, "5.1 GB"), (40 * GB, "40.0 GB"),
])
def test_format_bytes(value: float | None, expected: str) -> None:
    assert text.format_bytes(value) == expected


def test_menu_label_idle_with_countdown_and_memory() -> None:
    s = snap(memory=int(1.2 * GB), unload_at=NOW + 252)
    assert text.menu_label(s, NOW) == "tiny (1.2 GB): idle, unloads in 4:12"


def test_menu_label_countdown_rounds_up_like_a_clock() -> None:
    assert text.status_text(snap(unload_at=NOW + 251.2), NOW) == "idle, unloads in 4:12"
    assert text.status_text(snap(unload_at=NOW + 3723), NOW) == "idle, unloads in 1:02:03"
    assert text.status_text(snap(unload_at=NOW - 1), NOW) == "idle, unloads in 0:00"


def test_menu_label_busy_without_memory() -> None:
    assert text.menu_label(snap("qwen", in_flight=2), NOW) == "qwen: busy (2 requests)"
    assert text.menu_label(snap("qwen", in_flight=1), NOW) == "qwen: busy (1 request)"


def test_loading_shows_seconds_so_far() -> None:
    assert text.menu_label(snap("qwen", "loading", loading_since=NOW - 12.7), NOW) == "qwen: loading... 12 s"


def test_kept_loaded_for_never() -> None:
    s = snap(unload_timeout=None, timeout_source="recipe", memory=20 * MB)
    assert text.menu_label(s, NOW) == "tiny (20 MB): kept loaded"


def test_crash_names_the_exit_code() -> None:
    s = snap(state="failed", error="crashed: exit 139", exit_code=139)
    assert text.menu_label(s, NOW) == "tiny: crashed: exit 139"
    loop = snap(state="failed", error="crashed: exit 139", exit_code=139, crash_loop=True)
    assert text.status_text(loop, NOW) == "crashed: exit 139 (crash loop)"


def test_a_signal_shows_as_the_shell_shows_it() -> None:
    segfault = snap(state="failed", error="crashed: exit -11", exit_code=-11)
    assert text.status_text(segfault, NOW) == "crashed: exit 139"
    assert text.shell_exit_code(-9) == 137
    assert text.shell_exit_code(3) == 3


def test_load_failure_and_invalid_recipe() -> None:
    assert text.status_text(snap(state="failed", error="load failed: boom", exit_code=1), NOW) == "load failed: exit 1"
    assert text.status_text(snap(state="failed", error="load failed: timed out"), NOW) == "load failed"
    bad = snap(state="failed", error="tiny.toml: not valid TOML", backend=None)
    assert text.status_text(bad, NOW) == "invalid recipe"
    assert not text.is_shown_in_menu(bad)


def test_other_states() -> None:
    assert text.status_text(snap(state="unloading"), NOW) == "unloading..."
    assert text.status_text(snap(state="unloaded"), NOW) == "not loaded"
    assert text.short_state(snap(unload_at=NOW + 10), NOW) == "idle"
    assert text.short_state(snap(in_flight=3), NOW) == "busy (3 requests)"


def test_which_models_the_menu_lists() -> None:
    assert [text.is_shown_in_menu(snap(state=s)) for s in ("unloaded", "loading", "ready", "unloading", "failed")] \
        == [False, True, True, True, True]


def test_tooltip_names_models_memory_and_next_unload_time() -> None:
    first = NOW + 600
    later = NOW + 1200
    models = [snap("qwen", memory=int(3.9 * GB), unload_at=later),
              snap("tiny", memory=int(1.2 * GB), unload_at=first),
              snap("other", state="unloaded")]
    expected_time = time.strftime("%H:%M", time.localtime(first))
    assert text.tooltip_text(models) == f"Siesta: 2 models loaded, 5.1 GB; tiny unloads at {expected_time}"


def test_tooltip_other_cases() -> None:
    assert text.tooltip_text([]) == "Siesta: no models loaded"
    assert text.tooltip_text([snap(state="unloaded")]) == "Siesta: no models loaded"
    busy = [snap("qwen", in_flight=2, memory=GB), snap("tiny", state="loading", loading_since=NOW)]
    assert text.tooltip_text(busy) == "Siesta: 1 model loaded, 1.0 GB; qwen busy; tiny loading"
    crashed = [snap(state="failed", error="crashed: exit 139", exit_code=139)]
    assert text.tooltip_text(crashed) == "Siesta: no models loaded; tiny crashed: exit 139"


def test_overall_state_for_the_icon() -> None:
    assert text.overall_state([]) == text.ICON_EMPTY
    assert text.overall_state([snap(state="unloaded")]) == text.ICON_EMPTY
    assert text.overall_state([snap(unload_at=NOW + 5)]) == text.ICON_LOADED
    assert text.overall_state([snap(), snap("b", in_flight=1)]) == text.ICON_BUSY
    assert text.overall_state([snap(), snap("b", state="loading")]) == text.ICON_BUSY
    crashed = snap("b", state="failed", error="crashed: exit 1")
    assert text.overall_state([snap(in_flight=1), crashed]) == text.ICON_ERROR
    # a recipe that does not parse is shown in the Load menu, not as a red icon
    assert text.overall_state([snap(state="failed", backend=None)]) == text.ICON_EMPTY


def test_timeout_choice_reads_the_recipe_not_the_effective_value() -> None:
    assert text.timeout_choice(snap()) == (True, None)
    assert text.timeout_choice(snap(recipe_unload_timeout=None, unload_timeout=None)) == (False, None)
    assert text.timeout_choice(snap(recipe_unload_timeout=60.0, timeout_source="request", unload_timeout=5.0)) \
        == (False, 60.0)


def test_notifications() -> None:
    idle_unload = {"reason": "idle", "model": snap(state="unloaded")}
    became_idle = {"reason": "idle", "model": snap()}
    crash = {"reason": "crashed", "model": snap(state="failed", error="crashed: exit 139", exit_code=139)}
    assert text.notification_for(idle_unload, notify_idle=False, notify_crash=True) is None
    assert text.notification_for(idle_unload, notify_idle=True, notify_crash=True) == (
        "Model unloaded", "tiny was idle and has been unloaded.")
    assert text.notification_for(became_idle, notify_idle=True, notify_crash=True) is None
    assert text.notification_for(crash, notify_idle=False, notify_crash=True) == (
        "tiny crashed", "crashed: exit 139. See its log for details.")
    assert text.notification_for(crash, notify_idle=True, notify_crash=False) is None


def test_one_notification_per_pressure_episode_names_what_went_and_what_it_held() -> None:
    per_model = {"reason": "memory_pressure", "model": snap(state="unloaded", last_unload_reason="memory_pressure")}
    assert text.notification_for(per_model, notify_idle=True, notify_crash=True, notify_pressure=True) is None
    episode = {"reason": "memory_given_back", "model": snap(name="big", state="unloaded"),
               "detail": {"unloaded": [{"name": "big", "bytes": 706 * MB}, {"name": "tiny", "bytes": int(17.5 * MB)}]}}
    assert text.notification_for(episode, notify_idle=False, notify_crash=False, notify_pressure=True) == (
        "Memory given back", "Unloaded big (706 MB) and tiny (17.5 MB) for other programs.")
    assert text.notification_for(episode, notify_idle=True, notify_crash=True, notify_pressure=False) is None


@pytest.mark.parametrize(("ago", "words"), [
    (5, "unloaded just now to give memory back"), (150, "unloaded 2 min ago to give memory back"),
    (3 * 3600 + 5, "unloaded 3 h ago to give memory back"), (3 * 86400, "unloaded 3 days ago to give memory back"),
])
def test_a_model_unloaded_for_memory_says_so_until_it_loads_again(ago: float, words: str) -> None:
    gone = snap(state="unloaded", last_unload_reason="memory_pressure", unloaded_at=NOW - ago)
    assert text.status_text(gone, NOW) == words
    assert text.unloaded_note(gone, NOW) == words
    assert text.status_text(snap(state="unloaded", last_unload_reason="idle", unloaded_at=NOW - ago), NOW) \
        == "not loaded"
    assert text.unloaded_note(snap(state="ready", last_unload_reason=None), NOW) == ""


# ---- first run -----------------------------------------------------------------------------------


def test_build_progress_lines() -> None:
    assert text.build_progress("[ 42%] Building CXX object ggml.o") == (42, "Building CXX object ggml.o")
    assert text.build_progress("[100%] installed /x/llama-server") == (100, "installed /x/llama-server")
    assert text.build_progress("[  0%] downloading") == (0, "downloading")
    assert text.build_progress("llama-server build failed: boom") is None
    assert text.build_progress("[ab%] x") is None
    assert text.build_progress("[notes] x") is None


def test_version_text() -> None:
    out = "version: 0.5.0-dev (build 1, commit 0c1e570)\nbuilt with GNU 12.2.0 for Linux x86_64\n"
    assert text.version_text(out) == "0.5.0-dev (build 1, commit 0c1e570)"
    assert text.version_text("llama-server b4500\n") == "llama-server b4500"
    assert text.version_text("") == "(no version printed)"


def test_where_a_model_was_found() -> None:
    assert text.found_where("huggingface", "Qwen/Qwen2.5-GGUF") == "Hugging Face: Qwen/Qwen2.5-GGUF"
    assert text.found_where("ollama", "llama3.2:latest") == "Ollama: llama3.2:latest"
    assert text.found_where("folder", "/home/ann/models/x", "/home/ann") == "Folder: ~/models/x"
    assert text.found_where("folder", "/srv/models", "/home/ann") == "Folder: /srv/models"
    assert text.found_where("lmstudio", "") == "LM Studio"
    assert text.home_relative("/home/annie/x", "/home/ann") == "/home/annie/x"


def test_found_summary() -> None:
    assert text.found_summary(2, 0) == "Found 2 models in the usual places. Tick the ones to add."
    assert text.found_summary(1, 1, 2) == ("Found 2 models in the usual places and 2 chosen folders; "
                                           "1 already has a recipe. Tick the ones to add.")
    assert text.found_summary(0, 3) == "Found 3 models in the usual places; every one already has a recipe."
    assert text.found_summary(0, 0).startswith("No GGUF models found in the usual places.")


def test_import_texts() -> None:
    skipped = ["b: not imported: no cmd", "a: ttl could not be mapped", "config.yaml: globalTTL could not be mapped"]
    assert text.split_import_notes(skipped) == (
        ["b: not imported: no cmd"], ["a: ttl could not be mapped", "config.yaml: globalTTL could not be mapped"])
    assert text.import_headline("llama-swap", 1, 0) == "Imported from llama-swap: 1 recipe created."
    assert text.import_headline("lemonade", 0, 2) == "Imported from Lemonade: no recipe created, 2 models left out."
    assert text.recipes_created_text(["a", "b"]).startswith("Created 2 recipes: a, b.")


def test_engine_words() -> None:
    assert text.engine_needed([]) is True  # first run: the models to come need it
    assert text.engine_needed([snap(backend="command")]) is False
    assert text.engine_needed([snap(backend="command"), snap("q", backend="llamacpp")]) is True
    assert text.engine_needed([snap(backend=None)]) is False  # an unreadable recipe says nothing
    assert text.engine_problem("/x/llama-server", True, None) is None
    assert text.engine_problem("/nope", False, "settings.toml") == (
        "llama-server not found: Siesta is set to use /nope (by settings.toml), "
        "but that is not an executable file, so models cannot load.")
    assert text.engine_problem(None, False, None).startswith("llama-server not found. ")
