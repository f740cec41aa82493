"""The llama-server Siesta runs: which one (locate), llama.cpp's prebuilt releases (release),
installing one of them (install) and building one from source (build)."""
