"""One root for every exception of the package, each keeping the base it had before the root
existed; one ``UnknownActor`` for the keyed schedules API and the operator's commands."""

from __future__ import annotations

import builtins
import importlib
import pkgutil

import pytest

import discord_actor
from discord_actor import keyed, operations
from discord_actor.db import Database
from discord_actor.db.store import Store
from discord_actor.errors import (
    DiscordActorError,
    NotRetried,
    OperationError,
    ScheduleError,
    UnknownActor,
)
from discord_actor.keyed import Schedules
from discord_actor.operations import Operations
from discord_actor.testing.harness import actor_config, make_config

# Every exception class the package defines, by where it is defined: the standard exception it
# derived from before DiscordActorError existed (still its nearest built-in base, so that code
# catching that keeps working), then the package's own bases it keeps. A new exception class
# gets a line here.
EXPECTED: dict[str, tuple[type[BaseException], ...]] = {
    "discord_actor.bot.GatewayUnreachable": (Exception,),
    "discord_actor.budget.PoolExhausted": (Exception,),
    "discord_actor.cli.common.NoDatabaseYet": (Exception,),
    "discord_actor.config.model.ConfigError": (Exception,),
    "discord_actor.db.NoDatabase": (Exception,),
    "discord_actor.db.acl.AclUnsupported": (OSError,),
    "discord_actor.db.keyed.KeyConflict": (Exception,),
    "discord_actor.db.keyed.LimitExceeded": (Exception,),
    "discord_actor.db.migrations.MigrationError": (Exception,),
    "discord_actor.db.pool.DatabaseUnavailable": (Exception,),
    "discord_actor.errors.DiscordActorError": (Exception,),
    "discord_actor.errors.NotRetried": (Exception,),
    "discord_actor.errors.OperationError": (Exception,),
    "discord_actor.errors.ScheduleError": (Exception,),
    "discord_actor.errors.UnknownActor": (Exception, ScheduleError, OperationError),
    "discord_actor.hosting.HostError": (Exception,),
    "discord_actor.keyed.InvalidKey": (Exception, ScheduleError),
    "discord_actor.keyed.InvalidPayload": (Exception, ScheduleError),
    "discord_actor.keyed.InvalidSchedule": (Exception, ScheduleError),
    "discord_actor.keyed.ScheduleConflict": (Exception, ScheduleError),
    "discord_actor.keyed.ScheduleLimitReached": (Exception, ScheduleError),
    "discord_actor.logs.LogSettingError": (ValueError,),
    "discord_actor.operations.ActorDisabled": (Exception, OperationError),
    "discord_actor.operations.ActorPaused": (Exception, OperationError),
    "discord_actor.operations.ActorRemoved": (Exception, OperationError),
    "discord_actor.operations.NotStarted": (Exception, OperationError),
    "discord_actor.operations.RunNotFound": (Exception, OperationError),
    "discord_actor.operations.ScheduleNotFound": (Exception, OperationError),
    "discord_actor.operations.ScheduleRefused": (Exception, OperationError),
    "discord_actor.outcome.StateNotSerializable": (TypeError,),
    "discord_actor.outcome_writer.RunNoLongerOwned": (RuntimeError,),
    "discord_actor.platforms.discord.DiscordPostError": (Exception,),
    "discord_actor.platforms.discord.DiscordRefused": (Exception, NotRetried),
    "discord_actor.platforms.discord.DiscordUnavailable": (Exception,),
    "discord_actor.platforms.discord.InvalidPost": (Exception, NotRetried),
    "discord_actor.platforms.none.PostingNotSupported": (RuntimeError,),
    "discord_actor.plugins.PluginError": (Exception,),
    "discord_actor.storable.Unstorable": (ValueError,),
    "discord_actor.testing.fake_discord.errors.ApiError": (Exception,),
    "discord_actor.testing.fake_discord.errors.FakeDiscordError": (Exception,),
    "discord_actor.web.access.AddressInUse": (Exception,),
    "discord_actor.web.access.HttpUnavailable": (Exception,),
}


def defined_exceptions() -> dict[str, type[Exception]]:
    """Every ``Exception`` subclass defined in a module of the package, each module imported
    (none skipped). ``BaseException``-only signals (``hosting._StoppedAtStartup``) are not
    errors and are left out."""
    found: dict[str, type[Exception]] = {}
    for info in pkgutil.walk_packages(discord_actor.__path__, "discord_actor."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Exception)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{value.__qualname__}"] = value
    return found


def nearest_builtin_base(cls: type) -> type:
    return next(c for c in cls.__mro__ if c.__module__ == builtins.__name__)


def test_every_exception_derives_from_the_root_and_keeps_its_old_bases() -> None:
    found = defined_exceptions()
    assert sorted(found) == sorted(EXPECTED)  # a new exception class: a line in EXPECTED
    assert [name for name, cls in found.items() if not issubclass(cls, DiscordActorError)] == []
    for name, cls in found.items():
        standard, *own = EXPECTED[name]
        assert nearest_builtin_base(cls) is standard, name
        assert all(issubclass(cls, base) for base in own), name


def test_unknown_actor_is_one_class_exported_by_both_apis() -> None:
    assert keyed.UnknownActor is operations.UnknownActor is UnknownActor
    assert discord_actor.UnknownActor is UnknownActor
    assert keyed.ScheduleError is discord_actor.ScheduleError is ScheduleError
    assert operations.OperationError is OperationError
    with pytest.raises(ScheduleError):
        raise UnknownActor("ghost")
    with pytest.raises(OperationError):
        raise UnknownActor("ghost")


async def test_unknown_actor_keeps_each_apis_message(database: Database) -> None:
    config = make_config(database.config, [actor_config("ticker"), actor_config("digest")])

    with pytest.raises(OperationError) as refused:  # the operator's commands: "did you mean"
        await Operations(None, config).history("tikcer")
    assert isinstance(refused.value, UnknownActor)
    assert str(refused.value) == "unknown actor 'tikcer'; did you mean 'ticker'?"
    assert (refused.value.actor, refused.value.suggestion) == ("tikcer", "ticker")
    assert refused.value.known == ["digest", "ticker"]

    schedules = Schedules(Store(database.pool, database.schema), config)
    with pytest.raises(ScheduleError) as unknown:  # the keyed schedules API: the config file
        await schedules.remove("ghost", "k")
    assert isinstance(unknown.value, UnknownActor)
    assert str(unknown.value) == (
        f"unknown actor 'ghost': not in {config.path} (actors: digest, ticker)"
    )
    assert (unknown.value.actor, unknown.value.suggestion) == ("ghost", None)
    assert unknown.value.known == ["digest", "ticker"]

    nobody = Schedules(Store(database.pool, database.schema), make_config(database.config))
    with pytest.raises(UnknownActor, match=r"\(actors: none\)$"):
        await nobody.remove("ghost", "k")
