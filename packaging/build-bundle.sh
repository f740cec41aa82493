#!/usr/bin/env bash
# Builds Siesta's one-folder PyInstaller bundle (packaging/siesta.spec) and smoke-tests it.
# Takes a minute or two on 2 cores (plus a first `pip install pyinstaller`); .ci/run runs it.
#
#   packaging/build-bundle.sh                # build into build/bundle/, then smoke-test
#   packaging/build-bundle.sh --smoke-only   # smoke-test the bundle already built
#   packaging/build-bundle.sh --no-smoke     # build only
#
# Result: build/bundle/dist/siesta/ (run build/bundle/dist/siesta/siesta; copy the whole
# folder anywhere, e.g. ~/.local/opt/siesta, then packaging/install-desktop.sh --exec it).
# Environment: PYTHON (default python3; needs the project's dependencies, installed here
# with `pip install -e .` when missing), SIESTA_BUNDLE_DIR (default build/bundle).
#
# The smoke tests run the bundle, never the source tree, with every XDG dir in a temporary
# folder: --version; the bundled Python loads the SVG icons through Qt (icons + QtSvg
# plugins present); `siesta demo` (gguf + numpy); `siesta serve` answers /api/v1/health,
# loads a stand-in model server, and on SIGTERM exits 0 leaving no process behind; after a
# SIGKILL its watchdog still kills the model server; `siesta engine install` from a local
# fake release (sha256-checked) with nothing on PATH (no pip, cmake or compiler), then
# `siesta engine info` shows it; the tray app under
# QT_QPA_PLATFORM=offscreen (Models window, no tray) answers health and exits 0 on SIGTERM.
# Any failure exits non-zero with a "FAIL:" line saying what.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

PYTHON="${PYTHON:-python3}"
out="${SIESTA_BUNDLE_DIR:-$root/build/bundle}"
dist="$out/dist"
work="$out/work"
bundle="$dist/siesta"
bin="$bundle/siesta"
build=1
smoke=1
for arg in "$@"; do
  case "$arg" in
    --smoke-only) build=0 ;;
    --no-smoke) smoke=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-bundle: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "build-bundle: FAIL: $*" >&2; exit 1; }

# ---- build --------------------------------------------------------------------------------
if ((build)); then
  step "checking the build tools"
  if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
    echo "installing PyInstaller"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "pyinstaller>=6.10" \
      || fail "could not install pyinstaller with $PYTHON -m pip"
  fi
  if ! "$PYTHON" -c "import aiohttp, pydantic_settings, tomlkit, watchfiles, psutil, platformdirs, yaml, gguf, qasync, PySide6.QtSvg" 2>/dev/null; then
    echo "installing Siesta's dependencies (pip install -e .)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -e . || fail "could not install Siesta's dependencies"
  fi
  echo "PyInstaller $("$PYTHON" -m PyInstaller --version), $("$PYTHON" --version 2>&1)"

  step "building $bundle (log: $out/pyinstaller.log)"
  mkdir -p "$out"
  rm -rf "$bundle"
  started=$SECONDS
  if ! "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
        --workpath "$work" --distpath "$dist" packaging/siesta.spec >"$out/pyinstaller.log" 2>&1; then
    tail -n 40 "$out/pyinstaller.log" >&2
    fail "PyInstaller failed (full log: $out/pyinstaller.log)"
  fi
  build_seconds=$((SECONDS - started))
  [[ -x "$bin" ]] || fail "PyInstaller did not produce $bin"
  dangling="$(find "$bundle" -xtype l)"
  [[ -z "$dangling" ]] || fail "dangling symlinks in the bundle: $dangling"
  echo "built in ${build_seconds}s: $(du -sh "$bundle" | cut -f1) in $(find "$bundle" -type f | wc -l) files"
fi

((smoke)) || exit 0
[[ -x "$bin" ]] || fail "no bundle at $bin (build it first)"

# ---- smoke tests --------------------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/siesta-bundle-smoke.XXXXXX")"
started_pids=()
cleanup() {
  local pid
  for pid in "${started_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  # Anything still running from this smoke run carries $tmp in its command line.
  for pid in $(pgrep -f -- "$tmp" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# Nothing the bundle does may touch the real home.
export HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/home/.config" XDG_DATA_HOME="$tmp/home/.local/share" \
       XDG_STATE_HOME="$tmp/home/.local/state" XDG_CACHE_HOME="$tmp/home/.cache" XDG_RUNTIME_DIR="$tmp/run"
mkdir -p "$HOME" "$XDG_CONFIG_HOME" && mkdir -m 700 "$XDG_RUNTIME_DIR"
unset SIESTA_CONFIG_DIR SIESTA_PORT SIESTA_HOST SIESTA_LLAMA_SERVER 2>/dev/null || true
python_bin="$(command -v "$PYTHON")"

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# GET/POST the API; prints the JSON answer.
api() {  # METHOD PORT PATH [JSON_BODY]
  "$PYTHON" - "$@" <<'PY'
import json, sys, urllib.request
method, port, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                             headers={"Content-Type": "application/json"} if body else {})
with urllib.request.urlopen(req, timeout=30) as resp:
    print(resp.read().decode())
PY
}
json_field() { "$PYTHON" -c 'import json, sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

wait_healthy() {  # PORT PID LOG: health says "ok" within 20 s
  local port="$1" pid="$2" log="$3" deadline=$((SECONDS + 20)) answer
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; fail "siesta (pid $pid) exited before answering health"; }
    if answer="$(api GET "$port" /api/v1/health 2>/dev/null)"; then
      [[ "$(json_field status <<<"$answer")" == ok ]] || fail "health answered without status ok: $answer"
      return 0
    fi
    sleep 0.25
  done
  tail -n 30 "$log" >&2
  fail "no health answer on port $port within 20 s"
}

alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop_and_check() {  # PID LOG WHAT: SIGTERM; exit 0 within 30 s; no child left behind
  local pid="$1" log="$2" what="$3" children child rc deadline
  children="$(pgrep -P "$pid" || true)"
  kill -TERM "$pid"
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  alive "$pid" && { tail -n 30 "$log" >&2; fail "$what did not exit within 30 s of SIGTERM"; }
  rc=0; wait "$pid" || rc=$?
  ((rc == 0)) || { tail -n 30 "$log" >&2; fail "$what exited $rc after SIGTERM (expected 0)"; }
  sleep 0.5
  for child in $children; do
    alive "$child" && fail "$what left its child process $child running: $(tr '\0' ' ' </proc/"$child"/cmdline)"
  done
  if pgrep -f -- "$tmp" >/dev/null; then
    fail "$what left processes behind: $(pgrep -a -f -- "$tmp")"
  fi
  echo "ok: $what exited 0 on SIGTERM; its children ($(echo $children | tr ' ' ',')) are gone"
}

# A stand-in model server (recipe backend "command"): answers /health, as llama-server does.
cat >"$tmp/fake_server.py" <<'PY'
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
write_fake_recipe() {  # CONFIG_DIR
  mkdir -p "$1/recipes"
  printf 'backend = "command"\ncommand = ["%s", "%s", "{port}"]\n' "$python_bin" "$tmp/fake_server.py" \
    >"$1/recipes/fake.toml"
}

step "smoke: --version"
expected="siesta $("$PYTHON" -c 'import app; print(app.__version__)')"
got="$("$bin" --version 2>&1)" || fail "$bin --version exited non-zero: $got"
[[ "${got%%$'\n'*}" == "$expected" ]] || fail "--version printed '$got', expected '$expected' first"
[[ "$got" == *$'\n'"engine: "* ]] || fail "--version names no engine: '$got'"
echo "ok: ${got//$'\n'/; }"

step "smoke: the bundle's Qt loads Siesta's SVG icons"
# `siesta -c CODE` runs CODE with the bundle's Python (packaging/siesta_entry.py).
icons_out="$(QT_QPA_PLATFORM=offscreen "$bin" -c '
import sys
from PySide6.QtWidgets import QApplication
qt = QApplication([])
from app.ui import icons, text
folder = icons.icons_dir()
assert str(folder).startswith(sys._MEIPASS), f"icons found outside the bundle: {folder}"
for icon in [icons.app_icon()] + [icons.state_icon(s) for s in icons.ICON_FILES]:
    assert not icon.pixmap(32, 32).isNull(), "an icon renders empty: is the SVG icon engine bundled?"
print(folder)
' 2>&1)" || fail "icons do not load in the bundle: $icons_out"
echo "ok: icons load from ${icons_out##*$'\n'}"

step "smoke: siesta demo (gguf + numpy in the bundle)"
demo_out="$("$bin" --config-dir "$tmp/demo-config" demo 2>&1)" || fail "siesta demo failed: $demo_out"
[[ -f "$tmp/demo-config/recipes/tiny.toml" ]] || fail "siesta demo wrote no recipe: $demo_out"
ls "$XDG_DATA_HOME"/siesta/models/tiny.gguf >/dev/null 2>&1 || fail "siesta demo wrote no model: $demo_out"
echo "ok: $demo_out"

step "smoke: siesta serve"
port="$(free_port)"
write_fake_recipe "$tmp/serve-config"
"$bin" --config-dir "$tmp/serve-config" serve --port "$port" >"$tmp/serve.log" 2>&1 &
serve_pid=$!
started_pids+=("$serve_pid")
wait_healthy "$port" "$serve_pid" "$tmp/serve.log"
echo "ok: GET /api/v1/health on port $port says status ok"
loaded="$(api POST "$port" /api/v1/load '{"model": "fake"}')" || fail "loading the stand-in model failed: $(tail -n 20 "$tmp/serve.log")"
fake_pid="$(json_field pid <<<"$loaded")"
[[ "$(json_field state <<<"$loaded")" == ready ]] || fail "the stand-in model is not ready: $loaded"
alive "$fake_pid" || fail "the stand-in model server (pid $fake_pid) is not running"
echo "ok: a model server started (pid $fake_pid)"
stop_and_check "$serve_pid" "$tmp/serve.log" "siesta serve"
alive "$fake_pid" && fail "the model server $fake_pid outlived siesta serve"

step "smoke: the watchdog kills model servers when siesta serve is SIGKILLed"
port="$(free_port)"
"$bin" --config-dir "$tmp/serve-config" serve --port "$port" >"$tmp/kill.log" 2>&1 &
kill_pid=$!
started_pids+=("$kill_pid")
wait_healthy "$port" "$kill_pid" "$tmp/kill.log"
fake_pid="$(api POST "$port" /api/v1/load '{"model": "fake"}' | json_field pid)"
alive "$fake_pid" || fail "the stand-in model server did not start"
kill -KILL "$kill_pid"
wait "$kill_pid" 2>/dev/null || true
deadline=$((SECONDS + 10))
while alive "$fake_pid" && ((SECONDS < deadline)); do sleep 0.2; done
alive "$fake_pid" && fail "after SIGKILL of siesta the model server $fake_pid still runs: the watchdog did not work"
echo "ok: the watchdog killed the model server $fake_pid"

step "smoke: siesta engine install from a local fake release (no pip, cmake or compiler on PATH)"
# A static copy of the releases API (release JSON whose asset URL and sha256 digest point at
# a .tar.gz holding a stand-in llama-server), served by the build's Python; the bundle
# installs it with nothing on PATH, so nothing it could build with is there.
rel_port="$(free_port)"
"$PYTHON" - "$tmp/releases" "$rel_port" <<'PY' || fail "could not write the fake release"
import hashlib, io, json, platform, sys, tarfile
from pathlib import Path
root, port = Path(sys.argv[1]), sys.argv[2]
arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine())
name = f"llama-b1-bin-ubuntu-{arch}.tar.gz"
server = b'#!/bin/sh\n[ "$1" = "--version" ] && echo "version: 1 (b1, fake)" && exit 0\nexit 1\n'
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    info = tarfile.TarInfo("build/bin/llama-server")
    info.size, info.mode = len(server), 0o755
    tar.addfile(info, io.BytesIO(server))
data = buf.getvalue()
(root / "download/b1").mkdir(parents=True)
(root / "download/b1" / name).write_bytes(data)
(root / "releases/tags").mkdir(parents=True)
(root / "releases/tags/b1").write_text(json.dumps({"tag_name": "b1", "assets": [{
    "name": name, "size": len(data), "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
    "browser_download_url": f"http://127.0.0.1:{port}/download/b1/{name}"}]}))
PY
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$tmp/releases" "$rel_port" >"$tmp/releases.log" 2>&1 &
rel_pid=$!
started_pids+=("$rel_pid")
deadline=$((SECONDS + 10))
until api GET "$rel_port" /releases/tags/b1 >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "the fake releases server did not answer: $(tail -n 5 "$tmp/releases.log")"
  sleep 0.2
done
mkdir -p "$tmp/empty-bin"
engine_out="$(PATH="$tmp/empty-bin" "$bin" --config-dir "$tmp/engine-config" engine install \
  --engine-releases-url "http://127.0.0.1:$rel_port" --backend cpu --tag b1 2>&1)" \
  || fail "siesta engine install from the fake release failed: $engine_out"
[[ "$engine_out" == *"llama.cpp b1, backend cpu"* ]] || fail "siesta engine install said: $engine_out"
info_out="$("$bin" --config-dir "$tmp/engine-config" engine info 2>&1)" || fail "siesta engine info failed: $info_out"
[[ "$info_out" == *"installed engine b1-cpu"* && "$info_out" == *"1 (b1, fake)"* ]] \
  || fail "siesta engine info does not show the installed engine: $info_out"
kill "$rel_pid" 2>/dev/null || true
wait "$rel_pid" 2>/dev/null || true
echo "ok: installed and verified (sha256) llama-server b1 with nothing on PATH: ${info_out%%$'\n'*}"

step "smoke: the tray app (QT_QPA_PLATFORM=offscreen: no tray, so the Models window)"
port="$(free_port)"
QT_QPA_PLATFORM=offscreen "$bin" --config-dir "$tmp/tray-config" --port "$port" >"$tmp/tray.log" 2>&1 &
tray_pid=$!
started_pids+=("$tray_pid")
wait_healthy "$port" "$tray_pid" "$tmp/tray.log"
echo "ok: GET /api/v1/health on port $port says status ok"
grep -q "Models window" "$tmp/tray.log" || echo "note: the log does not mention the Models window"
stop_and_check "$tray_pid" "$tmp/tray.log" "the tray app"

step "all smoke tests passed"
echo "bundle: $bundle ($(du -sh "$bundle" | cut -f1))${build_seconds:+, built in ${build_seconds}s}"
