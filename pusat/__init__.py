"""Pusat: the composition root (settings, the command line, the embedded runner of `pusat up`)."""

__version__ = "0.1.0"
