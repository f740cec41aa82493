#!/usr/bin/env bash
# Takes the README's screenshots of the desktop app as a person sees it: a real X server
# (Xvfb) with a real system tray (trayer), Siesta running with two models loaded and
# counting down, its tray menu opened with a right click, then its Settings dialog and its
# "Download model..." dialog opened from that menu with the keyboard.
#
#   scripts/screenshots.sh                           writes docs/screenshots/tray-menu.png, settings.png and download.png
#   scripts/screenshots.sh first-run                 writes docs/screenshots/first-run-menu.png and discover.png
#   scripts/screenshots.sh remotes [OUT_DIR]      writes docs/screenshots/tray-remotes.png
#   scripts/screenshots.sh dark                      writes docs/screenshots/tray-menu-dark.png and settings-dark.png
#   scripts/screenshots.sh [first-run|dark] OUT_DIR  writes them to OUT_DIR instead
#
# dark: the same two models, tray menu and Settings in a dark theme, the way Qt's own KDE
# platform theme shows any Qt app on a Plasma desktop set to Breeze Dark: Siesta runs with
# XDG_CURRENT_DESKTOP=KDE and a kdeglobals file of Breeze Dark's colours in the temporary
# home, and Qt reads its palette from there (the style stays Fusion, as in the light
# shots). Siesta itself has no theme setting; nothing of this is in the app.
#
# remotes: the tray menu of a Siesta with remotes, its models grouped by machine or engine.
# This computer has the two models of the default shots loaded; "gpubox" is a second
# Siesta (`python -m app serve` on 127.0.0.2:8777, with its own config, data and logs
# folders and fake-backend recipes; one model loaded through this Siesta); "ollama" is the
# test suite's fake Ollama (`python -m tests.fakes.ollama`) on 127.0.0.1:11434 with a model
# loaded; "studio" is a Siesta at an address where nothing answers.
#
# first-run: Siesta as a new user meets it, with no recipe and no llama-server: its tray
# menu saying so, then "Find models on this computer" chosen from that menu, listing the
# GGUF models a fake home holds in the Hugging Face cache, LM Studio, Ollama and
# llama.cpp's cache (sparse files: real-looking sizes, no disk used).
#
# Needs Debian's xvfb, trayer (the tray), openbox (window frames), imagemagick and xdotool
# plus the xcb libraries Qt loads; installs them with apt-get when missing (as root). The models are two copies of the
# test suite's fake OpenAI-compatible backend, so no llama-server or model is needed (a
# llama-server found on this computer is shown in Settings, if there is one). The GPU is a
# stand-in too: a pynvml module on Siesta's PYTHONPATH (the one NVML binding Siesta reads)
# shows one 24 GB NVIDIA GPU on which each model's server holds what its recipe's
# SIESTA_SHOT_VRAM_MB says, so the menu shows VRAM and a GPU line on any computer.
# The Hugging Face Hub is a stand-in as well: the test suite's fake Hub (tests/fakes/hub.py)
# on a local port, as HF_ENDPOINT, listing a few GGUF repos whose quants have real-looking
# sizes (four bytes behind each: the dialog is shot before any download), so the
# Download dialog is shot with a search done and a repo's quants listed, and nothing is
# asked of the real Hub.
# Everything runs in a temporary home; nothing of the user's config is read or written.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=default
if [[ ${1:-} == first-run || ${1:-} == dark ]]; then
    mode=$1
    shift
fi
if [[ ${1:-} == remotes ]]; then
    mode=remotes
    shift
fi
out=${1:-$repo/docs/screenshots}
python=${PYTHON:-python3}
# A llama-server of this computer, looked up before HOME moves (for the Settings screenshot).
real_llama_server=$(command -v llama-server || ls "$HOME"/.cache/siesta/engine/*/llama-server 2>/dev/null | tail -n 1 || true)

packages=(xvfb trayer openbox imagemagick xdotool libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1
          libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0 libegl1 libgl1
          fonts-dejavu-core)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "screenshots.sh: missing packages: ${missing[*]} (install them as root, or run this as root)" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

export HOME=$work/home
export XDG_CONFIG_HOME=$HOME/.config XDG_DATA_HOME=$HOME/.local/share XDG_STATE_HOME=$HOME/.local/state
export XDG_CACHE_HOME=$HOME/.cache XDG_RUNTIME_DIR=$work/run
mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_STATE_HOME" "$XDG_CACHE_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
unset SIESTA_CONFIG_DIR SIESTA_PORT SIESTA_HOST SIESTA_GLOBAL_UNLOAD_TIMEOUT SIESTA_LLAMA_SERVER \
      LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER WAYLAND_DISPLAY DBUS_SESSION_BUS_ADDRESS \
      HF_HOME HF_HUB_CACHE LLAMA_CACHE OLLAMA_MODELS HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_ENDPOINT
export HF_HUB_DISABLE_TELEMETRY=1

# ---- an X server with a system tray ------------------------------------------------------
display_number=90
while [[ -e /tmp/.X11-unix/X$display_number || -e /tmp/.X$display_number-lock ]]; do
    display_number=$((display_number + 1))
done
export DISPLAY=:$display_number
Xvfb "$DISPLAY" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do xdotool getdisplaygeometry >/dev/null 2>&1 && break; sleep 0.05; done
xdotool getdisplaygeometry >/dev/null

# A desktop: a background with a dark top bar, a window manager, and at the right end of
# the bar the system tray, 4 px in from the corner.
convert -size 1280x800 gradient:'#5a6f8c-#2b3547' -fill '#2d2d2d' -draw 'rectangle 0,0 1279,29' \
        "$work/background.png"
display -window root "$work/background.png" >/dev/null 2>&1 &
pids+=($!)
openbox --sm-disable >"$work/openbox.log" 2>&1 &
pids+=($!)
trayer --edge top --align right --widthtype request --height 30 --iconspacing 6 --margin 4 \
       --transparent true --alpha 0 --tint 0x2d2d2d --SetDockType true --SetPartialStrut true \
       >"$work/trayer.log" 2>&1 &
pids+=($!)

config=$work/config
mkdir -p "$config/recipes"
if [[ $mode != first-run ]]; then
# ---- Siesta with two models loaded ----------------------------------------------------------
fake=("$python" "$repo/tests/fakes/backend.py" --port "{port}")
toml_list() { local sep="" item; printf '['; for item in "$@"; do printf '%s"%s"' "$sep" "$item"; sep=", "; done; printf ']'; }
cat >"$config/recipes/tiny.toml" <<EOF
# A small model for quick questions.
backend = "command"
command = $(toml_list "${fake[@]}")
unload_timeout = "5m"
env = { SIESTA_SHOT_VRAM_MB = "1250" }
EOF
cat >"$config/recipes/qwen.toml" <<EOF
# The big one: keep it a while once loaded.
backend = "command"
command = $(toml_list "${fake[@]}")
unload_timeout = "15m"
env = { SIESTA_SHOT_VRAM_MB = "9420" }
EOF
cat >"$config/recipes/coder.toml" <<EOF
# Loaded on demand; uses the global timeout.
backend = "command"
command = $(toml_list "${fake[@]}")
memory_estimate = "4.5GB"
EOF
# The stand-in GPU (see the top): NVML's functions, as pynvml has them.
export PYTHONPATH=$repo/scripts/stand_in_gpu${PYTHONPATH:+:$PYTHONPATH}  # its pynvml
if [[ -n $real_llama_server ]]; then  # installed where "Install llama-server..." puts it
    mkdir -p "$XDG_DATA_HOME/siesta/engine"
    ln -s "$real_llama_server" "$XDG_DATA_HOME/siesta/engine/llama-server"
fi
# The stand-in Hub (see the top), for the Download dialog: its URL goes to $work/hub-url.
"$python" - "$repo" "$work/hub-url" >"$work/fake-hub.log" 2>&1 <<'PY' &
import hashlib, os, sys, time
sys.path.insert(0, sys.argv[1])
from tests.fakes.hub import FakeHub

GB = 10 ** 9  # the Hub counts in decimal units


class SizedHub(FakeHub):
    """Lists each file with the size a real quant has; the bytes behind it are a stub."""

    sizes: dict[str, int] = {}

    def _file_entry(self, repo, path, data):
        entry = super()._file_entry(repo, path, data)
        size = self.sizes.get(path)
        if size is not None:
            entry["size"] = size
            entry["lfs"] = {"sha256": hashlib.sha256(path.encode()).hexdigest(), "size": size, "pointerSize": 134}
        return entry


hub = SizedHub()


def repo(name, stem, quants, downloads, likes):
    files = {"README.md": b"# " + name.encode() + b"\n"}
    for tag, size in quants.items():
        file = f"{stem}-{tag}.gguf"
        files[file] = b"GGUF"
        hub.sizes[file] = int(size * GB)
    hub.add(name, files, downloads=downloads, likes=likes)


repo("unsloth/Qwen3-8B-GGUF", "Qwen3-8B", {"Q2_K": 3.28, "Q3_K_M": 4.12, "Q4_K_M": 5.03, "Q5_K_M": 5.85,
                                          "Q6_K": 6.73, "Q8_0": 8.71, "BF16": 16.4}, 248_310, 312)
repo("Qwen/Qwen3-4B-GGUF", "Qwen3-4B", {"Q4_K_M": 2.5, "Q8_0": 4.28}, 187_904, 201)
repo("bartowski/Qwen_Qwen3-14B-GGUF", "Qwen_Qwen3-14B", {"Q4_K_M": 9.0, "Q8_0": 15.7}, 96_120, 88)
repo("unsloth/Qwen3-30B-A3B-GGUF", "Qwen3-30B-A3B", {"Q4_K_M": 18.6, "Q8_0": 32.5}, 91_873, 276)
repo("lmstudio-community/Qwen3-1.7B-GGUF", "Qwen3-1.7B", {"Q4_K_M": 1.28, "Q8_0": 2.17}, 43_512, 19)
repo("unsloth/Qwen3-235B-A22B-GGUF", "Qwen3-235B-A22B", {"Q2_K": 85.7, "Q4_K_M": 142.6}, 21_448, 97)
hub.start()
with open(sys.argv[2] + ".tmp", "w") as fh:
    fh.write(hub.url)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    time.sleep(3600)
PY
pids+=($!)
for _ in $(seq 200); do [[ -s $work/hub-url ]] && break; sleep 0.05; done
[[ -s $work/hub-url ]] || { echo "screenshots.sh: the stand-in Hub did not start" >&2; cat "$work/fake-hub.log" >&2; exit 1; }
export HF_ENDPOINT=$(cat "$work/hub-url")
else
# ---- a new user's computer: models of other tools, no recipe, no llama-server ----------------------
"$python" - "$HOME" <<'PY'
import json, os, sys
from pathlib import Path

home = Path(sys.argv[1])
GB = 1024 ** 3


def model(path: Path, size: int) -> Path:
    """A sparse file with the GGUF magic: the size a real one has, no disk used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"GGUF\x03\x00\x00\x00")
        fh.truncate(size)
    return path


def hub(repo: str, file: str, size: int, blob: str) -> None:
    root = home / ".cache/huggingface/hub" / ("models--" + repo.replace("/", "--"))
    target = model(root / "blobs" / blob, size)
    link = root / "snapshots" / "9217f5db79a29953eb74d5343926648285ec7e67" / file
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


hub("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf", int(1.04 * GB), "a" * 64)
hub("bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf", int(1.88 * GB), "b" * 64)
model(home / ".lmstudio/models/lmstudio-community/gemma-2-2b-it-GGUF/gemma-2-2b-it-Q4_K_M.gguf", int(1.59 * GB))
model(home / ".cache/llama.cpp/ggml-org_SmolLM3-3B-GGUF_SmolLM3-Q4_K_M.gguf", int(1.78 * GB))
digest = "dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"
model(home / ".ollama/models/blobs" / f"sha256-{digest}", int(1.88 * GB))
manifest = home / ".ollama/models/manifests/registry.ollama.ai/library/llama3.2/latest"
manifest.parent.mkdir(parents=True)
manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [
    {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": int(1.88 * GB)}]}))
PY
fi
port=$("$python" - <<'PY'
import socket
for wanted in (8777, 0):  # Siesta's default port when it is free, as a user would see it
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
PY
)
# The port goes in settings.toml, as a user would set it (a --port flag would pin it, and
# the dialog would show the field locked).
printf 'port = %s\n' "$port" >"$config/settings.toml"

if [[ $mode == remotes ]]; then
# ---- the remotes: another Siesta, an Ollama, and a machine that is switched off ------------------
free_port_on() {  # free_port_on ADDRESS PORT: PORT when it is free on ADDRESS, else a free one there
    "$python" - "$1" "$2" <<'PY'
import socket, sys
for wanted in (int(sys.argv[2]), 0):
    with socket.socket() as s:
        try:
            s.bind((sys.argv[1], wanted))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
PY
}
wait_for_url() {  # wait_for_url URL LOG: until something answers at URL; else shows LOG and stops
    "$python" - "$1" <<'PY' || { echo "screenshots.sh: nothing answered at $1" >&2; cat "$2" >&2; exit 1; }
import sys, time, httpx
for _ in range(400):
    try:
        httpx.get(sys.argv[1], timeout=1)
        sys.exit(0)
    except httpx.HTTPError:
        time.sleep(0.05)
sys.exit(1)
PY
}
gpubox=$work/gpubox
mkdir -p "$gpubox/config/recipes"
gpubox_port=$(free_port_on 127.0.0.2 8777)
printf '# The GPU box in the corner.\nhost = "127.0.0.2"\nport = %s\n' "$gpubox_port" >"$gpubox/config/settings.toml"
cat >"$gpubox/config/recipes/qwen3-32b.toml" <<EOF
# The big model that does not fit on the desktop's GPU.
backend = "command"
command = $(toml_list "${fake[@]}")
unload_timeout = "30m"
env = { SIESTA_SHOT_VRAM_MB = "19800" }
EOF
cat >"$gpubox/config/recipes/gemma3-12b.toml" <<EOF
backend = "command"
command = $(toml_list "${fake[@]}")
memory_estimate = "9GB"
EOF
# Its own data and logs, as on another machine; the same stand-in GPU, holding its own servers.
(cd "$repo" && XDG_DATA_HOME=$gpubox/data XDG_STATE_HOME=$gpubox/state XDG_CACHE_HOME=$gpubox/cache \
    exec "$python" -m app serve --config-dir "$gpubox/config") >"$work/gpubox.log" 2>&1 &
pids+=($!)
ollama_port=$(free_port_on 127.0.0.1 11434)
(cd "$repo" && exec "$python" -m tests.fakes.ollama --port "$ollama_port" --model "llama3.2:latest=2019393189" \
    --model "qwen3:8b=5225000000" --loaded "llama3.2:latest=600") >"$work/ollama.log" 2>&1 &
pids+=($!)
wait_for_url "http://127.0.0.2:$gpubox_port/api/v1/health" "$work/gpubox.log"
wait_for_url "http://127.0.0.1:$ollama_port/api/version" "$work/ollama.log"
cat >>"$config/settings.toml" <<EOF

[remotes.gpubox]  # the GPU box in the corner
kind = "siesta"
url = "http://127.0.0.2:$gpubox_port"

[remotes.ollama]
kind = "ollama"
url = "http://127.0.0.1:$ollama_port"

[remotes.studio]  # switched off
kind = "siesta"
url = "http://127.0.0.3:8777"
EOF
fi

theme=()
if [[ $mode == dark ]]; then
    # Breeze Dark's colours, as Plasma writes them to ~/.config/kdeglobals (the roles Qt's
    # KDE theme reads: window, view, button, selection, tooltip, and the inactive text).
    cat >"$XDG_CONFIG_HOME/kdeglobals" <<'EOF'
[General]
ColorScheme=BreezeDark

[Colors:Window]
BackgroundNormal=32,35,38
BackgroundAlternate=41,44,48
ForegroundNormal=252,252,252
ForegroundInactive=161,169,177
ForegroundLink=29,153,243
ForegroundVisited=155,89,182

[Colors:View]
BackgroundNormal=20,22,24
BackgroundAlternate=29,31,34
ForegroundNormal=252,252,252
ForegroundInactive=161,169,177
ForegroundLink=29,153,243
ForegroundVisited=155,89,182

[Colors:Button]
BackgroundNormal=41,44,48
BackgroundAlternate=50,54,59
ForegroundNormal=252,252,252
ForegroundInactive=161,169,177

[Colors:Selection]
BackgroundNormal=61,174,233
ForegroundNormal=252,252,252
ForegroundInactive=161,169,177

[Colors:Tooltip]
BackgroundNormal=41,44,48
ForegroundNormal=252,252,252
ForegroundInactive=161,169,177
EOF
    theme=(XDG_CURRENT_DESKTOP=KDE KDE_SESSION_VERSION=6)
fi

cd "$repo"
env "${theme[@]}" QT_QPA_PLATFORM=xcb "$python" -m app --config-dir "$config" >"$work/siesta.log" 2>&1 &
siesta_pid=$!
pids+=("$siesta_pid")

api() {  # api METHOD PATH [JSON]: calls Siesta's API, prints the response body
    "$python" - "$@" <<'PY'
import json, sys, httpx, os
method, path = sys.argv[1], sys.argv[2]
body = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
resp = httpx.request(method, f"http://127.0.0.1:{os.environ['SIESTA_SHOT_PORT']}{path}", json=body, timeout=60)
resp.raise_for_status()
print(resp.text)
PY
}
export SIESTA_SHOT_PORT=$port
for _ in $(seq 200); do api GET /api/v1/health >/dev/null 2>&1 && break; sleep 0.05; done
api GET /api/v1/health >/dev/null || { cat "$work/siesta.log" >&2; exit 1; }
if [[ $mode != first-run ]]; then
    api POST /api/v1/load '{"model": "qwen"}' >/dev/null
    api POST /api/v1/load '{"model": "tiny"}' >/dev/null
fi
if [[ $mode == remotes ]]; then
    for _ in $(seq 300); do  # until gpubox and Ollama answer and studio is found unreachable
        api GET /api/v1/remotes | "$python" -c 'import json, sys
status = {r["name"]: r["status"] for r in json.load(sys.stdin)["remotes"]}
sys.exit(status != {"gpubox": "ok", "ollama": "ok", "studio": "unreachable"})' && break
        sleep 0.05
    done
    api POST /api/v1/load '{"model": "gpubox/qwen3-32b"}' >/dev/null
fi

# ---- the tray menu ----------------------------------------------------------------------------
tray_geometry() {  # prints "X Y WIDTH HEIGHT" of the trayer panel
    local wid
    wid=$(xdotool search --name '^panel$' 2>/dev/null | head -n 1) || return 1
    [[ -n $wid ]] || return 1
    xdotool getwindowgeometry --shell "$wid" | awk -F= '/^X=/{x=$2} /^Y=/{y=$2} /^WIDTH=/{w=$2} /^HEIGHT=/{h=$2} END{print x, y, w, h}'
}
for _ in $(seq 100); do  # until the icon is docked (the panel grows to hold it)
    read -r tx ty tw th < <(tray_geometry || echo "0 0 0 0")
    ((tw >= 20)) && break
    sleep 0.05
done
((tw >= 20)) || { echo "screenshots.sh: the tray icon never appeared" >&2; cat "$work/siesta.log" >&2; exit 1; }
icon_x=$((tx + tw - th / 2 - 4))
icon_y=$((ty + th - 6))  # near the icon's lower edge: the menu opens at the pointer
open_menu() {
    xdotool mousemove "$icon_x" "$icon_y"
    sleep 0.3
    xdotool click 3
    sleep 0.5
}
open_dialog() {  # open_dialog UPS TITLE_REGEX: opens a menu entry with the keyboard; its window id in $dialog
    local ups=$1 title=$2
    dialog=""
    xdotool key Escape
    sleep 0.3
    open_menu
    for ((i = 0; i < ups; i++)); do xdotool key Up; sleep 0.05; done
    xdotool key Return
    for _ in $(seq 100); do  # (xdotool search can trip over the closing menu's window: retry)
        dialog=$(xdotool search --onlyvisible --name "$title" 2>/dev/null | head -n 1 || true)
        [[ -n $dialog ]] && break
        sleep 0.05
    done
    [[ -n $dialog ]] || { echo "screenshots.sh: no window $title opened" >&2; cat "$work/siesta.log" >&2; exit 1; }
    xdotool windowmove "$dialog" 60 60
}
shoot_window() {  # shoot_window FILE: the window $dialog, with its frame
    local file=$1 frame
    # The frame the window manager drew is the dialog's parent window: take that, title bar and all.
    frame=$(xwininfo -id "$dialog" -children 2>/dev/null | awk '/Parent window id:/{print $4}')
    if [[ -n $frame && $frame != "$(xwininfo -root | awk '/Window id:/{print $4}')" ]]; then
        import -window "$frame" "$file"
    else
        import -window "$dialog" "$file"
    fi
}
shoot_dialog() {  # shoot_dialog UPS TITLE_REGEX FILE: opens a menu entry with the keyboard, shoots its window
    open_dialog "$1" "$2"
    sleep 1.5
    shoot_window "$3"
}
mkdir -p "$out"

if [[ $mode == first-run ]]; then
    sleep 9  # the "Siesta is running" note that greets a new user fades after 8 s
    open_menu
    import -window root "$work/screen.png"
    convert "$work/screen.png" -crop 620x340+660+0 +repage "$out/first-run-menu.png"
    # Up from the bottom: Quit, Copy API URL, Open logs folder, Settings..., Models window...,
    # Import configuration..., Download model..., Find models on this computer...
    shoot_dialog 8 '^Find models' "$out/discover.png"
    kill -TERM "$siesta_pid"
    wait "$siesta_pid" || { echo "screenshots.sh: siesta exited with $?" >&2; cat "$work/siesta.log" >&2; exit 1; }
    echo "wrote $out/first-run-menu.png and $out/discover.png"
    exit 0
fi

if [[ $mode == remotes ]]; then
    open_menu
    sleep 2.2   # the countdowns tick, and every figure has arrived
    import -window root "$work/screen.png"
    # The menu hangs from the top right corner; keep that part of the screen.
    convert "$work/screen.png" -crop 660x500+620+0 +repage "$out/tray-remotes.png"
    kill -TERM "$siesta_pid"
    wait "$siesta_pid" || { echo "screenshots.sh: siesta exited with $?" >&2; cat "$work/siesta.log" >&2; exit 1; }
    echo "wrote $out/tray-remotes.png"
    exit 0
fi

suffix=""
[[ $mode == dark ]] && suffix=-dark
open_menu
sleep 2.2   # let the countdowns tick twice, as a person watching would see them
import -window root "$work/screen.png"
# The panel and the menu hang from the top right corner; keep that part of the screen.
convert "$work/screen.png" -crop 620x360+660+0 +repage "$out/tray-menu$suffix.png"

# ---- the settings dialog, opened from the menu with the keyboard -----------------------------------
shoot_dialog 4 '^Siesta Settings$' "$out/settings$suffix.png"   # Quit, Copy API URL, Open logs folder, Settings...

quit_siesta() {  # quits Siesta: every model unloaded, no child left
    local children pid
    children=$(api GET /api/v1/models | "$python" -c 'import json, sys; print(" ".join(str(m["pid"]) for m in json.load(sys.stdin)["models"] if m["pid"]))')
    kill -TERM "$siesta_pid"
    wait "$siesta_pid" || { echo "screenshots.sh: siesta exited with $?" >&2; cat "$work/siesta.log" >&2; exit 1; }
    for pid in $children; do
        if kill -0 "$pid" 2>/dev/null; then echo "screenshots.sh: model process $pid outlived Siesta" >&2; exit 1; fi
    done
}
if [[ $mode == dark ]]; then
    quit_siesta
    echo "wrote $out/tray-menu-dark.png and $out/settings-dark.png"
    exit 0
fi

# ---- the Download dialog: a search typed and sent with Enter, the top repo's quants listed -------------
# Up from the bottom: Quit, Copy API URL, Open logs folder, Settings..., Models window...,
# Import configuration..., Download model...
open_dialog 7 '^Download model'
sleep 0.5
xdotool type --delay 60 "qwen3"
xdotool key Return
sleep 1.5
xdotool key Tab Tab   # the Search button, then the list of repos (its first row becomes current)
sleep 2.5             # the repo's files and this computer's memory arrive off the GUI thread
shoot_window "$out/download.png"

# ---- quit: every model unloaded, no child left ---------------------------------------------------------
quit_siesta
echo "wrote $out/tray-menu.png, $out/settings.png and $out/download.png"
