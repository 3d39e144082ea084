"""discord-actor: scheduled actors inside a Discord bot, tracked in PostgreSQL."""

from .actor import Actor, RunContext, actor
from .clock import FakeClock

__all__ = ["Actor", "FakeClock", "RunContext", "actor"]
__version__ = "0.1.0"
