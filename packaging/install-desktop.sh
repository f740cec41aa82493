#!/usr/bin/env bash
# Installs Siesta's desktop integration for one user (or into any PREFIX):
#   $PREFIX/share/applications/io.github.siesta.Siesta.desktop      the menu entry
#   $PREFIX/share/metainfo/io.github.siesta.Siesta.metainfo.xml     AppStream (software centres)
#   $PREFIX/share/icons/hicolor/scalable/apps/io.github.siesta.Siesta.svg
#   $PREFIX/share/icons/hicolor/NxN/apps/io.github.siesta.Siesta.png  N = 16 22 24 32 48 64 128 256
#   $PREFIX/share/icons/hicolor/symbolic/apps/io.github.siesta.Siesta-symbolic.svg
#   ${XDG_CONFIG_HOME:-~/.config}/systemd/user/siesta-serve.service  headless `siesta serve`
# and, with --autostart, the login entry ${XDG_CONFIG_HOME:-~/.config}/autostart/siesta.desktop
# (the same file the tray app's "Start Siesta when I log in" setting writes).
#
# PREFIX defaults to ~/.local. It does not install Siesta itself: do that first
# (`pip install .`, pipx, or the PyInstaller bundle from packaging/build-bundle.sh).
#
# Usage: packaging/install-desktop.sh [--exec PATH] [--autostart] [--no-systemd] [--uninstall]
#   --exec PATH   the siesta program for Exec= and ExecStart= (e.g. the bundle's
#                 .../dist/siesta/siesta); default: `siesta` from PATH
#   --autostart   also write the autostart entry (start the tray app at login)
#   --no-systemd  skip the systemd user unit
#   --uninstall   remove everything listed above (disabling the unit first when it is
#                 the one this script installed and systemd has it enabled)
# Environment: PREFIX, XDG_CONFIG_HOME, PYTHON (a Python with PySide6, for the PNG icons).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
APP_ID="io.github.siesta.Siesta"
UNIT="siesta-serve.service"
SIZES=(16 22 24 32 48 64 128 256)

prefix="${PREFIX:-$HOME/.local}"
config_home="${XDG_CONFIG_HOME:-$HOME/.config}"
exec_path=""
autostart=0
systemd=1
uninstall=0

die() { echo "install-desktop: $*" >&2; exit 1; }

while (($#)); do
  case "$1" in
    --exec) (($# >= 2)) || die "--exec needs a path"; exec_path="$2"; shift 2 ;;
    --exec=*) exec_path="${1#--exec=}"; shift ;;
    --autostart) autostart=1; shift ;;
    --no-systemd) systemd=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

apps_dir="$prefix/share/applications"
metainfo_dir="$prefix/share/metainfo"
hicolor="$prefix/share/icons/hicolor"
unit_dir="$config_home/systemd/user"
autostart_file="$config_home/autostart/siesta.desktop"

desktop_file="$apps_dir/$APP_ID.desktop"
metainfo_file="$metainfo_dir/$APP_ID.metainfo.xml"
scalable_icon="$hicolor/scalable/apps/$APP_ID.svg"
symbolic_icon="$hicolor/symbolic/apps/$APP_ID-symbolic.svg"
unit_file="$unit_dir/$UNIT"
png_icons=()
for n in "${SIZES[@]}"; do png_icons+=("$hicolor/${n}x${n}/apps/$APP_ID.png"); done

refresh_caches() {
  if command -v update-desktop-database >/dev/null 2>&1 && [[ -d "$apps_dir" ]]; then
    update-desktop-database -q "$apps_dir" 2>/dev/null || true
  fi
  # Only keep an existing icon cache current: a user's ~/.local hicolor usually has none,
  # and a cache that is not kept up to date hides icons installed later.
  if [[ -f "$hicolor/icon-theme.cache" ]] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t -f "$hicolor" 2>/dev/null || true
  fi
}

# ---- uninstall ------------------------------------------------------------------------
if ((uninstall)); then
  if [[ -f "$unit_file" ]] && command -v systemctl >/dev/null 2>&1; then
    # Touch systemd only when the unit it knows is the file being removed (never another
    # user's, nor the real one when HOME points elsewhere, as in the tests).
    loaded="$(systemctl --user show -p FragmentPath --value "$UNIT" 2>/dev/null || true)"
    if [[ -n "$loaded" && "$loaded" -ef "$unit_file" ]]; then
      systemctl --user disable --now "$UNIT" 2>/dev/null || true
      rm -f "$unit_file"
      systemctl --user daemon-reload 2>/dev/null || true
    fi
  fi
  removed=0
  for f in "$desktop_file" "$metainfo_file" "$scalable_icon" "$symbolic_icon" "${png_icons[@]}" \
           "$unit_file" "$autostart_file"; do
    if [[ -e "$f" || -L "$f" ]]; then
      rm -f "$f"
      echo "removed $f"
      removed=$((removed + 1))
    fi
  done
  refresh_caches
  echo "install-desktop: uninstalled ($removed files removed)"
  exit 0
fi

# ---- install --------------------------------------------------------------------------
for f in "$here/$APP_ID.desktop" "$here/$APP_ID.metainfo.xml" "$here/$UNIT" "$here/autostart/siesta.desktop" \
         "$root/resources/icons/siesta.svg" "$root/resources/icons/siesta-symbolic.svg"; do
  [[ -f "$f" ]] || die "missing $f (run this from a Siesta source tree)"
done

siesta_found="$(command -v siesta 2>/dev/null || true)"
# A pyenv shim needs pyenv's environment, which a systemd unit does not have: use the real script.
if [[ "$siesta_found" == */shims/siesta ]] && command -v pyenv >/dev/null 2>&1; then
  siesta_found="$(pyenv which siesta 2>/dev/null || echo "$siesta_found")"
fi
if [[ -n "$exec_path" ]]; then
  [[ -x "$exec_path" ]] || die "--exec $exec_path is not an executable file"
  exec_path="$(cd "$(dirname "$exec_path")" && pwd)/$(basename "$exec_path")"
elif [[ -z "$siesta_found" ]]; then
  echo "install-desktop: warning: no 'siesta' on PATH; the menu entry runs 'siesta' and will fail" \
       "until it is installed (or rerun with --exec PATH)" >&2
fi

# Exec= of a desktop entry: quoted per the Desktop Entry spec when needed (%% for %).
desktop_exec() {
  local arg="$1"
  if [[ "$arg" =~ ^[A-Za-z0-9/._+=:,-]+$ ]]; then
    printf '%s' "$arg"
  else
    arg="${arg//\\/\\\\\\\\}"; arg="${arg//\"/\\\\\"}"; arg="${arg//\`/\\\\\`}"; arg="${arg//\$/\\\\\$}"
    printf '"%s"' "${arg//%/%%}"
  fi
}
# ExecStart= of a systemd unit: double-quoted, with \\ for \, \" for ", $$ for $ and %% for %.
systemd_exec() {
  local arg="${1//\\/\\\\}"
  arg="${arg//\"/\\\"}"; arg="${arg//\$/\$\$}"
  printf '"%s"' "${arg//%/%%}"
}
# Replaces the value of KEY= lines (first match per line only) in a file, written to DEST.
install_with_key() {  # SRC DEST KEY NEWVALUE_PREFIX(the program) REST_OF_LINE
  local src="$1" dest="$2" key="$3" program="$4" rest="$5"
  mkdir -p "$(dirname "$dest")"
  local tmp="$dest.tmp.$$"
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" == "$key="* ]]; then
      printf '%s=%s%s\n' "$key" "$program" "$rest"
    else
      printf '%s\n' "$line"
    fi
  done <"$src" >"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$dest"
}

# The desktop entry and the autostart entry: Exec=siesta unless --exec was given.
if [[ -n "$exec_path" ]]; then
  install_with_key "$here/$APP_ID.desktop" "$desktop_file" Exec "$(desktop_exec "$exec_path")" ""
else
  install -D -m 644 "$here/$APP_ID.desktop" "$desktop_file"
fi
echo "installed $desktop_file"
install -D -m 644 "$here/$APP_ID.metainfo.xml" "$metainfo_file"
echo "installed $metainfo_file"
install -D -m 644 "$root/resources/icons/siesta.svg" "$scalable_icon"
echo "installed $scalable_icon"
install -D -m 644 "$root/resources/icons/siesta-symbolic.svg" "$symbolic_icon"
echo "installed $symbolic_icon"

# PNG renders need a Python with PySide6 (QtSvg): $PYTHON, the one running the siesta
# script (pipx keeps it in its own venv), or python3.
pythons=()
[[ -n "${PYTHON:-}" ]] && pythons+=("$PYTHON")
if [[ -n "$siesta_found" ]] && head -c 2 "$siesta_found" 2>/dev/null | grep -q '#!'; then
  shebang="$(head -n 1 "$siesta_found" | sed 's/^#! *//')"
  [[ "$shebang" != *" "* && -x "$shebang" ]] && pythons+=("$shebang")
fi
pythons+=(python3)
renderer=""
for py in "${pythons[@]}"; do
  if "$py" -c "import PySide6.QtSvg" >/dev/null 2>&1; then renderer="$py"; break; fi
done
if [[ -n "$renderer" ]]; then
  QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" "$renderer" "$here/render_icons.py" \
    "$root/resources/icons/siesta.svg" "$hicolor" --name "$APP_ID" --layout hicolor --sizes "${SIZES[@]}" \
    | sed 's/^/installed /' || die "rendering the PNG icons failed"
  for f in "${png_icons[@]}"; do [[ -f "$f" ]] || die "rendering did not write $f"; chmod 644 "$f"; done
else
  echo "install-desktop: warning: no Python with PySide6 found (set PYTHON=...): installed only the" \
       "scalable SVG icon, which most desktops use anyway" >&2
fi

if ((autostart)); then
  install_with_key "$here/autostart/siesta.desktop" "$autostart_file" Exec "$(desktop_exec "${exec_path:-siesta}")" ""
  echo "installed $autostart_file (turn it off in Siesta's Settings, or delete the file)"
fi

if ((systemd)); then
  program="${exec_path:-$siesta_found}"
  if [[ -n "$program" ]]; then
    install_with_key "$here/$UNIT" "$unit_file" ExecStart "$(systemd_exec "$program")" " serve"
  else
    install -D -m 644 "$here/$UNIT" "$unit_file"
    echo "install-desktop: warning: the unit runs %h/.local/bin/siesta; edit ExecStart= if siesta is elsewhere" >&2
  fi
  echo "installed $unit_file"
fi

refresh_caches

cat <<EOF

Siesta's menu entry and icons are installed under $prefix/share.
EOF
if ((systemd)); then
  cat <<EOF
To run Siesta headless (\`siesta serve\`) as a systemd user service:
  systemctl --user daemon-reload
  systemctl --user enable --now $UNIT      # start now and at every login
  journalctl --user -u $UNIT -f            # follow its log
  loginctl enable-linger "\$USER"                     # optional: keep it running while logged out
Use either the service or the tray app, not both on the same port.
EOF
fi
if ((!autostart)); then
  echo "To start the tray app at login, tick \"Start Siesta when I log in\" in its Settings (or rerun with --autostart)."
fi
