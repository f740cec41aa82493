"""Finding GGUF models on disk (app/core/discovery.py) and writing recipes for them.

Every test builds a fake home folder in tmp_path and passes ``home=`` and ``env=``
explicitly, so nothing depends on the real machine.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from app.core.config.recipes import NAME_PATTERN, is_valid_name, read_recipe
from app.core.discovery import (
    FoundModel,
    configured_model_paths,
    create_recipes,
    discover_models,
    recipe_name_for,
)

OLLAMA_DIGEST = "dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"


def gguf(path: Path, size: int = 64) -> Path:
    """A small file that starts with the GGUF magic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * (size - 8))
    return path


def junk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"<html>not a model</html>")
    return path


def hf_repo(hub: Path, repo: str, files: dict[str, int], revisions: tuple[str, ...] = ("rev1",)) -> Path:
    """A hub-cache repo: blobs/<hash> holding each file, snapshots/<rev>/<file> symlinks to them."""
    root = hub / ("models--" + repo.replace("/", "--"))
    for i, (name, size) in enumerate(files.items()):
        blob = gguf(root / "blobs" / f"{i:040x}", size)
        for rev in revisions:
            link = root / "snapshots" / rev / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return root


def ollama_model(models_dir: Path, name: str, tag: str, digest: str = OLLAMA_DIGEST, *, blob: bool = True,
                 namespace: str = "library", host: str = "registry.ollama.ai") -> Path:
    """An Ollama manifest shaped like manifest-llama3.2-latest.json, with its model blob."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": "sha256:" + "3" * 64, "size": 561},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 100},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "9" * 64, "size": 1429},
            {"mediaType": "application/vnd.ollama.image.params", "digest": "sha256:" + "5" * 64, "size": 96},
        ],
    }
    path = models_dir / "manifests" / host / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    (models_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (models_dir / "blobs" / ("sha256-" + "9" * 64)).write_text("{{ .Prompt }}")  # the template layer
    if blob:
        gguf(models_dir / "blobs" / f"sha256-{digest}", 100)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake home with models in every usual place, plus things that must be skipped."""
    home = tmp_path / "fakehome"
    hub = home / ".cache/huggingface/hub"
    # Two revisions of one repo point at the same blob: one model.
    hf_repo(hub, "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            {"qwen2.5-0.5b-instruct-q4_k_m.gguf": 300, "mmproj-qwen-f16.gguf": 50}, ("rev1", "rev2"))
    hf_repo(hub, "TheBloke/Foo-GGUF", {"model.Q4_0.gguf": 200})
    (hub / "datasets--someone--data" / "snapshots" / "r").mkdir(parents=True)
    gguf(hub / "datasets--someone--data" / "snapshots" / "r" / "notamodel.gguf")

    lms = home / ".lmstudio/models"
    for i in (1, 2, 3):
        gguf(lms / f"bartowski/Big-Model-GGUF/Big-Model-Q4_K_M-0000{i}-of-00003.gguf", 1000 * i)
    junk(lms / "bartowski/Big-Model-GGUF/broken.gguf")
    gguf(lms / "lmstudio-community/Gemma-3-1B-GGUF/gemma-3-1b-it-Q8_0.gguf", 120)
    gguf(lms / "lmstudio-community/Gemma-3-1B-GGUF/mmproj-gemma-3-1b-F16.gguf", 40)
    gguf(home / ".cache/lm-studio/models/someone/Tiny-GGUF/tiny-q8.gguf", 90)

    gguf(home / ".cache/llama.cpp/bartowski_Llama-3.2-1B-Instruct-GGUF_Llama-3.2-1B-Instruct-Q4_K_M.gguf", 150)
    (home / ".cache/llama.cpp/something.json").write_text("{}")

    ollama_model(home / ".ollama/models", "llama3.2", "latest")
    return home


def by_name(models: list[FoundModel]) -> dict[str, FoundModel]:
    return {m.name: m for m in models}


def test_finds_models_in_every_usual_place(home: Path) -> None:
    found = by_name(discover_models(home=home, env={}))
    assert found.keys() == {
        "qwen2.5-0.5b-instruct-q4_k_m",
        "foo-model.q4_0",
        "big-model-q4_k_m",
        "gemma-3-1b-it-q8_0",
        "tiny-q8",
        "llama-3.2-1b-instruct-q4_k_m",
        "llama3.2-latest",
    }
    assert found["qwen2.5-0.5b-instruct-q4_k_m"].source == "huggingface"
    assert found["qwen2.5-0.5b-instruct-q4_k_m"].origin == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    assert found["foo-model.q4_0"].source == "huggingface"
    assert found["big-model-q4_k_m"].source == "lmstudio"
    assert found["tiny-q8"].source == "lmstudio"
    llamacpp = found["llama-3.2-1b-instruct-q4_k_m"]
    assert llamacpp.source == "llama.cpp"
    assert llamacpp.origin == "bartowski/Llama-3.2-1B-Instruct-GGUF"
    assert found["big-model-q4_k_m"].origin == "bartowski/Big-Model-GGUF"
    ollama = found["llama3.2-latest"]
    assert ollama.source == "ollama"
    assert ollama.origin == "llama3.2:latest"
    assert ollama.path == home / f".ollama/models/blobs/sha256-{OLLAMA_DIGEST}"
    assert ollama.size == 100
    for model in found.values():
        assert model.path.is_absolute()
        assert is_valid_name(model.name) and len(model.name) <= 64


def test_hub_cache_symlinks_are_reported_once_with_the_snapshot_path(home: Path) -> None:
    found = [m for m in discover_models(home=home, env={}) if m.origin.startswith("Qwen/")]
    assert len(found) == 1  # rev1 and rev2 resolve to the same blob; the mmproj is skipped
    model = found[0]
    assert model.path.parent.parent.name == "snapshots"
    assert model.path.name == "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert model.size == 300


def test_skips_later_shards_projectors_and_files_without_the_magic(home: Path) -> None:
    found = discover_models(home=home, env={})
    names = {m.path.name for m in found}
    assert "Big-Model-Q4_K_M-00001-of-00003.gguf" in names
    assert not any("-00002-of-" in n or "-00003-of-" in n for n in names)
    assert not any("mmproj" in n for n in names)
    assert "broken.gguf" not in names
    assert "notamodel.gguf" not in names  # datasets are not models
    big = by_name(found)["big-model-q4_k_m"]
    assert big.size == 1000 + 2000 + 3000  # all parts of the split model


def test_same_file_in_two_places_is_reported_once(home: Path) -> None:
    extra = home / ".lmstudio/models"  # the user picks a folder that is already scanned
    found = discover_models(home=home, extra_dirs=[extra], env={})
    assert sum(1 for m in found if m.name.startswith("gemma")) == 1
    assert all(m.source != "folder" for m in found)


def test_honours_environment_variables(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    home.mkdir()
    hub = tmp_path / "elsewhere/hub"
    hf_repo(hub, "org/A-GGUF", {"a-q4.gguf": 10})
    hf_home = tmp_path / "hfhome"
    hf_repo(hf_home / "hub", "org/B-GGUF", {"b-q4.gguf": 10})
    gguf(tmp_path / "llamacache/c-q4.gguf")
    ollama_model(tmp_path / "ollama-store", "d", "7b")
    gguf(tmp_path / "xdgcache/llama.cpp/e-q4.gguf")

    env = {"HF_HUB_CACHE": str(hub), "LLAMA_CACHE": str(tmp_path / "llamacache"),
           "OLLAMA_MODELS": str(tmp_path / "ollama-store")}
    assert {m.name for m in discover_models(home=home, env=env)} == {"a-q4", "c-q4", "d-7b"}

    env = {"HF_HOME": str(hf_home), "XDG_CACHE_HOME": str(tmp_path / "xdgcache")}
    assert {m.name for m in discover_models(home=home, env=env)} == {"b-q4", "e-q4"}


def test_xdg_cache_home_moves_the_hub_cache(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    hf_repo(tmp_path / "xdg/huggingface/hub", "org/X-GGUF", {"x-q4.gguf": 10})
    assert [m.name for m in discover_models(home=home, env={"XDG_CACHE_HOME": str(tmp_path / "xdg")})] == ["x-q4"]


def test_extra_dirs_are_walked_with_bounds(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    home.mkdir()
    picked = tmp_path / "picked"
    gguf(picked / "top.gguf")
    gguf(picked / "a/b/nested-q4.gguf")
    gguf(picked / "1/2/3/4/5/6/at-depth-six.gguf")
    gguf(picked / "1/2/3/4/5/6/7/too-deep.gguf")
    gguf(picked / ".hidden/secret.gguf")
    gguf(picked / "UPPER.GGUF")
    (picked / "a/b/loop").symlink_to(picked)  # a symlink loop must end
    (picked / "dangling.gguf").symlink_to(tmp_path / "missing.gguf")
    found = discover_models(home=home, extra_dirs=[picked], env={})
    assert sorted(m.name for m in found) == ["at-depth-six", "nested-q4", "top", "upper"]
    assert {m.source for m in found} == {"folder"}


def test_unreadable_folders_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    picked = tmp_path / "picked"
    gguf(picked / "ok.gguf")
    gguf(picked / "locked/hidden-away.gguf")
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so refuse the way the OS would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover_models(home=tmp_path / "fakehome", extra_dirs=[picked], env={})
    assert [m.name for m in found] == ["ok"]


def test_ollama_manifests_that_name_no_usable_blob_are_skipped(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    store = home / ".ollama/models"
    ollama_model(store, "good", "latest", "a" * 64)
    ollama_model(store, "missing-blob", "latest", "b" * 64, blob=False)
    bad = ollama_model(store, "evil", "latest", "c" * 64)
    bad.write_text(bad.read_text().replace("sha256:" + "c" * 64, "sha256:../../../../etc/passwd"))
    (store / "manifests/registry.ollama.ai/library/notjson").mkdir(parents=True)
    (store / "manifests/registry.ollama.ai/library/notjson/latest").write_text("not json")
    junk(store / "blobs" / ("sha256-" + "d" * 64))
    ollama_model(store, "notgguf", "latest", "d" * 64, blob=False)
    ollama_model(store, "phi", "mini", "e" * 64, namespace="someone")
    found = by_name(discover_models(home=home, env={}))
    assert found.keys() == {"good-latest", "someone-phi-mini"}
    assert found["someone-phi-mini"].origin == "registry.ollama.ai/someone/phi:mini"


def test_two_tags_of_one_blob_are_one_model(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    ollama_model(home / ".ollama/models", "llama3.2", "3b")
    ollama_model(home / ".ollama/models", "llama3.2", "latest")
    assert [m.name for m in discover_models(home=home, env={})] == ["llama3.2-3b"]


def test_names_are_unique_within_a_result(tmp_path: Path) -> None:
    home = tmp_path / "fakehome"
    gguf(tmp_path / "one/model.gguf")
    gguf(tmp_path / "two/model.gguf")
    gguf(tmp_path / "two/MODEL-2.gguf")
    found = discover_models(home=home, extra_dirs=[tmp_path / "one", tmp_path / "two"], env={})
    names = [m.name for m in found]
    assert len(set(names)) == 3
    assert "model" in names


@pytest.mark.parametrize(("text", "expected"), [
    ("Qwen2.5-0.5B-Instruct-Q4_K_M", "qwen2.5-0.5b-instruct-q4_k_m"),
    ("llama3.2:latest", "llama3.2-latest"),
    ("org/repo name (copy)!!", "org-repo-name-copy"),
    ("models--Qwen--Qwen2.5", "models-qwen-qwen2.5"),
    ("...hidden", "hidden"),
    ("--x--", "x"),
    ("日本語モデル", "model"),
    ("", "model"),
    ("a" * 100, "a" * 64),
    ("ab-" * 30, ("ab-" * 30)[:64].rstrip("-")),
])
def test_recipe_name_for(text: str, expected: str) -> None:
    name = recipe_name_for(text)
    assert name == expected
    assert NAME_PATTERN.fullmatch(name) and is_valid_name(name) and len(name) <= 64


def test_create_recipes_writes_recipes_that_parse(home: Path, tmp_path: Path) -> None:
    recipes = tmp_path / "config/recipes"
    found = discover_models(home=home, env={})
    created = create_recipes(found, recipes)
    assert len(created) == len(found)
    for model, path in zip(found, created):
        assert path == recipes / f"{model.name}.toml"
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# Found by `siesta discover` in ")
        recipe = read_recipe(path)
        assert recipe.backend == "llamacpp"
        assert recipe.model == model.path
        assert recipe.unknown_keys == ()
        assert tomllib.loads(text) == {"backend": "llamacpp", "model": str(model.path)}
    ollama = recipes / "llama3.2-latest.toml"
    assert "Ollama" in ollama.read_text().splitlines()[0]


def test_create_recipes_never_overwrites(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    mine = recipes / "tiny.toml"
    mine.write_text('# mine\nbackend = "llamacpp"\nmodel = "/x.gguf"\n')
    (recipes / "tiny-2.toml").symlink_to(tmp_path / "nowhere.toml")  # even a dangling link is kept
    model = gguf(tmp_path / "models/tiny.gguf")
    created = create_recipes([FoundModel("tiny", model, 64, "folder")], recipes)
    assert created == [recipes / "tiny-3.toml"]
    assert mine.read_text() == '# mine\nbackend = "llamacpp"\nmodel = "/x.gguf"\n'
    assert (recipes / "tiny-2.toml").is_symlink()
    assert read_recipe(created[0]).model == model
    # Twice in one call: each gets its own file.
    again = create_recipes([FoundModel("tiny", model, 64, "folder")] * 2, recipes)
    assert again == [recipes / "tiny-4.toml", recipes / "tiny-5.toml"]
    assert not [p for p in recipes.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_create_recipes_escapes_odd_paths(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird \\ dir\nwith newline' / "m'odel #1.gguf"
    gguf(odd)
    found = discover_models(home=tmp_path / "fakehome", extra_dirs=[odd.parent], env={})
    assert [m.name for m in found] == ["m-odel-1"]
    [path] = create_recipes(found, tmp_path / "recipes")
    assert read_recipe(path).model == odd
    first, *rest = path.read_text(encoding="utf-8").splitlines()
    assert first.startswith("# Found by") and "\\n" in first  # the newline stays inside the comment
    assert all(not line.startswith("with newline") for line in rest)


def test_create_recipes_fixes_invalid_names_and_caps_suffixed_names(tmp_path: Path) -> None:
    model = gguf(tmp_path / "m.gguf")
    long = "x" * 64
    created = create_recipes(
        [FoundModel("Bad Name/Here", model, 64, "folder"), FoundModel(long, model, 64, "folder"),
         FoundModel(long, model, 64, "folder")],
        tmp_path / "recipes",
    )
    assert [p.stem for p in created] == ["bad-name-here", long, "x" * 62 + "-2"]
    for path in created:
        read_recipe(path)


def test_configured_model_paths_marks_models_that_have_a_recipe(home: Path, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    found = discover_models(home=home, env={})
    create_recipes(found[:2], recipes)
    (recipes / "broken.toml").write_text("not = [valid")
    configured = configured_model_paths(recipes)
    assert set(configured.values()) == {found[0].name, found[1].name}
    assert os.path.realpath(found[0].path) in configured
    assert os.path.realpath(found[2].path) not in configured
