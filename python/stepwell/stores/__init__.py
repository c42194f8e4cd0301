"""Stores that come with stepwell."""

from .memory import Decide, IllegalTransition, MemoryStore

__all__ = ["Decide", "IllegalTransition", "MemoryStore"]
