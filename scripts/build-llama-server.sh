#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the llama.cpp tree inside the llama-cpp-python sdist
# (the only registry source of llama.cpp here) into a cache dir, and prints the binary's path.
# Does nothing but print the path when a cached binary already answers --version.
#
#   scripts/build-llama-server.sh                 # build (or reuse) and print the path
#   scripts/build-llama-server.sh --gpu cuda      # with a GPU backend (cpu|cuda|vulkan|rocm)
#   CMAKE_ARGS="-DGGML_AVX512=ON" scripts/...     # extra cmake flags are passed through
#
# Cache: $SIESTA_ENGINE_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/siesta/engine.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m app.core.engine.build "$@"
