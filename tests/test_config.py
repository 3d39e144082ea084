"""Configuration loading: every error names file, line and key; env expansion; redaction."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from discord_actor.config import (
    Config,
    ConfigError,
    Problem,
    dump_config,
    load_config,
    redact_url,
    write_starter,
)
from discord_actor.schedules import build_schedule

# One valid actor; tests append lines or whole tables to it.
BASE = """\
[server]
timezone = "UTC"

[[actors]]
name = "tick"
module = "tick"

[actors.schedule]
type = "interval"
seconds = 5
"""


def write(tmp_path: Path, text: str, name: str = "actor_server.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ={} if environ is None else environ)


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return info.value.problems


def problem(tmp_path: Path, text: str, key: str, line: int | None,
            environ: dict[str, str] | None = None) -> Problem:
    """The one problem reported for ``key``; checks it names the file, line and key."""
    found = problems(tmp_path, text, environ)
    matching = [p for p in found if p.key == key]
    assert len(matching) == 1, found
    p = matching[0]
    assert p.file == str(tmp_path / "actor_server.toml")
    assert p.line == line, p
    text_form = str(p)
    assert text_form.startswith(f"{p.file}:{line}: {key}: " if line else f"{p.file}: {key}: ")
    return p


def actor_text(name: str, *lines: str, schedule: str = 'type = "interval"\nseconds = 5') -> str:
    body = "\n".join(lines)
    return f'\n[[actors]]\nname = "{name}"\nmodule = "m"\n{body}\n[actors.schedule]\n{schedule}\n'


# --- file-level errors ----------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_toml_syntax_error_reports_its_line(tmp_path: Path) -> None:
    [p] = problems(tmp_path, '[server]\ntimezone = "UTC"\nmax_concurrent_runs = \n')
    assert p.line == 3
    assert p.key == ""
    assert str(p).startswith(f"{tmp_path / 'actor_server.toml'}:3: invalid TOML")


# --- unknown keys and types -----------------------------------------------------------------


def test_unknown_key_suggests_the_near_miss(tmp_path: Path) -> None:
    p = problem(tmp_path, BASE.replace('timezone = "UTC"', 'timezon = "UTC"'),
                "server.timezon", 2)
    assert "did you mean 'timezone'?" in p.message


def test_unknown_table_and_actor_key(tmp_path: Path) -> None:
    text = BASE + '\n[sever]\n' + actor_text("b", "modul = 'x'")
    assert "did you mean 'server'?" in problem(tmp_path, text, "sever", 12).message
    assert "did you mean 'module'?" in problem(tmp_path, text, "actors[1].modul", 17).message


def test_unknown_key_without_near_miss_lists_the_allowed_keys(tmp_path: Path) -> None:
    p = problem(tmp_path, BASE + "\n[discord]\nwhatever = 1\n", "discord.whatever", 13)
    assert "token_env" in p.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_concurrent_runs = true", "must be an integer, not boolean true"),
        ("max_concurrent_runs = 4.0", "must be an integer, not float 4.0"),
        ('max_concurrent_runs = "4"', "must be an integer, not string '4'"),
        ("default_timeout_seconds = false", "must be a number, not boolean false"),
        ("default_timeout_seconds = inf", "must be a finite number"),
        ("timezone = 3", "must be a string, not integer 3"),
    ],
)
def test_wrong_types(tmp_path: Path, line: str, message: str) -> None:
    key = "server." + line.split(" = ")[0]
    text = BASE.replace('timezone = "UTC"', line)
    assert message in problem(tmp_path, text, key, 2).message


def test_actor_bool_and_table_types(tmp_path: Path) -> None:
    text = BASE.replace('module = "tick"', 'module = "tick"\nenabled = 1\nsettings = 5')
    assert "true or false" in problem(tmp_path, text, "actors[0].enabled", 7).message
    assert "must be a table" in problem(tmp_path, text, "actors[0].settings", 8).message


def test_actors_written_as_a_table(tmp_path: Path) -> None:
    p = problem(tmp_path, '[actors]\nname = "x"\n', "actors", 1)
    assert "[[actors]]" in p.message


# --- invalid values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("server", "max_concurrent_runs = 0", "at least 1"),
        ("server", "max_consecutive_failures = -1", "at least 1"),
        ("server", "default_timeout_seconds = 0", "greater than 0"),
        ("server", "lease_seconds = -5", "greater than 0"),
        ("server", "shutdown_grace_seconds = -1", "at least 0"),
        ("database", "min_pool_size = 0", "at least 1"),
        ("database", "max_pool_size = 1", "one pooled connection for its own bookkeeping"),
        ("database", "statement_cache_size = -1", "at least 0"),
        ("database", "acquire_timeout_seconds = 0", "greater than 0"),
        ("discord", "alert_channel_id = -3", "at least 0"),
    ],
)
def test_invalid_sizes(tmp_path: Path, section: str, line: str, message: str) -> None:
    text = f"[{section}]\n{line}\n"
    key = f"{section}.{line.split(' = ')[0]}"
    assert message in problem(tmp_path, text, key, 2).message


def test_min_pool_size_above_max(tmp_path: Path) -> None:
    p = problem(tmp_path, "[database]\nmin_pool_size = 8\nmax_pool_size = 4\n",
                "database.min_pool_size", 2)
    assert "more than database.max_pool_size (4)" in p.message
    p = problem(tmp_path, "[database]\nmin_pool_size = 11\n", "database.min_pool_size", 2)
    assert "more than database.max_pool_size (10)" in p.message  # the default


def test_actor_max_connections_beyond_the_pool(tmp_path: Path) -> None:
    text = "[database]\nmax_pool_size = 4\n" + actor_text("a", "max_connections = 4")
    p = problem(tmp_path, text, "actors[0].max_connections", 7)
    assert "keeps one connection" in p.message


def test_owner_ids_must_be_integers(tmp_path: Path) -> None:
    text = '[discord]\nowner_ids = [\n  1,\n  "two",\n]\n'
    # An element of a multi-line array points at the array's key.
    assert "must be an integer" in problem(tmp_path, text, "discord.owner_ids[1]", 2).message


def test_bad_platform(tmp_path: Path) -> None:
    text = BASE.replace('module = "tick"', 'module = "tick"\nplatform = "discrod"')
    p = problem(tmp_path, text, "actors[0].platform", 7)
    assert "did you mean 'discord'?" in p.message


def test_bad_schedule_type(tmp_path: Path) -> None:
    text = BASE.replace('type = "interval"', 'type = "hourly"')
    assert "'hourly' is not one of" in problem(tmp_path, text, "actors[0].schedule.type",
                                               9).message


def test_bad_catch_up(tmp_path: Path) -> None:
    text = BASE + 'catch_up = "first"\n'
    p = problem(tmp_path, text, "actors[0].schedule.catch_up", 11)
    assert "'latest'" in p.message


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        (BASE.replace('"UTC"', '"Mars/Olympus"'), "server.timezone", 2),
        (BASE + 'timezone = "Europe/Berln"\n', "actors[0].schedule.timezone", 11),
    ],
)
def test_bad_time_zone(tmp_path: Path, text: str, key: str, line: int) -> None:
    assert "unknown time zone" in problem(tmp_path, text, key, line).message


def test_bad_time_zone_suggests(tmp_path: Path) -> None:
    text = BASE + 'timezone = "Europe/Berln"\n'
    assert "did you mean 'Europe/Berlin'?" in problem(
        tmp_path, text, "actors[0].schedule.timezone", 11).message


def test_invalid_cron_expression(tmp_path: Path) -> None:
    text = BASE + actor_text("c", schedule='type = "cron"\nexpression = "61 * * * *"')
    p = problem(tmp_path, text, "actors[1].schedule.expression", 18)
    assert "'61 * * * *'" in p.message and "minute" in p.message


def test_cron_without_expression(tmp_path: Path) -> None:
    text = BASE + actor_text("c", schedule='type = "cron"')
    problem(tmp_path, text, "actors[1].schedule.expression", 16)


def test_interval_without_seconds_or_with_zero(tmp_path: Path) -> None:
    assert "missing" in problem(tmp_path, BASE.replace("seconds = 5\n", ""),
                                "actors[0].schedule.seconds", 8).message
    assert "greater than 0" in problem(tmp_path, BASE.replace("seconds = 5", "seconds = 0"),
                                       "actors[0].schedule.seconds", 10).message


def test_once_without_at_or_with_a_bad_one(tmp_path: Path) -> None:
    problem(tmp_path, actor_text("o", schedule='type = "once"'), "actors[0].schedule.at", 6)
    p = problem(tmp_path, actor_text("o", schedule='type = "once"\nat = "tomorrow"'),
                "actors[0].schedule.at", 8)
    assert "ISO 8601" in p.message
    p = problem(tmp_path, actor_text("o", schedule='type = "once"\nat = 2026-12-01'),
                "actors[0].schedule.at", 8)
    assert "date and time" in p.message


def test_key_of_another_schedule_type(tmp_path: Path) -> None:
    text = BASE + 'expression = "* * * * *"\n'
    p = problem(tmp_path, text, "actors[0].schedule.expression", 11)
    assert "only applies to cron schedules" in p.message


def test_actor_without_a_schedule_runs_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "actor_server.toml"
    path.write_text('[[actors]]\nname = "a"\nmodule = "a"\n')
    (actor,) = load_config(path).actors
    assert actor.schedule.type == "none"
    assert build_schedule(actor.schedule).initial_slot(datetime.now(UTC)) is None


def test_discord_actor_without_channel_id(tmp_path: Path) -> None:
    text = BASE + actor_text("d", 'platform = "discord"')
    p = problem(tmp_path, text, "actors[1].channel_id", 15)  # the platform line
    assert "platform = \"discord\"" in p.message


def test_discord_actor_without_a_schedule_needs_no_channel_id(tmp_path: Path) -> None:
    """It runs only by keyed schedules, which bring their own channel."""
    path = tmp_path / "actor_server.toml"
    path.write_text('[[actors]]\nname = "r"\nmodule = "r"\nplatform = "discord"\n')
    (actor,) = load_config(path, environ={}).actors
    assert (actor.schedule.type, actor.platform, actor.channel_id) == ("none", "discord", None)


def test_duplicate_actor_names(tmp_path: Path) -> None:
    text = BASE + actor_text("other") + actor_text("tick")
    p = problem(tmp_path, text, "actors[2].name", 21)
    assert "duplicate actor name 'tick' (also actors[0], line 5)" in p.message


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "émoji"])
def test_invalid_actor_name(tmp_path: Path, name: str) -> None:
    p = problem(tmp_path, actor_text(name), "actors[0].name", 3)
    assert "not a valid actor name" in p.message


def test_actor_name_and_module_required(tmp_path: Path) -> None:
    text = "[[actors]]\nenabled = true\n[actors.schedule]\ntype = 'immediate'\n"
    found = {p.key: p for p in problems(tmp_path, text)}
    assert found["actors[0].name"].line == 1
    assert found["actors[0].module"].line == 1


@pytest.mark.parametrize("module", ["1abc", "a..b", "a/b.py", ""])
def test_invalid_module(tmp_path: Path, module: str) -> None:
    text = BASE.replace('module = "tick"', f'module = "{module}"')
    assert "not a module name" in problem(tmp_path, text, "actors[0].module", 6).message


@pytest.mark.parametrize("schema", ["Upper", "1st", "with-dash", "x" * 64, ""])
def test_invalid_schema_name(tmp_path: Path, schema: str) -> None:
    text = f'[database]\nschema = "{schema}"\n'
    assert "not a valid schema name" in problem(tmp_path, text, "database.schema", 2).message


def test_database_url_must_be_postgresql_and_is_not_leaked(tmp_path: Path) -> None:
    text = '[database]\nurl = "mysql://me:hunter2@db/x"\n'
    p = problem(tmp_path, text, "database.url", 2)
    assert "hunter2" not in str(p)


def test_token_env_is_a_variable_name_and_a_pasted_token_is_not_echoed(tmp_path: Path) -> None:
    token = "MTE0NjA5.GhIjKl.mnopqrstuvwxyz0123456789"
    p = problem(tmp_path, f'[discord]\ntoken_env = "{token}"\n', "discord.token_env", 2)
    assert token not in str(p) and "never the token itself" in p.message


def test_inline_retry_table_points_at_its_line(tmp_path: Path) -> None:
    text = BASE.replace(
        'module = "tick"',
        'module = "tick"\nretry = { attempts = 0, backoff_seconds = 10, max_backoff_seconds = 1 }',
    )
    found = {p.key: p for p in problems(tmp_path, text)}
    assert set(found) == {"actors[0].retry.attempts", "actors[0].retry.max_backoff_seconds"}
    assert {p.line for p in found.values()} == {7}


# --- all at once, and where lines are found -------------------------------------------------


def test_all_problems_are_reported_at_once_in_line_order(tmp_path: Path) -> None:
    text = """\
[server]
timezone = "Nowhere/Land"
max_concurrent_runs = 0

[database]
max_pool_size = 1

[[actors]]
name = "a"
module = "a"
platform = "discord"

[actors.schedule]
type = "cron"
expression = "* * *"

[[actors]]
name = "a"
module = "b"
schedule = { type = "Interval", seconds = -1 }
"""
    found = problems(tmp_path, text)
    assert [(p.line, p.key) for p in found] == [
        (2, "server.timezone"),
        (3, "server.max_concurrent_runs"),
        (6, "database.max_pool_size"),
        (11, "actors[0].channel_id"),
        (15, "actors[0].schedule.expression"),
        (18, "actors[1].name"),
        (20, "actors[1].schedule.seconds"),
    ]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "actor_server.toml", environ={})
    assert len(str(info.value).splitlines()) == 7


def test_lines_of_dotted_and_quoted_keys_and_multiline_strings(tmp_path: Path) -> None:
    text = """\
[[actors]]
name = "a"
module = "a"
"settings".note = '''
jitter_seconds = "not a key"
'''
schedule.type = "interval"
schedule . "jitter_seconds" = -1
"""
    problem(tmp_path, text, "actors[0].schedule.jitter_seconds", 8)
    problem(tmp_path, text, "actors[0].schedule.seconds", 7)


# --- defaults, normalization, paths ---------------------------------------------------------


def test_schedule_types_are_case_insensitive(tmp_path: Path) -> None:
    text = BASE.replace('"interval"', '"Interval"') + actor_text(
        "boot", schedule='type = "Immediate"') + actor_text(
        "c", schedule='type = "CRON"\nexpression = "0 9 * * 1-5"')
    config = load(tmp_path, text)
    assert [a.schedule.type for a in config.actors] == ["interval", "immediate", "cron"]


def test_effective_defaults(tmp_path: Path) -> None:
    text = """\
[server]
timezone = "Europe/Berlin"
default_timeout_seconds = 90
max_consecutive_failures = 7

[[actors]]
name = "a"
module = "pkg.mod"
timeout_seconds = 5
retry = { attempts = 3 }

[actors.schedule]
type = "cron"
expression = "0 9 * * *"

[[actors]]
name = "b"
module = "b"
max_consecutive_failures = 2
schedule = { type = "interval", seconds = 2.5, timezone = "America/New_York" }
"""
    config = load(tmp_path, text)
    a, b = config.actors
    assert (a.schedule.timezone, b.schedule.timezone) == ("Europe/Berlin", "America/New_York")
    assert (a.timeout_seconds, b.timeout_seconds) == (5.0, 90.0)
    assert (a.max_consecutive_failures, b.max_consecutive_failures) == (7, 2)
    assert (a.retry.attempts, a.retry.backoff_seconds) == (3, 5.0)
    assert (a.platform, a.channel_id, a.enabled, b.index) == (None, None, True, 1)
    assert b.schedule.seconds == 2.5 and isinstance(b.schedule.seconds, float)
    assert config.actor("b") is b


def test_once_at_forms(tmp_path: Path) -> None:
    text = (
        actor_text("a", schedule='type = "once"\nat = 2026-12-01T09:00:00+01:00')
        + actor_text("b", schedule='type = "once"\nat = "2026-12-01T08:00:00Z"')
        + actor_text("c", schedule='type = "once"\nat = 2026-12-01T09:00:00\n'
                     'timezone = "Europe/Berlin"')
        + actor_text("d", schedule='type = "once"\nat = "2026-07-01 09:00"\n'
                     'timezone = "Europe/Berlin"')
    )
    a, b, c, d = (x.schedule.at for x in load(tmp_path, text).actors)
    assert a == b == c == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert d is not None and d.utcoffset() == timedelta(hours=2)  # summer time in Berlin
    assert a is not None and a.utcoffset() == timedelta(hours=1)


def test_once_local_time_at_dst_changes(tmp_path: Path) -> None:
    text = (
        actor_text("gap", schedule='type = "once"\nat = 2026-03-29T02:30:00\n'
                   'timezone = "Europe/Berlin"')
        + actor_text("fold", schedule='type = "once"\nat = 2026-10-25T02:30:00\n'
                     'timezone = "Europe/Berlin"')
    )
    gap, fold = (x.schedule.at for x in load(tmp_path, text).actors)
    assert gap == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST, after the jump
    assert fold == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30


def test_paths_are_relative_to_the_config_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf, '[server]\nactors_dir = "plugins"\n[database]\ndata_dir = "../state/pg"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/actor_server.toml"), environ={})
    assert config.path == conf / "actor_server.toml"
    assert config.server.actors_dir == conf / "plugins"
    assert config.database.data_dir == tmp_path / "state" / "pg"
    assert config.actors == ()


# --- [discord] hosting keys and actors' allowed_mentions ------------------------------------


def test_discord_hosting_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    d = config.discord
    assert d.intents == ("default",)
    assert (d.command_guild_ids, d.shard_count, d.shard_ids) == ((), None, None)
    assert d.api_base_url == "https://discord.com/api/v10"
    assert d.gateway_url == "wss://gateway.discord.gg/"
    assert config.actors[0].allowed_mentions == ()


def test_discord_hosting_keys(tmp_path: Path) -> None:
    text = BASE + """
[discord]
intents = ["guilds", "guild_messages", "members", "guilds"]
command_guild_ids = [111, 222]
shard_count = 4
shard_ids = [2, 3]
api_base_url = "http://rest-proxy:8080/api/v10/"
gateway_url = "ws://gateway-proxy:7878"
""" + actor_text("loud", 'allowed_mentions = ["users", "roles", "everyone"]')
    config = load(tmp_path, text)
    d = config.discord
    assert d.intents == ("guilds", "guild_messages", "members")  # duplicates dropped
    assert d.command_guild_ids == (111, 222)
    assert (d.shard_count, d.shard_ids) == (4, (2, 3))
    assert d.api_base_url == "http://rest-proxy:8080/api/v10"  # discord.py appends /path
    assert d.gateway_url == "ws://gateway-proxy:7878"
    assert config.actor("loud").allowed_mentions == ("users", "roles", "everyone")


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('intents = ["guild", "members"]', "discord.intents[0]",
         "unknown intent 'guild'; did you mean 'guilds'?"),
        ('intents = "guilds"', "discord.intents", "must be an array of intent names"),
        ("intents = [1]", "discord.intents[0]", "must be a string, not integer 1"),
        ("command_guild_ids = [0]", "discord.command_guild_ids[0]", "at least 1"),
        ("shard_count = 0", "discord.shard_count", "at least 1"),
        ("shard_ids = [0]", "discord.shard_ids", "needs discord.shard_count"),
        ("shard_ids = []", "discord.shard_ids", "non-empty array"),
        ("shard_count = 2\nshard_ids = [1, 2]", "discord.shard_ids[1]",
         "shard 2 does not exist: shard_count is 2, so shards are numbered 0 to 1"),
        ("shard_count = 2\nshard_ids = [1, 1]", "discord.shard_ids[1]", "listed twice"),
        ("shard_count = 2\nshard_ids = [-1]", "discord.shard_ids[0]", "at least 0"),
        ('api_base_url = "discord.com/api/v10"', "discord.api_base_url",
         "must be a URL starting with http:// or https://"),
        ('gateway_url = "https://gateway.discord.gg"', "discord.gateway_url",
         "must be a URL starting with ws:// or wss://"),
        ('api_base_url = "ftp://user:hunter2@proxy/"', "discord.api_base_url", "user:***@"),
    ],
)
def test_discord_hosting_problems(tmp_path: Path, line: str, key: str, message: str) -> None:
    text = f"[discord]\n{line}\n"
    found = [p for p in problems(tmp_path, text) if p.key == key]
    assert len(found) == 1, problems(tmp_path, text)
    assert message in found[0].message
    assert found[0].line is not None and "hunter2" not in str(found[0])


def test_allowed_mentions_problems(tmp_path: Path) -> None:
    text = BASE.replace('module = "tick"', 'module = "tick"\nallowed_mentions = ["user", 1]')
    found = {p.key: p for p in problems(tmp_path, text)}
    assert "did you mean 'users'?" in found["actors[0].allowed_mentions[0]"].message
    assert found["actors[0].allowed_mentions[0]"].line == 7
    assert "must be a string" in found["actors[0].allowed_mentions[1]"].message
    text = BASE.replace('module = "tick"', 'module = "tick"\nallowed_mentions = "everyone"')
    p = problem(tmp_path, text, "actors[0].allowed_mentions", 7)
    assert "must be an array of mention kind names" in p.message


def test_intent_names_are_discord_py_s() -> None:
    import discord

    from discord_actor.config import INTENT_NAMES, PRIVILEGED_INTENTS

    assert set(INTENT_NAMES) == set(discord.Intents.VALID_FLAGS)
    default = discord.Intents.default()
    assert [name for name in PRIVILEGED_INTENTS if getattr(default, name)] == []
    assert {n for n in INTENT_NAMES if not getattr(default, n)} >= set(PRIVILEGED_INTENTS)


def test_dump_shows_discord_keys_and_hides_proxy_credentials(tmp_path: Path) -> None:
    text = BASE + (
        '\n[discord]\nintents = ["guilds"]\nshard_count = 2\n'
        'api_base_url = "https://bot:s3cret@proxy/api/v10"\n'
    ) + actor_text("b", 'allowed_mentions = ["roles"]')
    dumped = dump_config(load(tmp_path, text))
    assert "s3cret" not in dumped
    assert 'intents = ["guilds"]' in dumped and "shard_count = 2" in dumped
    assert 'api_base_url = "https://bot:***@proxy/api/v10"' in dumped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = load_config(write(elsewhere, dumped), environ={})
    assert again.actor("b").allowed_mentions == ("roles",)
    assert again.discord.intents == ("guilds",) and again.discord.shard_count == 2


# --- environment ----------------------------------------------------------------------------


def test_env_expansion_set_default_and_nested(tmp_path: Path) -> None:
    text = """\
[database]
url = "${DATABASE_URL:-}"
schema = "${SCHEMA:-bots}"

[discord]
token_env = "${TOKEN_VAR}"
alert_channel_id = "${ALERTS:-42}"

[[actors]]
name = "a"
module = "a"
platform = "discord"
channel_id = "${CHANNEL}"
enabled = "${A_ENABLED:-false}"
settings = { feed = "https://${HOST}/rss", tags = ["$${HOST}", "$HOST"], deep = { x = "${HOST}" } }
schedule = { type = "interval", seconds = "${EVERY:-2.5}" }
"""
    env = {"TOKEN_VAR": "MY_TOKEN", "CHANNEL": "123", "HOST": "example.org", "SCHEMA": ""}
    config = load(tmp_path, text, env)
    assert config.database.url == ""
    assert config.database.schema == "bots"  # empty counts as unset, as in the shell
    assert config.discord.token_env == "MY_TOKEN"
    assert config.discord.alert_channel_id == 42
    [a] = config.actors
    assert (a.channel_id, a.enabled, a.schedule.seconds) == (123, False, 2.5)
    assert a.settings == {"feed": "https://example.org/rss", "tags": ["$example.org", "$HOST"],
                          "deep": {"x": "example.org"}}


def test_env_missing_variable(tmp_path: Path) -> None:
    text = BASE.replace('module = "tick"', 'module = "tick"\nsettings = { a = ["${NOPE}"] }')
    p = problem(tmp_path, text, "actors[0].settings.a[0]", 7)
    assert "'NOPE' is not set" in p.message


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("alert_channel_id = '${X}'", "discord.alert_channel_id", "must be an integer"),
        ("owner_ids = '${X}'", "discord.owner_ids", "must be an array"),
    ],
)
def test_env_value_of_the_wrong_type_is_not_shown(tmp_path: Path, line: str, key: str,
                                                  message: str) -> None:
    p = problem(tmp_path, f"[discord]\n{line}\n", key, 2, environ={"X": "s3cr3t"})
    assert message in p.message and "s3cr3t" not in str(p)
    text = BASE.replace('module = "tick"', 'module = "tick"\nenabled = "${X}"')
    p = problem(tmp_path, text, "actors[0].enabled", 7, environ={"X": "s3cr3t"})
    assert "true or false" in p.message and "s3cr3t" not in str(p)


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DA_TEST_SCHEMA", "from_env")
    path = write(tmp_path, '[database]\nschema = "${DA_TEST_SCHEMA}"\n')
    assert load_config(path).database.schema == "from_env"


# --- redaction and dump ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://bot:hunter2@db:5432/bots", "postgresql://bot:***@db:5432/bots"),
        ("postgresql://bot:p@ss:w0rd@db/bots", "postgresql://bot:***@db/bots"),
        ("postgresql://bot@db/bots", "postgresql://bot@db/bots"),
        ("postgresql://db/bots?user=bot&password=hunter2&x=1",
         "postgresql://db/bots?user=bot&password=***&x=1"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


DUMP_TEXT = """\
[database]
url = "${DB_URL}"

[[actors]]
name = "feed"
module = "feeds.rss"
platform = "discord"
channel_id = 1234567890123
retry = { attempts = 3, backoff_seconds = 2 }
settings = { url = "https://x", API_KEY = "k-123", nested = { bot_token = "t-456", n = 1 } }

[actors.schedule]
type = "once"
at = 2026-03-29T02:30:00
timezone = "Europe/Berlin"
"""


def test_dump_redacts_secrets(tmp_path: Path) -> None:
    env = {"DB_URL": "postgresql://bot:hunter2@db/bots"}
    config = load(tmp_path, DUMP_TEXT, env)
    dumped = dump_config(config)
    for secret in ("hunter2", "k-123", "t-456"):
        assert secret not in dumped
    data = tomllib.loads(dumped)
    assert data["database"]["url"] == "postgresql://bot:***@db/bots"
    assert data["actors"][0]["settings"] == {
        "url": "https://x", "API_KEY": "***", "nested": {"bot_token": "***", "n": 1}}
    assert config.database.url == env["DB_URL"]  # the config itself keeps the real value


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load(tmp_path, DUMP_TEXT.replace("k-123", "k").replace("t-456", "t"),
                  {"DB_URL": "postgresql://bot@db/bots"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dumped = dump_config(config)
    again = load_config(write(elsewhere, dumped), environ={})
    redacted_settings = {"url": "https://x", "API_KEY": "***",
                         "nested": {"bot_token": "***", "n": 1}}
    assert again.actors[0].settings == redacted_settings
    assert again.actors[0].schedule.at == datetime(2026, 3, 29, 2, 30,
                                                   tzinfo=timezone(timedelta(hours=1)))
    assert (again.server, again.database, again.discord) == (
        config.server, config.database, config.discord)
    assert again.actors == (dataclasses.replace(config.actors[0], settings=redacted_settings),)
    # Dumping the reloaded configuration gives the same text (but for the source path).
    assert dump_config(again).split("\n", 1)[1] == dumped.split("\n", 1)[1]


# --- starter --------------------------------------------------------------------------------


def test_starter_files_load_and_refuse_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "bot"
    config_path, hello_path = write_starter(target)
    assert config_path == target / "actor_server.toml"
    assert hello_path == target / "actors" / "hello.py"
    config = load_config(config_path, environ={})
    [hello] = config.actors
    assert (hello.name, hello.module, hello.platform) == ("hello", "hello", "console")
    assert (hello.schedule.type, hello.schedule.seconds) == ("interval", 10.0)
    assert config.server.actors_dir == hello_path.parent
    assert config.database.url == ""
    assert config_path.read_text().startswith("# ")

    tree = ast.parse(hello_path.read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [b.id for b in cls.bases if isinstance(b, ast.Name)] == ["Actor"]
    assert "ctx.post(" in hello_path.read_text() and 'ctx.state["runs"]' in hello_path.read_text()

    config_path.write_text("# mine\n")
    with pytest.raises(FileExistsError) as info:
        write_starter(target)
    assert str(config_path) in str(info.value)
    assert config_path.read_text() == "# mine\n"
    config_path.unlink()
    with pytest.raises(FileExistsError, match=r"hello\.py"):
        write_starter(target)
    assert not config_path.exists()  # nothing written when refusing

    assert write_starter(target, force=True) == [config_path, hello_path]
    load_config(config_path, environ={"DATABASE_URL": "postgresql://u:p@h/d"})


# --- a key or table given twice -------------------------------------------------------------


def test_a_key_set_twice_names_the_key_and_both_lines(tmp_path: Path) -> None:
    text = '[server]\nactors_dir = "actors"\nactors_dir = "other"\n'
    p = problem(tmp_path, text, "server.actors_dir", 3)
    assert p.message.startswith("set twice (first at line 2)")
    assert "Cannot overwrite" not in str(p)


def test_a_table_declared_twice_names_the_table_and_both_lines(tmp_path: Path) -> None:
    text = '[server]\ntimezone = "UTC"\n\n[database]\nschema = "x"\n\n[server]\nlog_runs = "all"\n'
    p = problem(tmp_path, text, "server", 7)
    assert p.message.startswith("[server] appears twice (first at line 1)")


def test_a_key_set_twice_in_an_actor_names_the_actor_entry(tmp_path: Path) -> None:
    text = BASE + '\n[[actors]]\nname = "b"\nmodule = "m"\nmodule = "n"\n'
    p = problem(tmp_path, text, "actors[1].module", 15)
    assert p.message.startswith("set twice (first at line 14)")


def test_every_key_set_twice_is_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace('timezone = "UTC"', 'timezone = "UTC"\ntimezone = "UTC"') + 'seconds = 6\n'
    found = problems(tmp_path, text)
    assert [(p.key, p.line, p.message[:27]) for p in found] == [
        ("server.timezone", 3, "set twice (first at line 2)"),
        ("actors[0].schedule.seconds", 12, "set twice (first at line 11"),
    ]


def test_check_names_a_key_set_twice_and_exits_2(tmp_path: Path) -> None:
    write(tmp_path, '[server]\nactors_dir = "actors"\nactors_dir = "other"\n')
    p = subprocess.run([sys.executable, "-m", "discord_actor.cli", "check"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip() == (
        "actor_server.toml:3: server.actors_dir: set twice (first at line 2); a key may be set"
        " once per table"
    )
