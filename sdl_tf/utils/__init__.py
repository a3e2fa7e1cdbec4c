"""Shared helpers: atomic writes and local-vs-gfile file access."""
