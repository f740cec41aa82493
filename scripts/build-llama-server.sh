#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the llama.cpp tree inside the llama-cpp-python sdist
# (the only registry source of llama.cpp here) into a cache dir, and prints the binary's path.
# Does nothing but print the path when a cached binary already answers --version.
#
#   scripts/build-llama-server.sh            # build (or reuse) and print the path
#   CMAKE_ARGS="-DGGML_CUDA=ON" scripts/...  # extra cmake flags are passed through
#
# Cache: $SIESTA_ENGINE_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/siesta/engine.
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${SIESTA_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/siesta/engine}"
dest="$cache/llama-cpp-python-$version"
bin="$dest/llama-server"

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dest"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$dest/build.log"
{
  echo "building llama-server from llama-cpp-python==$version in $work" >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
  # shellcheck disable=SC2086
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF ${CMAKE_ARGS:-}
  cmake --build "$work/build" --target llama-server -j"$(nproc)"
} >"$log" 2>&1 || { echo "llama-server build failed; see $log" >&2; tail -n 30 "$log" >&2; exit 1; }
install -m 0755 "$work/build/bin/llama-server" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
"$bin" --version >/dev/null 2>&1 || { echo "built $bin does not answer --version" >&2; exit 1; }
echo "$bin"
