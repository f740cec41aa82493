"""Siesta's HTTP front door (OpenAI-compatible, routed by ``model``) and management API. No Qt."""
