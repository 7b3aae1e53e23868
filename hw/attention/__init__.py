"""Length-aware block-sparse attention: the row scheduler that feeds P attention engines."""

from .scheduler import AttentionScheduler, Command, Descriptor
from .scheduler_params import SchedulerParams

__all__ = ["AttentionScheduler", "Command", "Descriptor", "SchedulerParams"]
