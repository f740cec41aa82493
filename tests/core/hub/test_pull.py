"""``siesta pull`` against a local fake Hub (tests/fakes/hub.py), never the network: which
files a reference picks (as llama.cpp's ``-hf`` does), the shared cache layout, resuming
across runs, servers that ignore Range or send bad bytes, disk space, gated repos and the
token, the CLI end to end with Ctrl-C, and the pulled model answering through Siesta."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from app.cli.pull import format_duration, progress_line
from app.core.config.recipes import read_recipe
from app.core.hub import download as hub_download
from app.core.hub.choice import ModelRefError, choose, parse_model_ref, quant_options
from app.core.hub.client import FileNotFound, GatedRepo, HubClient, HubFile, HubUnreachable, RepoNotFound
from app.core.hub.download import DownloadCancelled, DownloadFailed, IntegrityError, NotEnoughDiskSpace, download_file
from app.core.hub.pull import RecipeExists, default_model_name, pull
from app.demo_model import write_tiny_model
from tests.fakes.hub import FakeHub
from tests.fakes.windows_fs import refuse_symlinks

ROOT = Path(__file__).resolve().parents[3]
TINY = "acme/Tiny-GGUF"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("models")
    return (write_tiny_model(folder / "a.gguf", seed=0).read_bytes(),
            write_tiny_model(folder / "b.gguf", seed=1).read_bytes())


@pytest.fixture(autouse=True)
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every HF_* place in the test's folder; HF_ENDPOINT never the real Hub; no stored token."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the fake Hub's URL once it runs
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE", "HF_TOKEN_PATH",
                "HUGGINGFACE_HUB_CACHE", "HF_HUB_ENABLE_HF_TRANSFER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub read these at import: its telemetry (GET {HF_ENDPOINT}/api/agent-harnesses)
    # would go to the real Hub, and its token file is in the real home
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    _only_loopback(monkeypatch)
    monkeypatch.setattr(hub_download, "PROGRESS_EVERY", 0.0)
    return tmp_path / "hf-cache"


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No name lookup and no connection beyond this machine, from this process."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN202
        assert host in LOOPBACK or host is None, f"a test tried to look up {host!r}"
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):  # noqa: ANN001, ANN202
        assert not isinstance(address, tuple) or address[0] in LOOPBACK, f"a test tried to reach {address!r}"
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def hub(model_bytes, monkeypatch: pytest.MonkeyPatch):
    a, b = model_bytes
    fake = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    fake.add(TINY, {"tiny-Q4_K_M.gguf": a, "tiny-Q8_0.gguf": b, "README.md": b"# Tiny\n"}, downloads=50)
    fake.add("acme/Big-GGUF", {"big-Q4_K_M-00001-of-00002.gguf": a[:300_000],
                               "big-Q4_K_M-00002-of-00002.gguf": a[300_000:], "big-Q8_0.gguf": b}, downloads=7)
    fake.add("acme/Vision-GGUF", {"vision-Q4_K_M.gguf": a, "vision-Q8_0.gguf": b,
                                  "mmproj-vision-F16.gguf": b"F16 projector" * 100,
                                  "mmproj-vision-Q8_0.gguf": b"Q8 projector" * 100})
    fake.add("acme/Gated-GGUF", {"gated-Q4_K_M.gguf": a}, gated=True, tokens=("hf_good",))
    fake.add("acme/Not-A-Model", {"model.safetensors": b"x"}, tags=("safetensors",))
    yield fake
    fake.stop()


def blobs(cache: Path, repo: str = TINY) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "blobs"


# ----------------------------------------------------------------------------- choice


def files(*names: str, size: int = 10) -> list[HubFile]:
    return [HubFile(n, size, hashlib.sha256(n.encode()).hexdigest()) for n in names]


def names(chosen) -> list[str]:
    return [f.name for f in chosen.model_files]


def test_parse_model_ref_forms_and_errors() -> None:
    assert parse_model_ref("acme/Tiny-GGUF") == parse_model_ref("hf.co/acme/Tiny-GGUF")
    ref = parse_model_ref("acme/Tiny-GGUF:q8_0")
    assert (ref.repo, ref.quant, ref.file) == ("acme/Tiny-GGUF", "q8_0", None)
    ref = parse_model_ref("acme/Tiny-GGUF/sub/tiny-Q8_0.gguf")
    assert (ref.repo, ref.quant, ref.file) == ("acme/Tiny-GGUF", None, "sub/tiny-Q8_0.gguf")
    ref = parse_model_ref("https://huggingface.co/acme/Tiny-GGUF/blob/main/tiny-Q8_0.gguf")
    assert (ref.repo, ref.file, ref.revision) == ("acme/Tiny-GGUF", "tiny-Q8_0.gguf", "main")
    for bad in ("tiny", "acme/", "acme/Tiny-GGUF:", "acme/Tiny/README.md", "acme/Tiny:Q4/x.gguf",
                "a/b/../c.gguf", "acme/Tiny GGUF", ""):
        with pytest.raises(ModelRefError) as info:
            parse_model_ref(bad)
        assert repr(bad) in str(info.value) and "ORG/REPO:QUANT" in str(info.value)


def test_quant_tag_matched_case_insensitively() -> None:
    listing = files("model-Q4_K_M.gguf", "other.q8_0.gguf", "x-IQ4_XS.gguf")
    assert names(choose(listing, quant="q4_k_m")) == ["model-Q4_K_M.gguf"]
    assert names(choose(listing, quant="Q8_0")) == ["other.q8_0.gguf"]
    assert choose(listing, quant="q8_0").quant == "Q8_0"
    with pytest.raises(Exception, match="Q4_XS") as info:  # a tag starts a word: Q4_XS is not IQ4_XS
        choose(listing, quant="Q4_XS")
    assert "IQ4_XS" in str(info.value) and "Q4_K_M" in str(info.value)  # the error lists what there is


def test_default_is_q4_k_m_then_q8_0_then_the_first_model_file() -> None:
    assert names(choose(files("m-Q2_K.gguf", "m-Q8_0.gguf", "m-Q4_K_M.gguf"))) == ["m-Q4_K_M.gguf"]
    assert names(choose(files("m-Q2_K.gguf", "m-Q8_0.gguf"))) == ["m-Q8_0.gguf"]
    assert names(choose(files("README.md", "m-Q2_K.gguf", "m-Q3_K_S.gguf"))) == ["m-Q2_K.gguf"]
    assert choose(files("m-Q2_K.gguf")).quant == "Q2_K"


def test_projectors_importance_matrices_and_draft_heads_are_never_the_model() -> None:
    listing = files("mmproj-Q4_K_M.gguf", "model.imatrix-Q4_K_M.gguf", "mtp-Q4_K_M.gguf",
                    "eagle3-Q4_K_M.gguf", "Model-Q8_0.gguf")
    assert names(choose(listing)) == ["Model-Q8_0.gguf"]
    with pytest.raises(Exception, match="no GGUF model file"):
        choose(files("mmproj-F16.gguf", "imatrix.gguf", "mtp-Q8_0.gguf", "eagle3-Q8_0.gguf"))


def test_every_part_of_a_split_model_is_taken() -> None:
    listing = files("big-Q8_0-00002-of-00003.gguf", "big-Q8_0-00001-of-00003.gguf",
                    "big-Q8_0-00003-of-00003.gguf", "big-Q4_K_M.gguf", size=100)
    chosen = choose(listing, quant="Q8_0")
    assert names(chosen) == [f"big-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert chosen.size == 300
    # naming any part picks the whole model, first part first
    assert names(choose(listing, file="big-Q8_0-00002-of-00003.gguf"))[0] == "big-Q8_0-00001-of-00003.gguf"
    with pytest.raises(Exception, match="part"):
        choose(listing[:2], quant="Q8_0")  # part 3 missing


def test_quant_options_list_each_quant_with_its_parts_and_size() -> None:
    listing = files("big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf", "mmproj-F16.gguf",
                    "big-Q4_K_M.gguf", "README.md", size=100)
    options = quant_options(listing)
    assert [(o.tag, len(o.files), o.size) for o in options] == [("Q4_K_M", 1, 100), ("Q8_0", 2, 200)]
    assert [f.name for f in options[1].files] == ["big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"]


def test_the_closest_mmproj_is_chosen() -> None:
    listing = files("m-Q8_0.gguf", "m-F16.gguf", "mmproj-m-F16.gguf", "mmproj-m-Q8_0.gguf")
    assert choose(listing, quant="Q8_0").mmproj.name == "mmproj-m-Q8_0.gguf"
    assert choose(listing, quant="F16").mmproj.name == "mmproj-m-F16.gguf"
    nested = files("sub/m-Q4_K_M.gguf", "other/mmproj-F16.gguf", "mmproj-root-F16.gguf", "sub/mmproj-sub-F16.gguf")
    assert choose(nested).mmproj.name == "sub/mmproj-sub-F16.gguf"  # same folder first
    assert choose(nested[:3]).mmproj.name == "mmproj-root-F16.gguf"  # then a parent; never a sibling folder
    assert choose(files("m-Q4_K_M.gguf")).mmproj is None


def test_recipe_name_from_repo_and_quant() -> None:
    assert default_model_name("acme/Tiny-GGUF", "Q8_0") == "tiny-q8_0"
    assert default_model_name("bartowski/Qwen_Qwen3-4B-GGUF", "UD-Q4_K_XL") == "qwen_qwen3-4b-ud-q4_k_xl"
    assert default_model_name("acme/Odd Name_gguf", None, "dir/model-00001-of-00002.gguf") == "model"


# ----------------------------------------------------------------------------- the Hub's metadata


def test_repo_info_gives_sizes_and_sha256_and_search_finds_gguf_repos(hub, model_bytes) -> None:
    client = HubClient()  # HF_ENDPOINT points at the fake Hub
    info = client.repo_info(TINY)
    by_name = {f.name: f for f in info.files}
    assert by_name["tiny-Q8_0.gguf"].size == len(model_bytes[1])
    assert by_name["tiny-Q8_0.gguf"].sha256 == hashlib.sha256(model_bytes[1]).hexdigest()
    assert by_name["README.md"].sha256 is None and by_name["README.md"].blob_id
    assert info.commit == hub.repos[TINY].commit and not info.gated
    assert client.repo_info("acme/Gated-GGUF").gated
    found = client.search("GGUF")
    assert [r.id for r in found][:2] == [TINY, "acme/Big-GGUF"]  # most downloaded first
    assert "acme/Not-A-Model" not in [r.id for r in client.search("")]
    assert found[0].downloads == 50 and found[0].updated is not None
    assert any("filter=gguf" in r.path for r in hub.requests)


def test_unknown_repo_file_and_quant_are_clear_errors(hub, paths) -> None:
    with pytest.raises(RepoNotFound, match="acme/Nope"):
        pull("acme/Nope", recipes_dir=paths.recipes_dir)
    with pytest.raises(Exception, match="Q5_K_M.*there are: Q4_K_M, Q8_0"):
        pull(f"{TINY}:Q5_K_M", recipes_dir=paths.recipes_dir)
    with pytest.raises(Exception, match="missing.gguf"):
        pull(f"{TINY}/missing.gguf", recipes_dir=paths.recipes_dir)
    assert not hub.body_requests() and not list(paths.recipes_dir.iterdir())
    # the resolve endpoint's X-Error-Code, when the listing and the files disagree
    client, commit = HubClient(), hub.repos[TINY].commit
    ghost = HubFile("ghost-Q4_K_M.gguf", 10, "0" * 64)
    with pytest.raises(FileNotFound, match="ghost-Q4_K_M.gguf"):
        download_file(client, TINY, commit, ghost)
    with pytest.raises(RepoNotFound, match="acme/Gone"):
        download_file(client, "acme/Gone", commit, ghost)


def test_hub_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HubUnreachable, match=f"127.0.0.1:{port}"):
        HubClient(f"http://127.0.0.1:{port}", token="").repo_info(TINY)


# ----------------------------------------------------------------------------- pulling


def test_pull_fills_the_shared_cache_and_writes_a_recipe(hub, paths, hf_env, model_bytes) -> None:
    seen: list[tuple[int, int]] = []
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir, progress=lambda d, t: seen.append((d, t)))
    commit = hub.repos[TINY].commit
    sha = hashlib.sha256(model_bytes[1]).hexdigest()
    repo_dir = hf_env / "models--acme--Tiny-GGUF"
    assert (repo_dir / "blobs" / sha).read_bytes() == model_bytes[1]
    link = repo_dir / "snapshots" / commit / "tiny-Q8_0.gguf"
    assert link.is_symlink() and os.readlink(link) == f"../../blobs/{sha}"
    assert (repo_dir / "refs" / "main").read_text() == commit
    assert not list((repo_dir / "blobs").glob("*.incomplete"))
    assert (result.name, result.quant, result.created, result.mmproj_path) == ("tiny-q8_0", "Q8_0", True, None)
    assert result.model_path == link and result.recipe_path == paths.recipe_file("tiny-q8_0")
    recipe = read_recipe(result.recipe_path)
    assert recipe.model == link and recipe.args == ()
    assert seen[-1] == (len(model_bytes[1]),) * 2 and all(t == len(model_bytes[1]) for _, t in seen)
    # huggingface_hub (and so llama.cpp's -hf) finds the same file, and fetches nothing again
    assert huggingface_hub.try_to_load_from_cache(TINY, "tiny-Q8_0.gguf", cache_dir=hf_env) == str(link)
    bodies = len(hub.body_requests())
    again = huggingface_hub.hf_hub_download(TINY, "tiny-Q8_0.gguf", cache_dir=hf_env, endpoint=hub.url)
    assert again == str(link) and len(hub.body_requests()) == bodies
    # pulling again downloads nothing and keeps the recipe
    second = pull(f"{TINY}:q8_0", recipes_dir=paths.recipes_dir)
    assert not second.created and second.recipe_path == result.recipe_path
    assert len(hub.body_requests()) == bodies


def test_a_recipe_is_never_overwritten(hub, paths, write_recipe) -> None:
    existing = write_recipe("tiny-q4_k_m", model="/somewhere/else.gguf")
    before = existing.read_text()
    with pytest.raises(RecipeExists, match="--name"):
        pull(TINY, recipes_dir=paths.recipes_dir)
    assert existing.read_text() == before and not hub.body_requests()  # refused before any byte
    result = pull(TINY, recipes_dir=paths.recipes_dir, name="mine")
    assert result.name == "mine" and result.created and result.model_path.name == "tiny-Q4_K_M.gguf"
    with pytest.raises(Exception, match="invalid model name"):
        pull(TINY, recipes_dir=paths.recipes_dir, name="no/slash")


def test_split_model_every_part_downloaded_recipe_points_at_the_first(hub, paths, hf_env, model_bytes) -> None:
    result = pull("acme/Big-GGUF", recipes_dir=paths.recipes_dir)
    assert result.name == "big-q4_k_m" and result.model_path.name == "big-Q4_K_M-00001-of-00002.gguf"
    second = result.model_path.with_name("big-Q4_K_M-00002-of-00002.gguf")
    assert result.model_path.read_bytes() + second.read_bytes() == model_bytes[0]
    assert read_recipe(result.recipe_path).model == result.model_path
    assert not (result.model_path.parent / "big-Q8_0.gguf").exists()


def test_mmproj_downloaded_and_passed_in_the_recipe(hub, paths) -> None:
    result = pull("acme/Vision-GGUF:Q8_0", recipes_dir=paths.recipes_dir)
    assert result.mmproj_path is not None and result.mmproj_path.name == "mmproj-vision-Q8_0.gguf"
    assert result.mmproj_path.read_bytes() == b"Q8 projector" * 100
    assert read_recipe(result.recipe_path).args == ("--mmproj", str(result.mmproj_path))


# ----------------------------------------------------------------------------- robustness


def test_connection_dropped_mid_file_is_resumed_in_a_second_run(hub, paths, hf_env, model_bytes, monkeypatch) -> None:
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", ())  # no retry within the run
    hub.drop_after, hub.drops = 200_000, 1
    with pytest.raises(DownloadFailed, match="run the same command again to resume"):
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    partial = blobs(hf_env) / (hashlib.sha256(model_bytes[1]).hexdigest() + ".incomplete")
    kept = partial.stat().st_size
    assert 0 < kept <= 200_000 and not paths.recipe_file("tiny-q8_0").exists()
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    resumed = hub.body_requests("cdn")[-1]
    assert resumed.headers["Range"] == f"bytes={kept}-" and kept > 0
    assert result.model_path.read_bytes() == model_bytes[1] and not partial.exists()


def test_connection_dropped_once_is_retried_from_where_it_stopped(hub, paths, model_bytes) -> None:
    hub.drop_after, hub.drops = 100_000, 1
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    ranges = [r.headers.get("Range") for r in hub.body_requests("cdn")]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
    assert result.model_path.read_bytes() == model_bytes[1]


def test_a_server_that_ignores_range_starts_over(hub, paths, hf_env, model_bytes, monkeypatch) -> None:
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", ())
    hub.drop_after, hub.drops = 150_000, 1
    with pytest.raises(DownloadFailed):
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    hub.ignore_range = True
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    assert hub.body_requests("cdn")[-1].headers["Range"].startswith("bytes=")  # asked, got a 200
    assert result.model_path.read_bytes() == model_bytes[1]


def test_a_206_from_the_wrong_place_starts_over(hub, paths, model_bytes, monkeypatch) -> None:
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", ())
    hub.drop_after, hub.drops = 150_000, 1
    with pytest.raises(DownloadFailed):
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    monkeypatch.setattr(hub_download, "RETRY_DELAYS", (0.0,))
    hub.bad_content_range = True  # answers 206 from one byte later than asked
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    ranges = [r.headers.get("Range") for r in hub.body_requests("cdn")]
    assert ranges[-2].startswith("bytes=") and ranges[-1] is None  # refused, then from zero
    assert result.model_path.read_bytes() == model_bytes[1]


def test_a_sha256_mismatch_is_refused_and_removed(hub, paths, hf_env) -> None:
    hub.corrupt = True
    with pytest.raises(IntegrityError, match="damaged"):
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    folder = hf_env / "models--acme--Tiny-GGUF"
    assert list((folder / "blobs").iterdir()) == []  # no blob, no partial
    assert not (folder / "snapshots").exists() and not paths.recipe_file("tiny-q8_0").exists()


def test_too_little_disk_is_refused_before_any_byte(hub, paths, monkeypatch, model_bytes) -> None:
    asked: list[Path] = []

    def tiny_disk(path: Path) -> int:
        asked.append(path)
        return 1000

    monkeypatch.setattr(hub_download, "free_space", tiny_disk)
    with pytest.raises(NotEnoughDiskSpace) as info:
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    assert "618 KB" in str(info.value) and "1000 B is free" in str(info.value)
    assert info.value.needed == len(model_bytes[1]) and asked
    assert not hub.body_requests() and not paths.recipe_file("tiny-q8_0").exists()


def test_without_symlink_rights_the_snapshot_is_a_hard_link_to_the_blob(hub, paths, hf_env, model_bytes,
                                                                       monkeypatch) -> None:
    """Windows without the symlink privilege (os.symlink raises ERROR_PRIVILEGE_NOT_HELD, as
    tests/fakes/windows_fs.py has it): the snapshot entry is a hard link to the blob, which
    NTFS allows any user, so the bytes are on disk once, and the disk check asks for no more
    than the download itself."""
    monkeypatch.setattr(os, "symlink", refuse_symlinks)
    size = len(model_bytes[1])
    monkeypatch.setattr(hub_download, "free_space", lambda path: size)  # room for one copy, not two
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    blob = blobs(hf_env) / hashlib.sha256(model_bytes[1]).hexdigest()
    link = result.model_path
    assert not link.is_symlink() and os.path.samefile(link, blob) and blob.stat().st_nlink == 2
    assert link.read_bytes() == model_bytes[1] and read_recipe(result.recipe_path).model == link
    assert huggingface_hub.try_to_load_from_cache(TINY, "tiny-Q8_0.gguf", cache_dir=hf_env) == str(link)
    bodies = len(hub.body_requests())
    again = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    assert not again.created and len(hub.body_requests()) == bodies and os.path.samefile(link, blob)


def no_hard_links(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
    """An ``os.link`` on a disk without hard links (FAT32, exFAT; Linux's vfat says EPERM)."""
    raise OSError(errno.EPERM, "Operation not permitted", str(args[0]) if args else None)


def test_where_nothing_can_be_linked_the_copy_is_counted_in_the_disk_check(hub, paths, hf_env, model_bytes,
                                                                          monkeypatch) -> None:
    """Neither a symlink nor a hard link can be made (Windows without the privilege, on a FAT32
    or exFAT disk): each snapshot entry is a copy of its blob, and the disk check counts that
    copy before any byte is fetched."""
    monkeypatch.setattr(os, "symlink", refuse_symlinks)
    monkeypatch.setattr(os, "link", no_hard_links)
    size = len(model_bytes[1])
    monkeypatch.setattr(hub_download, "free_space", lambda path: 2 * size - 1)
    with pytest.raises(NotEnoughDiskSpace) as info:
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    assert info.value.needed == 2 * size and "for copies" in str(info.value)
    assert not hub.body_requests() and not list(blobs(hf_env).parent.glob(".link-probe*"))
    monkeypatch.setattr(hub_download, "free_space", lambda path: 2 * size)
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    blob = blobs(hf_env) / hashlib.sha256(model_bytes[1]).hexdigest()
    assert not result.model_path.is_symlink() and not os.path.samefile(result.model_path, blob)
    assert result.model_path.read_bytes() == blob.read_bytes() == model_bytes[1]
    monkeypatch.setattr(hub_download, "free_space", lambda path: 0)  # the copy is in place: nothing more needed
    assert not pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir).created


def test_cancel_keeps_the_partial_file_for_the_next_run(hub, paths, hf_env, model_bytes) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > 0:
            cancel.set()

    with pytest.raises(DownloadCancelled) as info:
        pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir, progress=progress, cancel=cancel)
    assert info.value.partial is not None and 0 < info.value.partial.stat().st_size < len(model_bytes[1])
    result = pull(f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    assert hub.body_requests("cdn")[-1].headers["Range"] != "bytes=0-"
    assert result.model_path.read_bytes() == model_bytes[1]


def test_two_downloads_of_one_file_at_once_fetch_it_once(hub, model_bytes) -> None:
    hub.chunk_delay = 0.005
    client, commit = HubClient(), hub.repos[TINY].commit
    file = next(f for f in client.repo_info(TINY).files if f.name == "tiny-Q8_0.gguf")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(download_file(client, TINY, commit, file)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results[0] == results[1] and results[0].read_bytes() == model_bytes[1]
    assert len(hub.body_requests("cdn")) == 1  # the second waited on the lock, then found the blob


# ----------------------------------------------------------------------------- auth


def test_a_gated_repo_says_what_to_do(hub, paths) -> None:
    with pytest.raises(GatedRepo) as info:
        pull("acme/Gated-GGUF", recipes_dir=paths.recipes_dir)
    message = str(info.value)
    assert f"{hub.url}/acme/Gated-GGUF" in message and "accept" in message
    assert "hf auth login" in message and "HF_TOKEN" in message
    with pytest.raises(GatedRepo, match="no access"):
        pull("acme/Gated-GGUF", recipes_dir=paths.recipes_dir, client=HubClient(token="hf_other"))
    assert not list(paths.recipes_dir.iterdir())


def test_the_token_goes_to_the_hub_never_to_the_redirect_host(hub, paths, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_good")  # the token huggingface_hub finds
    assert HubClient().token == "hf_good"
    result = pull("acme/Gated-GGUF", recipes_dir=paths.recipes_dir)
    assert result.created
    resolve = [r for r in hub.body_requests("hub")]
    cdn = hub.body_requests("cdn")
    assert resolve and all(r.headers.get("Authorization") == "Bearer hf_good" for r in resolve)
    assert cdn and all("Authorization" not in r.headers for r in cdn)
    assert all(r.headers.get("Authorization") == "Bearer hf_good" for r in hub.requests if r.server == "hub")


def test_the_token_stored_by_login_is_used(hub) -> None:
    Path(huggingface_hub.constants.HF_TOKEN_PATH).write_text("hf_stored\n")
    assert HubClient().token == "hf_stored"
    assert HubClient(token="").token is None


# ----------------------------------------------------------------------------- the command


def _siesta(hub: FakeHub, tmp_path: Path, *args: str, **kwargs):
    env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "app", *args, "--config-dir", str(tmp_path / "config")],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_cli_pull_end_to_end(hub, tmp_path, hf_env) -> None:
    proc = _siesta(hub, tmp_path, "pull", f"{TINY}:Q8_0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert 'use the model name "tiny-q8_0" in requests' in out
    assert (tmp_path / "config" / "recipes" / "tiny-q8_0.toml").is_file()
    assert str(hf_env) in out
    proc = _siesta(hub, tmp_path, "pull", f"{TINY}:Q8_0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "(already there)" in out and "already in the cache" in err
    proc = _siesta(hub, tmp_path, "pull", "acme/Nope")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "siesta: no model repository acme/Nope" in err
    proc = _siesta(hub, tmp_path, "pull", "not a model")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "'not a model'" in err


def test_cli_ctrl_c_keeps_the_partial_file_and_the_next_run_resumes(hub, tmp_path, hf_env, model_bytes) -> None:
    hub.chunk_delay = 0.05  # about 2 s for the file
    proc = _siesta(hub, tmp_path, "pull", f"{TINY}:Q8_0")
    partial = blobs(hf_env) / (hashlib.sha256(model_bytes[1]).hexdigest() + ".incomplete")
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    kept = partial.stat().st_size
    assert 0 < kept < len(model_bytes[1])
    hub.chunk_delay = 0
    proc = _siesta(hub, tmp_path, "pull", f"{TINY}:Q8_0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert hub.body_requests("cdn")[-1].headers["Range"] == f"bytes={kept}-"


def test_progress_line_shows_speed_and_time_left() -> None:
    line = progress_line(50 * 2**20, 100 * 2**20, 10 * 2**20)
    assert " 50%" in line and "50 MB / 100 MB" in line and "10 MB/s" in line and "0:05 left" in line
    assert format_duration(3723) == "1:02:03"


def test_other_commands_do_not_import_the_hub_code() -> None:
    code = ("import sys, app.cli\n"
            "for c in ('ps', 'load', 'unload', 'timeout', 'demo', 'discover', 'import', 'engine'):\n"
            "    app.cli.command_handler(c)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('huggingface_hub', 'httpx', 'app.core.hub.client',"
            " 'app.cli.pull'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- through Siesta


@pytest.mark.llama
@pytest.mark.timeout(90)
async def test_the_pulled_model_answers_a_chat_through_siesta(hub, paths, front_door) -> None:
    result = await asyncio.to_thread(pull, f"{TINY}:Q8_0", recipes_dir=paths.recipes_dir)
    manager, http, url = await front_door()
    body = {"model": result.name, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        answer = await resp.json()
    assert resp.status == 200, answer
    assert isinstance(answer["choices"][0]["message"]["content"], str)


@pytest.mark.llama
@pytest.mark.timeout(60)
def test_llama_server_hf_finds_the_pulled_file_and_fetches_nothing(hub, paths, hf_env) -> None:
    from tests.conftest import LLAMA_SERVER

    result = pull(TINY, recipes_dir=paths.recipes_dir)  # no quant: Q4_K_M, as -hf picks
    assert result.model_path.name == "tiny-Q4_K_M.gguf"
    bodies = len(hub.body_requests())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CACHE"}  # LLAMA_CACHE would come first
    proc = subprocess.Popen([str(LLAMA_SERVER), "-hf", TINY, "--host", "127.0.0.1", "--port", str(port),
                             "-t", "1", "-c", "256"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    healthy = False
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    healthy = conn.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
            time.sleep(0.1)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert healthy, output[-2000:]
    assert any("/tree/" in r.path for r in hub.requests)  # llama.cpp asked the fake Hub for the listing,
    assert len(hub.body_requests()) == bodies  # and found the file in the cache: not one byte fetched again
