"""Which prebuilt llama-server to install: llama.cpp's official releases, read from the
GitHub releases API (or a mirror: the ``engine_releases_url`` setting), and the asset for
this computer picked by pattern, never by a fixed name (version parts change between
releases).

* :func:`fetch_release`: ``/releases/tags/TAG`` or ``/releases/latest``; :func:`list_releases`.
* :func:`pick_assets`: the archive for this OS, CPU architecture and backend, and for CUDA
  the matching ``cudart`` archive; :class:`NoBuild` when the release has none (the caller
  prints :func:`source_build_command`).
* :func:`expected_digest`: the sha256 an asset must have, from the digests pinned in the
  repository (``resources/engine-digests.json``) first, else the API's ``digest``.
* :func:`detect_backend`: ``--backend auto`` with injectable probes, and a reason in words.
* :func:`cuda_driver_version`: the newest CUDA version the NVIDIA driver supports, through
  NVML (``nvmlSystemGetCudaDriverVersion_v2``: 12080 -> ``"12.8"``); :func:`pick_assets`
  asks it when choosing among CUDA builds and no version is given.

No Qt, no event loop: the CLI and the app's install thread call this.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # httpx costs 7 MB and 30 ms: imported when a download starts
    import httpx


__all__ = [
    "DEFAULT_TAG", "DEFAULT_RELEASES_URL", "BACKENDS", "Asset", "Release", "Choice", "Platform",
    "ReleaseError", "Offline", "NoBuild", "fetch_release", "list_releases", "pick_assets",
    "pinned_digests", "expected_digest", "detect_backend", "probe_gpus", "Gpu", "tag_number", "source_build_command", "current_platform",
    "cuda_driver_version",
]

# The release this Siesta version installs unless ``--tag`` says otherwise, so every install
# gets the same build: b10221 (commit 815a2a5915f2, August 2026), the tag LLamaSharp pinned
# and tested on Windows and Linux, CUDA and Vulkan (https://github.com/SciSharp/LLamaSharp/pull/1414).
# Linux CUDA archives arrived in later releases (llama.cpp #28186): ``--tag latest`` gets them.
# Its digests belong in resources/engine-digests.json once fetched from a machine with access.
DEFAULT_TAG = "b10221"
DEFAULT_RELEASES_URL = "https://api.github.com/repos/ggml-org/llama.cpp"
BACKENDS = ("cpu", "vulkan", "cuda", "rocm", "metal")
TIMEOUT = 30.0
_TAG = re.compile(r"b[0-9]{1,9}")
"""A llama.cpp release tag; also the start of an engine's folder name, so nothing else passes."""


class ReleaseError(Exception):
    """The release or its assets cannot be used; the message says why."""


class Offline(ReleaseError):
    """The releases API cannot be reached."""


class NoBuild(ReleaseError):
    """The release has no build for this OS, architecture and backend."""

    def __init__(self, message: str, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    size: int
    digest: str | None  # "sha256:<hex>" as the API gives it, or None


@dataclass(frozen=True)
class Release:
    tag: str
    assets: tuple[Asset, ...]


@dataclass(frozen=True)
class Platform:
    system: str  # "linux", "darwin", "windows"
    machine: str  # "x64", "arm64"


@dataclass(frozen=True)
class Choice:
    """What to download for one backend: the archive and, for CUDA, its runtime."""

    release: Release
    backend: str
    asset: Asset
    cudart: Asset | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def assets(self) -> list[Asset]:
        return [self.asset] + ([self.cudart] if self.cudart else [])


def current_platform(system: str | None = None, machine: str | None = None) -> Platform:
    """This computer (or the given ``platform.system()``/``machine()`` values) in release terms."""
    system = (system or _platform.system()).lower()
    machine = (machine or _platform.machine()).lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return Platform(system, arch)


# ---- the API ----------------------------------------------------------------------------

def _get(url: str, client: httpx.Client | None) -> Any:
    import httpx

    headers = {"Accept": "application/vnd.github+json", "User-Agent": "siesta"}
    try:
        if client is None:
            with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as own:
                response = own.get(url, headers=headers)
        else:
            response = client.get(url, headers=headers)
    except httpx.TransportError as exc:
        raise Offline(f"cannot reach {url}: {exc}") from None
    if response.status_code == 404:
        raise ReleaseError(f"{url}: no such release (404)")
    if response.status_code != 200:
        raise ReleaseError(f"{url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ReleaseError(f"{url}: the answer is not JSON") from None


def _release(data: Any) -> Release:
    """A release as the API describes it. Its ``tag_name`` becomes an engine's folder name,
    so one that is not ``bNNNN`` (``../x``, an absolute path, ``..\\x`` on Windows) is refused."""
    if not isinstance(data, dict) or not isinstance(data.get("tag_name"), str):
        raise ReleaseError("the releases API answered without a tag_name")
    if not _TAG.fullmatch(data["tag_name"]):
        raise ReleaseError(f"the releases API answered with the tag {data['tag_name'][:80]!r}, "
                           "not a llama.cpp release tag (bNNNN): refused")
    assets = []
    for raw in data.get("assets") or []:
        try:
            assets.append(Asset(str(raw["name"]), str(raw["browser_download_url"]), int(raw["size"]),
                                raw.get("digest") or None))
        except (KeyError, TypeError, ValueError):
            continue
    return Release(data["tag_name"], tuple(assets))


def fetch_release(base_url: str, tag: str = DEFAULT_TAG, client: httpx.Client | None = None) -> Release:
    """The release ``tag`` (``bNNNN``) or ``latest``; :class:`Offline` without network."""
    base = base_url.rstrip("/")
    if tag == "latest":
        return _release(_get(f"{base}/releases/latest", client))
    if not _TAG.fullmatch(tag):
        raise ReleaseError(f"not a llama.cpp release tag: {tag!r} (bNNNN or latest)")
    return _release(_get(f"{base}/releases/tags/{tag}", client))


def list_releases(base_url: str, client: httpx.Client | None = None) -> list[Release]:
    """The newest releases, as the API lists them (those tagged bNNNN)."""
    data = _get(base_url.rstrip("/") + "/releases", client)
    out = []
    for item in data if isinstance(data, list) else []:
        try:
            out.append(_release(item))
        except ReleaseError:
            continue  # not a release Siesta could install (another tag scheme, a broken entry)
    return out


def tag_number(tag: str) -> int:
    """``b6000`` -> 6000 (-1 for anything else), to compare releases."""
    return int(tag[1:]) if _TAG.fullmatch(tag) else -1


# ---- picking the asset ------------------------------------------------------------------

_ARCHIVE = r"\.(?:tar\.gz|tgz|zip)"


def _patterns(backend: str, plat: Platform) -> list[str]:
    """Regexes for the asset names of one backend on one platform, best first."""
    arch = re.escape(plat.machine)
    if plat.system == "linux":
        os_part = "ubuntu"
        kinds = {"cpu": [""], "vulkan": ["vulkan-"], "rocm": [r"rocm-[\d.]+-", "hip-"],
                 "cuda": [r"cuda-(?P<cuda>[\d.]+x?)-"], "metal": []}
    elif plat.system == "darwin":
        os_part = "macos"
        kinds = {"cpu": [""], "metal": [""] if plat.machine == "arm64" else []}
    elif plat.system == "windows":
        os_part = "win"
        kinds = {"cpu": ["cpu-"], "vulkan": ["vulkan-"], "cuda": [r"cuda-(?P<cuda>[\d.]+x?)-"],
                 "rocm": ["hip-radeon-", r"rocm-[\d.]+-"], "metal": []}
    else:
        return []
    return [rf"llama-b\d+-bin-{os_part}-{kind}{arch}{_ARCHIVE}" for kind in dict.fromkeys(kinds.get(backend, []))]


def _cuda_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def pick_assets(release: Release, backend: str, plat: Platform, *, cuda_driver: str | None = None,
                probe_driver: bool = False) -> Choice:
    """The archive for ``backend`` on ``plat`` (and the ``cudart`` archive for CUDA).

    Among several CUDA builds, the newest one the driver supports (``cuda_driver`` such as
    ``"12.4"``; when None and the release has more than one CUDA build, asked of this
    computer's driver through NVML, :func:`cuda_driver_version`), else the oldest (the
    widest driver support)."""
    if backend not in BACKENDS:
        raise ReleaseError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    where = f"{plat.system} {plat.machine}"
    for pattern in _patterns(backend, plat):
        found = [(a, m) for a in release.assets if (m := re.fullmatch(pattern, a.name))]
        if not found:
            continue
        if backend != "cuda":
            return Choice(release, backend, found[0][0])
        found.sort(key=lambda am: _cuda_key(am[1].group("cuda")))
        probed = probe_driver and cuda_driver is None and len(found) > 1  # only installs ask this machine
        if probed:
            cuda_driver = cuda_driver_version()
        usable = [am for am in found if cuda_driver is None
                  or _cuda_key(am[1].group("cuda"))[:1] <= _cuda_key(cuda_driver)[:1]]
        asset, match = (usable[-1] if usable and cuda_driver else found[0])
        version = match.group("cuda")
        major = version.split(".")[0]
        cudarts = [a for a in release.assets if a.name.startswith("cudart-") and plat.machine in a.name
                   and ("win" if plat.system == "windows" else "ubuntu") in a.name and "cuda-" in a.name]
        exact = [a for a in cudarts if f"cuda-{version}-" in a.name]
        same_major = [a for a in cudarts if re.search(rf"cuda-{major}[.\-x]", a.name)]
        cudart = (exact or same_major or [None])[0]
        notes: tuple[str, ...] = () if cudart else (f"{release.tag} has no cudart archive for CUDA {version}: "
                                                    "the CUDA runtime must be installed on this computer",)
        if cuda_driver is not None:
            how = "NVIDIA driver (NVML)" if probed else "driver"
            notes += (f"the {how} supports CUDA {cuda_driver}: the CUDA {version} build" if usable else
                      f"the {how} supports CUDA {cuda_driver}, older than every CUDA build of {release.tag}: "
                      f"the CUDA {version} build may not run until the driver is updated",)
        return Choice(release, backend, asset, cudart, notes)
    raise NoBuild(f"llama.cpp {release.tag} has no prebuilt {backend} build for {where}", backend)


# ---- digests ----------------------------------------------------------------------------

def _digests_file() -> Path | None:
    try:
        installed = Path(str(resources.files("app") / "resources" / "engine-digests.json"))
        if installed.is_file():
            return installed
    except (ModuleNotFoundError, TypeError):
        pass
    source = Path(__file__).resolve().parents[3] / "resources" / "engine-digests.json"
    return source if source.is_file() else None


def pinned_digests(path: Path | None = None) -> dict[str, dict[str, str]]:
    """``{tag: {asset name: "sha256:<hex>"}}`` from the repository's digests file ({} if none)."""
    path = path or _digests_file()
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    tags = data.get("tags", data) if isinstance(data, dict) else {}
    return {tag: dict(assets) for tag, assets in tags.items() if isinstance(assets, dict)}


def _hex(digest: str | None) -> str | None:
    if not digest:
        return None
    algo, _, value = digest.partition(":")
    if algo.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return None
    return value.lower()


def expected_digest(tag: str, asset: Asset, pinned: dict[str, dict[str, str]] | None = None) -> tuple[str | None, str]:
    """The sha256 hex ``asset`` must have and where it comes from (``"pinned"``, ``"api"``).

    A pinned digest wins; one the API contradicts is refused (ReleaseError). ``(None, "none")``
    when neither is known: the caller refuses unless told not to verify."""
    pinned = pinned_digests() if pinned is None else pinned
    mine = _hex(pinned.get(tag, {}).get(asset.name))
    theirs = _hex(asset.digest)
    if mine and theirs and mine != theirs:
        raise ReleaseError(f"{asset.name}: the API's digest {theirs} is not the one pinned for {tag} ({mine})")
    if mine:
        return mine, "pinned"
    if theirs:
        return theirs, "api"
    return None, "none"


# ---- --backend auto ---------------------------------------------------------------------

@dataclass(frozen=True)
class Gpu:
    name: str
    kind: str  # the driver: "nvidia", "amdgpu", "i915", ...
    vram: int | None = None
    via: str = "sysfs"  # how it was found: "NVML", "sysfs" or (Windows) "DXGI"
    cuda_driver: str | None = None  # NVIDIA: the newest CUDA version its driver supports ("12.8"), from NVML


def _nvml_errors(nvml: Any) -> tuple[type[BaseException], ...]:
    error = getattr(nvml, "NVMLError", None)
    return ((error,) if isinstance(error, type) and issubclass(error, BaseException) else ()) + (OSError,)


def cuda_driver_version(nvml: Any = None) -> str | None:
    """The newest CUDA version this computer's NVIDIA driver supports, as NVML says it
    (``nvmlSystemGetCudaDriverVersion_v2``, else ``nvmlSystemGetCudaDriverVersion``: an int
    such as 12080) in release terms (``"12.8"``); None without NVML (``nvidia-ml-py`` not
    installed, no NVIDIA driver) or when it does not say. ``nvml``: the ``pynvml`` module
    (imported when None) or a fake with the same functions."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found, no-redef]
        except ImportError:
            return None
    errors = _nvml_errors(nvml)
    try:
        nvml.nvmlInit()
    except errors:
        return None
    try:
        for getter in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
            if not hasattr(nvml, getter):
                continue
            try:
                value = int(getattr(nvml, getter)())
            except (*errors, TypeError, ValueError):
                continue
            if value > 0:
                return f"{value // 1000}.{value % 1000 // 10}"
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except errors:
            pass


def probe_gpus(**probes: Any) -> list[Gpu]:
    """This computer's GPUs through this OS's reader (:class:`GpuMemory`: NVML and
    /sys/class/drm on Linux, DXGI on Windows; tests pass ``nvml=`` a fake and ``root=`` a sysfs
    tree); an NVIDIA GPU found through NVML also carries the CUDA version its driver supports."""
    from app.core.memory.gpus import GpuMemory

    probe = GpuMemory(**probes)
    try:
        devices = probe.devices()
    finally:
        probe.close()
    nvml_found = any(d.kind == "nvidia" and d.total is not None for d in devices)
    driver = cuda_driver_version(probes.get("nvml")) if nvml_found and probes.get("nvml", True) else None
    return [Gpu(d.name, d.kind, d.total, _found_via(d),
                driver if d.kind == "nvidia" else None) for d in devices]


def _found_via(device: Any) -> str:
    """How a GPU was found: "DXGI" (Windows' adapters), else "NVML" for an NVIDIA GPU NVML
    reads, else "sysfs"."""
    if getattr(device, "via", "").startswith("DXGI"):
        return "DXGI"
    return "NVML" if device.kind == "nvidia" and device.total is not None else "sysfs"


ROCM_MIN_VRAM = 4 << 30  # ROCm supports discrete Radeon and Instinct cards, not integrated ones


def detect_backend(plat: Platform | None = None, gpus: Callable[[], list[Gpu]] | list[Gpu] | None = None) -> tuple[str, str]:
    """``--backend auto``: (backend, why in words). CUDA on NVIDIA, ROCm on a discrete AMD
    card, Vulkan on other GPUs, Metal on Apple Silicon, else the CPU. ``gpus`` is a probe
    (default: NVML and /sys/class/drm through :class:`GpuMemory`) or its answer."""
    plat = plat or current_platform()
    if plat.system == "darwin":
        if plat.machine == "arm64":
            return "metal", "Apple Silicon Mac: Metal"
        return "cpu", "Intel Mac: no Metal build, the CPU"
    found = gpus() if callable(gpus) else (probe_gpus() if gpus is None else list(gpus))
    nvidia = [g for g in found if g.kind.startswith("nvidia")]
    if nvidia:
        driver = f" (its driver supports CUDA {nvidia[0].cuda_driver})" if nvidia[0].cuda_driver else ""
        return "cuda", f"{nvidia[0].name} found through {nvidia[0].via}{driver}: CUDA"
    amd = [g for g in found if g.kind == "amdgpu"]
    for gpu in amd:
        if gpu.vram is not None and gpu.vram >= ROCM_MIN_VRAM:
            return "rocm", f"{gpu.name} (amdgpu, {gpu.vram >> 30} GiB) found in sysfs: ROCm"
    if found:
        gpu = found[0]
        why = ("an integrated AMD GPU, not supported by ROCm" if gpu.kind == "amdgpu"
               else f"{'vendor' if gpu.via == 'DXGI' else 'driver'} {gpu.kind}")
        return "vulkan", f"{gpu.name} ({why}) found {'in sysfs' if gpu.via == 'sysfs' else 'through ' + gpu.via}: Vulkan"
    if plat.system == "windows":
        # DXGI listed no GPU (or could not be asked); the Vulkan build runs on any GPU through
        # its driver, and on the CPU where there is none.
        return "vulkan", "Windows without an NVIDIA GPU (NVML): Vulkan, which runs on AMD and Intel GPUs and falls back to the CPU"
    return "cpu", "no GPU found (neither NVML nor /sys/class/drm): the CPU"


def source_build_command(backend: str) -> str:
    """The command that builds llama-server from source for ``backend``."""
    if backend in ("cpu", "metal"):  # a macOS build has Metal on by default
        return "siesta engine install --from-source"
    return f"siesta engine install --from-source --backend {backend}"
