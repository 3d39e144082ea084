"""Discord's own limits, as the fake enforces them when asked (``FakeDiscord(limits=...)``).

Discord takes at most 50 requests per second per bot token (interaction responses and webhooks
excepted), about 5 messages per 5 s per channel, and bans an IP for an hour after 10,000 invalid
requests (401, 403, and 429 other than ``X-RateLimit-Scope: shared``) in 10 minutes. Tests that
opt in meet the same answers production meets, and can count what a real bot would have drawn.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class DiscordLimits:
    """What the fake enforces: ``FakeDiscord(limits=DiscordLimits())`` is Discord's defaults."""

    #: requests per second per bot token (any 1 s window), interaction responses exempt
    global_per_second: int = 50
    #: messages per channel per ``channel_window`` seconds (a bucket that resets, like Discord's)
    channel_messages: int = 5
    channel_window: float = 5.0


class GlobalWindow:
    """The requests of the last second, by arrival: at most ``limit`` are let through."""

    def __init__(self, limit: int, window: float = 1.0) -> None:
        self.limit = limit
        self.window = window
        self._accepted: deque[float] = deque()
        self._tried: deque[float] = deque()
        #: the most requests that arrived (accepted or not) in any window so far
        self.peak = 0

    def take(self) -> float:
        """Count one request; 0 when it may pass, else the seconds until it could."""
        now = time.monotonic()
        for times in (self._accepted, self._tried):
            while times and times[0] <= now - self.window:
                times.popleft()
        self._tried.append(now)
        self.peak = max(self.peak, len(self._tried))
        if len(self._accepted) >= self.limit:
            return max(0.001, self._accepted[0] + self.window - now)
        self._accepted.append(now)
        return 0.0


class RequestCounts:
    """What a real bot would have been counted for: 429s by scope, and invalid requests."""

    def __init__(self) -> None:
        self.rate_limited: Counter[str] = Counter()  # "global", "user", "shared"
        self.invalid = 0

    def answered(self, status: int, scope: str | None) -> None:
        if status == 429:
            self.rate_limited[scope or "user"] += 1
            if scope != "shared":
                self.invalid += 1
        elif status in (401, 403):
            self.invalid += 1
