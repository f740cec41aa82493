"""Siesta's desktop app: a Qt system-tray icon (or, without a tray, a Models window) and a
Settings dialog over the core model manager, on one qasync event loop.

Entry point: :func:`app.ui.app.run_tray_app`. At the root: ``app`` (start-up, quit),
``bridge`` (the only place the GUI asks the core to act, off the GUI thread), ``text`` and
``timeout_scale`` (pure, no Qt), ``theme``, ``a11y``, ``icons``, ``ticker`` (1 Hz only while
visible), ``event_loop``. The parts: ``tray/`` (the icon, its menu and its model entries),
``windows/`` (Models, Try it, the log viewer), ``dialogs/`` (Settings and the rest),
``platform/`` (start at login, single instance, desktop hand-offs).
"""
