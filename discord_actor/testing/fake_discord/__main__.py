"""Run the fake Discord standalone: ``python -m discord_actor.testing.fake_discord``.

Prints the token and the addresses to put in ``api_base_url`` and ``gateway_url``, then every
message a bot posts or answers and every command set it registers (``console``), so that a bot
pointed at it shows what it does. Injected messages and interactions need the Python API (or
``discord-actor sandbox``, which types commands from the terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .console import Console
from .limits import DiscordLimits
from .server import FakeDiscord


async def serve(token: str | None, heartbeat_ms: int, limits: DiscordLimits | None) -> None:
    async with FakeDiscord(token=token, heartbeat_interval_ms=heartbeat_ms, limits=limits) as fake:
        print(f"DISCORD_TOKEN={fake.token}")
        print(f"api_base_url = {fake.api_url!r}")
        print(f"gateway_url = {fake.gateway_url!r}")
        print(f"guild {fake.guild.id}, channel #{fake.channel.name} {fake.channel.id}", flush=True)
        fake.listen(Console(fake).show)
        await asyncio.Event().wait()  # until interrupted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--token", help="bot token to accept (default: a random one)")
    parser.add_argument("--heartbeat-ms", type=int, default=41_250)
    parser.add_argument(
        "--discord-limits",
        action="store_true",
        help="enforce Discord's limits: 50 requests/s per token, 5 messages per 5 s a channel",
    )
    args = parser.parse_args()
    limits = DiscordLimits() if args.discord_limits else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.token, args.heartbeat_ms, limits))


if __name__ == "__main__":
    main()
