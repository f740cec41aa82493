"""Siesta: runs local model servers on demand and unloads them when they sit idle."""

__version__ = "0.1.0"
