"""The database layer of the runtime and the CLI: one ``Store`` per (pool, schema), built once,
holding each part of it.

Each part is a module of its own, its statements in ``sql/<part>.sql``:

- ``store.instances`` (``instances.py``): the processes and their leases;
- ``store.configuration`` (``configuration.py``): the actors' rows made to match the config;
- ``store.runs`` (``runs.py``): the hot path, due window, claim, finish, checkpoint;
- ``store.operator`` (``operator.py``): status, history, pause, resume, trigger, notices;
- ``store.keyed`` (``keyed.py``): keyed schedules, their limits;
- ``store.retention`` (``retention.py``): deleting old runs;
- ``store.rate_budgets`` (``pacing.py``): request slots shared by the processes of a bot.

The records they take and return are in ``records.py``; this module re-exports them (and the
exceptions), so that ``from discord_actor.db.store import Outcome`` keeps working.
"""

from __future__ import annotations

import asyncpg

from .configuration import Configuration
from .instances import Instances
from .keyed import KeyConflict, KeyedSchedules, LimitExceeded
from .migrations import quote_ident
from .operator import NOTICE_REASON_CHARS, OperatorActions, describe_notice
from .pacing import RateBudgets
from .queries import ANALYZE_AFTER_ROWS, notify_channel
from .records import (
    ClaimedRun,
    ClaimRequest,
    DueWindow,
    Finished,
    KeyedRow,
    KeyedWrite,
    Operator,
    Outcome,
    TaskChange,
    TaskSpec,
    TaskView,
)
from .retention import Retention
from .runs import Runs

__all__ = [
    "ANALYZE_AFTER_ROWS",
    "NOTICE_REASON_CHARS",
    "ClaimRequest",
    "ClaimedRun",
    "DueWindow",
    "Finished",
    "KeyConflict",
    "KeyedRow",
    "KeyedWrite",
    "LimitExceeded",
    "Operator",
    "Outcome",
    "Store",
    "TaskChange",
    "TaskSpec",
    "TaskView",
    "describe_notice",
    "quote_ident",
]


class Store:
    """The parts of the database layer, on one pool and one schema."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self.instances = Instances(pool, schema)
        self.configuration = Configuration(pool, schema)
        self.runs = Runs(pool, schema)
        self.operator = OperatorActions(pool, schema)
        self.keyed = KeyedSchedules(pool, schema)
        self.retention = Retention(pool, schema)
        self.rate_budgets = RateBudgets(pool, schema)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel that wakes running servers after operator commands."""
        return notify_channel(self.schema)
