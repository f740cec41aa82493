"""Siesta's desktop app: a Qt system-tray icon (or, without a tray, a Models window) and a
Settings dialog over the core model manager, on one qasync event loop.

Entry point: :func:`app.ui.app.run_tray_app`. Module map: ``app`` (start-up, single
instance, quit), ``bridge`` (the only place the GUI meets the core), ``tray``,
``models_window``, ``settings_dialog``, ``timeout_scale`` and ``text`` (pure, no Qt),
``ticker`` (1 Hz only while visible), ``menu_watch`` (whether the tray menu is open, also
when a D-Bus tray draws it), ``icons``, ``autostart``, ``single_instance``,
``desktop`` (open files, clipboard, file pickers). First run: ``discover_dialog`` (GGUF
models on this computer become recipes), ``import_dialog`` (llama-swap or Lemonade
configurations), ``engine_dialog`` (build and install llama-server).
"""
