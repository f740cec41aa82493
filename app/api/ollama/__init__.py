"""Ollama's API on Siesta's front door, so Ollama's clients (its CLI and libraries, Open WebUI,
editors' Ollama settings) use Siesta's models as they would use an Ollama.

* :mod:`.common`: Ollama's error shape and model names (``NAME:latest``, and back to the
  name Siesta knows);
* :mod:`.info`: ``GET /``, ``/api/version``, ``/api/tags``, ``/api/ps`` and ``POST /api/show``;
* :mod:`.generate`, :mod:`.translate`: ``/api/chat`` and ``/api/generate``, carried by the
  model's OpenAI-compatible server;
* :mod:`.embed`: ``/api/embed`` and the older ``/api/embeddings``;
* :mod:`.pull`: ``POST /api/pull`` of a Hugging Face GGUF (``hf.co/ORG/REPO:QUANT``) by
  Siesta's own pull, with Ollama's progress;
* :mod:`.manage`: who may pull and delete, ``DELETE /api/delete`` (the recipe moved aside),
  and 501 for ``create``, ``copy``, ``push`` and blobs.
"""
