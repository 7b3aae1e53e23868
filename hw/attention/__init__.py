"""Length-aware block-sparse attention: the row scheduler that feeds P attention engines."""

from .scheduler import AttentionScheduler, Command, Descriptor

__all__ = ["AttentionScheduler", "Command", "Descriptor"]
