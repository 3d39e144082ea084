"""The operator's actions on an actor: ``pause``, ``resume`` and ``trigger``, recorded with who
asked (the OS user, on this host)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from discord_actor.cli import output
from discord_actor.cli.common import (
    Commands,
    configured_actor,
    operator,
    project_config,
    with_operations,
)
from discord_actor.hosting import OK

if TYPE_CHECKING:
    from discord_actor.operations import Operations

_R = TypeVar("_R")


def add_commands(commands: Commands) -> None:
    """``pause``, ``resume`` and ``trigger``."""
    p = commands.add("pause", cmd_pause, "pause an actor (running servers stop starting its runs)")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("--reason", metavar="TEXT", help="shown by status")
    p = commands.add("resume", cmd_resume, "resume a paused actor and reset its failure count")
    p.add_argument("actor", metavar="ACTOR")
    p = commands.add("trigger", cmd_trigger, "ask a running server to run an actor now")
    p.add_argument("actor", metavar="ACTOR")


def cmd_pause(args: argparse.Namespace) -> int:
    name, result = _on_actor(args, lambda ops, name: ops.pause(name, args.reason, operator()))
    output.paused(name, result)
    return OK


def cmd_resume(args: argparse.Namespace) -> int:
    name, result = _on_actor(args, lambda ops, name: ops.resume(name, operator()))
    output.resumed(name, result)
    return OK


def cmd_trigger(args: argparse.Namespace) -> int:
    name, result = _on_actor(args, lambda ops, name: ops.trigger(name, operator()))
    output.triggered(name, result)
    return OK


def _on_actor(
    args: argparse.Namespace, action: Callable[[Operations, str], Awaitable[_R]]
) -> tuple[str, _R]:
    """``action`` on the configured actor the command names (an unknown name is refused before
    the database is opened): the actor's name and what ``action`` answered."""
    config = project_config(args)
    name = configured_actor(config, args.actor).name
    return name, with_operations(config, lambda ops: action(ops, name))
