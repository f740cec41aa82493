"""A release zip never writes outside the engine folder (issue 26, item 6): links are made
only after every file is written, each checked where it really lands (chains, links through
links, in any order); nothing is written through a link, whether the zip made it or it was
already in the folder (the CUDA runtime unpacks beside the binary); and a release's
``tag_name``, which becomes the engine's folder name, must be ``bNNNN``."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.core.engine import install as ei
from app.core.engine import release as er
from app.core.engine.install import InstallError, install
from app.core.engine.release import Platform, ReleaseError
from tests.fakes.releases import FakeReleases

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="links in a zip are made on POSIX"),
              pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")]

Link = tuple[str, str]


def link(target: str) -> Link:
    return ("symlink", target)


def zip_of(entries: list[tuple[str, bytes | Link]]) -> bytes:
    """A zip of (name, bytes or link(target)) in this order; a name may come twice."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, value in entries:
            info = zipfile.ZipInfo(name)
            if isinstance(value, tuple):
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                data = value[1].encode()
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                data = value
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder of this test's own (tmp_path also holds the isolated home)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def dest(work: Path) -> Path:
    """The destination, three folders down, so what escapes has somewhere to land."""
    out = work / "a" / "b" / "out"
    out.mkdir(parents=True)
    return out


def extract(work: Path, dest: Path, entries: list[tuple[str, Any]]) -> None:
    archive = work / "release.zip"
    archive.write_bytes(zip_of(entries))
    ei.safe_extract(archive, dest)


def written_outside(work: Path, dest: Path) -> list[str]:
    """Every file or link under work that is not under dest (nor the archive)."""
    found = []
    for root, dirs, files in os.walk(work):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_relative_to(dest) or path.name.startswith("release.") or path in (dest.parent, dest.parent.parent):
                continue
            found.append(str(path.relative_to(work)))
    return found


# ---- links made by the zip ------------------------------------------------------------------

def test_the_issue_zip_writes_nothing_above_the_destination(work: Path, dest: Path) -> None:
    """``x -> .`` makes ``x/x`` the destination itself, so ``x/x/lnk -> ../..`` passes a
    check of its text and points two folders up; a file under it landed there."""
    with pytest.raises(InstallError, match="refused"):
        extract(work, dest, [("x", link(".")), ("x/x/lnk", link("../..")),
                                 ("x/x/lnk/ESCAPED.txt", b"escaped")])
    assert not (work / "a" / "ESCAPED.txt").exists()
    assert written_outside(work, dest) == []


@pytest.mark.parametrize("entries", [
    pytest.param([("x", link(".")), ("y", link("x/.."))], id="through a link to the folder"),
    pytest.param([("y", link("x/..")), ("x", link("."))], id="through a link made after it"),
    pytest.param([("d", link(".")), ("e", link("d/d/d/../f")), ("f", link(".."))], id="chain ending out"),
    pytest.param([("a", link("b")), ("b", link("c/..")), ("c", link(".")), ("lib", link("a/.."))],
                 id="link to a link to a link"),
    pytest.param([("sub/deep/file", b"x"), ("sub/x", link("..")), ("sub/out", link("x/.."))],
                 id="from a real folder, through a link up"),
])
def test_a_chain_of_links_that_ends_outside_is_refused_and_removed(work: Path, dest: Path,
                                                                    entries: list[tuple[str, Any]]) -> None:
    with pytest.raises(InstallError, match="refused"):
        extract(work, dest, entries)
    # no link is left that leads out of the destination
    for path in dest.rglob("*"):
        if path.is_symlink():
            assert Path(os.path.realpath(path)).is_relative_to(os.path.realpath(dest)), path


def test_a_file_under_a_link_of_the_same_zip_is_refused(work: Path, dest: Path) -> None:
    """Even when the link stays inside: no release needs it, and it is how a zip writes where
    its names do not say."""
    (dest / "lib").mkdir()
    with pytest.raises(InstallError, match="written through the link"):
        extract(work, dest, [("bin", link("lib")), ("bin/libggml.so", b"lib")])
    assert list((dest / "lib").iterdir()) == []


def test_a_link_replaced_by_a_file_is_a_file(work: Path, dest: Path) -> None:
    """The later entry wins, as in any unzip, and the file is never written through the link."""
    extract(work, dest, [("x", link(".")), ("lnk", link("x/../outside.txt")), ("lnk", b"file")])
    assert not (dest.parent / "outside.txt").exists()
    assert not (dest / "lnk").is_symlink() and (dest / "lnk").read_bytes() == b"file"
    assert written_outside(work, dest) == []


def test_a_file_replaced_by_a_link_is_a_link(work: Path, dest: Path) -> None:
    extract(work, dest, [("libggml.so.1", b"lib"), ("libggml.so", b"old"), ("libggml.so", link("libggml.so.1"))])
    assert os.readlink(dest / "libggml.so") == "libggml.so.1" and (dest / "libggml.so").read_bytes() == b"lib"


def test_the_links_a_release_holds_are_made(work: Path, dest: Path) -> None:
    """A macOS release: versioned libraries, a folder link, links to links."""
    extract(work, dest, [
        ("build/bin/llama-server", b"#!server"),
        ("build/bin/libllama.0.0.1.dylib", b"lib"),
        ("build/bin/libllama.0.dylib", link("libllama.0.0.1.dylib")),
        ("build/bin/libllama.dylib", link("libllama.0.dylib")),
        ("build/Current", link("bin")),
        ("build/lib", link("Current/libllama.dylib")),
    ])
    assert (dest / "build" / "lib").read_bytes() == b"lib"
    assert (dest / "build" / "Current" / "llama-server").read_bytes() == b"#!server"
    assert written_outside(work, dest) == []


def test_the_same_links_in_a_tar_are_refused(work: Path, dest: Path) -> None:
    """A tar goes through tarfile's "data" filter, which follows the links already written."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, target in (("x", "."), ("x/x/lnk", "../..")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        info = tarfile.TarInfo("x/x/lnk/ESCAPED.txt")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"escaped"))
    archive = work / "release.tar.gz"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(InstallError, match="refused"):
        ei.safe_extract(archive, dest)
    assert not (work / "a" / "ESCAPED.txt").exists()


# ---- links already in the destination (a second archive, beside the binary) ----------------

def test_a_file_is_never_written_through_a_link_already_there(work: Path, dest: Path) -> None:
    (dest / "cudart64_12.dll").symlink_to("../../victim.txt")
    extract(work, dest, [("cudart64_12.dll", b"runtime")])
    assert not (work / "a" / "victim.txt").exists()
    assert not (dest / "cudart64_12.dll").is_symlink() and (dest / "cudart64_12.dll").read_bytes() == b"runtime"


def test_a_folder_link_already_there_that_leads_out_is_refused(work: Path, dest: Path) -> None:
    (work / "elsewhere").mkdir()
    (dest / "sub").symlink_to(work / "elsewhere")
    with pytest.raises(InstallError, match="refused"):
        extract(work, dest, [("sub/deeper/file.dll", b"x")])
    assert list((work / "elsewhere").iterdir()) == []


def test_a_folder_link_already_there_that_stays_inside_is_followed(work: Path, dest: Path) -> None:
    (dest / "real").mkdir()
    (dest / "alias").symlink_to("real")
    extract(work, dest, [("alias/file.dll", b"x")])
    assert (dest / "real" / "file.dll").read_bytes() == b"x"


# ---- the release's tag is the engine's folder name --------------------------------------------

@pytest.mark.parametrize("tag", ["../../escaped", "/tmp/siesta-abs", "..\\..\\escaped", "b1/../../x", "b1 ", "b١٢",
                                 "", "latest"])
def test_a_tag_that_is_not_bNNNN_is_refused(tag: str) -> None:
    with pytest.raises(ReleaseError, match="not a llama.cpp release tag"):
        er._release({"tag_name": tag, "assets": []})


@pytest.mark.parametrize("tag", ["../../escaped", "/tmp/siesta-abs-tag", "..\\..\\escaped"])
def test_install_refuses_a_hostile_tag_from_the_api(work: Path, monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    fake = FakeReleases().start()
    try:
        script = b'#!/bin/sh\necho "version: 1"\n'
        fake.add("b5", {"llama-b5-bin-ubuntu-x64.zip": zip_of([("llama-server", script)])})
        served = fake.release_json
        monkeypatch.setattr(fake, "release_json", lambda release: {**served(release), "tag_name": tag})
        with pytest.raises(ReleaseError, match="not a llama.cpp release tag"):
            install(work / "data", fake.url, tag="latest", backend="cpu", plat=Platform("linux", "x64"),
                    no_verify=True)
    finally:
        fake.stop()
    assert not Path("/tmp/siesta-abs-tag-cpu").exists()
    assert [p.name for p in work.iterdir()] in ([], ["data"])
    assert [p.name for p in (work / "data").rglob("*")] in ([], ["engines"])


def test_the_list_of_releases_skips_a_hostile_tag() -> None:
    fake = FakeReleases().start()
    try:
        fake.add("b7", {})
        fake.add("b6", {})
        served = fake.release_json
        fake.release_json = lambda release: {**served(release), "tag_name": "../x" if release.tag == "b7" else release.tag}
        assert [r.tag for r in er.list_releases(fake.url)] == ["b6"]
    finally:
        fake.stop()
