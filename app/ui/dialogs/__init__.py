"""Dialogs: Settings (with its timeout rows, sliders, memory and engine boxes), a model's
settings, Download, Find models, Import and Install llama-server."""
