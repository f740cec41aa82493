"""What the tray menu and the models window ask of the application around them.

:class:`~app.ui.app.SiestaApp` implements it; tests pass a small fake. Keeping it a
protocol lets the tray and the window be built and driven without the whole app.
"""

from __future__ import annotations

from typing import Protocol


class Shell(Protocol):
    @property
    def has_tray(self) -> bool: ...

    def show_settings(self) -> None: ...

    def show_models_window(self) -> None: ...

    def show_discover(self) -> None:
        """"Find models on this computer": the discovery dialog."""

    def show_download(self) -> None:
        """"Download model...": search the Hugging Face Hub and download a GGUF model."""

    def show_import(self) -> None:
        """"Import configuration...": a file picker, then the import's result."""

    def show_install_engine(self) -> None:
        """"Install llama-server...": the build dialog."""

    def show_log(self, name: str) -> None:
        """"Show log": model ``name``'s log in a window that follows new lines."""

    def show_model_settings(self, name: str) -> None:
        """"Model settings...": model ``name``'s load settings (context size, GPU layers, ...)."""

    def request_quit(self) -> None: ...
