"""What Discord refused, remembered so that the bot does not ask again.

Discord bans a bot's IP address for an hour after 10,000 invalid requests (401, 403, and 429s
other than ``shared``) in 10 minutes. A channel that refused a post (no access, unknown) would
refuse the next one too, so it is not asked again for ``REFUSAL_SECONDS``: its posts fail at once
with the same reason, and only the first one is an invalid request. Should invalid answers
still pile up (many channels, a revoked token), the guard stops all posting of the process well
before Discord's threshold, until its window has room again.
"""

from __future__ import annotations

import time
from collections import deque

#: Discord's window for invalid requests, and how long a refused channel is not asked again
REFUSAL_SECONDS = 600.0
#: invalid answers in the window that stop posting (Discord bans at 10,000)
INVALID_LIMIT = 1000


class Refusals:
    """Refused channels (with Discord's reason) and the invalid answers of the last window."""

    def __init__(self, limit: int = INVALID_LIMIT, window: float = REFUSAL_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._channels: dict[int, tuple[float, str]] = {}
        self._invalid: deque[float] = deque()
        #: invalid answers seen since the start (for metrics and tests)
        self.invalid_total = 0

    def refused(self, channel_id: int) -> str | None:
        """Why ``channel_id`` refused a post within the window, or None."""
        found = self._channels.get(channel_id)
        if found is None:
            return None
        if time.monotonic() - found[0] > self.window:
            del self._channels[channel_id]
            return None
        return found[1]

    def remember(self, channel_id: int, reason: str) -> None:
        self._channels[channel_id] = (time.monotonic(), reason)

    def invalid_answer(self) -> None:
        """Count a 401, a 403 or a 429 (not ``shared``) that Discord answered."""
        self._invalid.append(time.monotonic())
        self.invalid_total += 1

    def invalid_in_window(self) -> int:
        horizon = time.monotonic() - self.window
        while self._invalid and self._invalid[0] < horizon:
            self._invalid.popleft()
        return len(self._invalid)

    def stopped(self) -> bool:
        """Has the window as many invalid answers as the guard allows?"""
        return self.invalid_in_window() >= self.limit
