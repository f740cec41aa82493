"""Dialogs: Settings (with its timeout rows, sliders, memory and engine boxes, and Copy
diagnostics), a model's settings, Download, Find models, Import and Install llama-server."""
