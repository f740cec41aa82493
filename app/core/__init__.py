"""The model manager and everything it needs, with no Qt: usable headless and testable with
plain pytest.

At the root: ``manager`` (the set of models, the policies between them, events), ``errors``,
``client`` (a Siesta elsewhere, shaped as a manager for the UI), ``discovery`` and ``spawn``
(the options every child process gets: no console window on Windows). The parts:
``models/`` (one model's life), ``memory/``, ``config/`` (files on disk and their vocabulary),
``hub/``, ``engine/``, ``remotes/`` and ``importers/``; ``tests/test_layers.py`` says which
may import which.
"""
