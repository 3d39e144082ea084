"""Secrets never reach the screen: not in `config show`, not in logs, not in error messages.

Covers every password parameter of a database URL (``password``, ``sslpassword``, any
``*password*``) and credentials inside other values: ``https://user:pass@host``, ``Bearer``
and ``Bot`` tokens, Discord webhook URLs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from discord_actor.config import DatabaseConfig, redact_text, redact_url
from discord_actor.db import DatabaseUnavailable, create_pool

BOT_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz0123"
SECRETS = ("hunter2-userinfo", "ssl-s3cret-pass", "param-s3cret", "pa55-in-url",
           "bearer-t0ken-123", BOT_TOKEN, "hook-t0ken-abc")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://bot:hunter2@db/bots?sslmode=verify-full&sslpassword=k3y-pass",
         "postgresql://bot:***@db/bots?sslmode=verify-full&sslpassword=***"),
        ("postgresql://db/bots?sslpassword=k3y&password=pw&user=bot",
         "postgresql://db/bots?sslpassword=***&password=***&user=bot"),
        ("postgresql://db/bots?SSLPassword=k3y", "postgresql://db/bots?SSLPassword=***"),
        ("postgresql://db/bots?my_password_file_pass=x&host_password=y#frag",
         "postgresql://db/bots?my_password_file_pass=***&host_password=***#frag"),
        ("postgresql://bot@db/bots?sslmode=require", "postgresql://bot@db/bots?sslmode=require"),
        ("https://proxy.example/api?access_token=abc", "https://proxy.example/api?access_token=***"),
    ],
)
def test_redact_url_hides_every_password_parameter(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fetching https://alice:pa55@example.com/feed failed",
         "fetching https://alice:***@example.com/feed failed"),
        ("a=https://u:p@x.example b=http://v:q@y.example/z",
         "a=https://u:***@x.example b=http://v:***@y.example/z"),
        ("Authorization: Bearer eyJhbGciOi.J9.e30", "Authorization: Bearer ***"),
        (f"Authorization: Bot {BOT_TOKEN}", "Authorization: Bot ***"),
        (f"token is {BOT_TOKEN}.", "token is ***."),
        ("https://discord.com/api/webhooks/123456/hook-t0ken-abc",
         "https://discord.com/api/webhooks/123456/***"),
        ("{'password': 'x y', 'n': 1}", "{'password': '***', 'n': 1}"),
        ("host=db password='x y' user=bot", "host=db password=*** user=bot"),
        # Prose and ordinary values stay as they are.
        *[(prose, prose) for prose in ("Bot started; basic setup; Bearer tokens expire",)],
        ("https://example.com/feed?page=2", "https://example.com/feed?page=2"),
    ],
)
def test_redact_text_hides_embedded_credentials(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "discord_actor.cli", *args], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=120)


def _project(root: Path, url: str) -> None:
    (root / "actors").mkdir(parents=True, exist_ok=True)
    (root / "actors" / "feed.py").write_text(
        "from discord_actor import RunContext, actor\n\n"
        "@actor()\nasync def feed(ctx: RunContext) -> None:\n    pass\n")
    settings = {
        "feed": "https://alice:pa55-in-url@example.com/feed",
        "headers": {"Authorization": "Bearer bearer-t0ken-123"},
        "auth": f"Bot {BOT_TOKEN}",
        "mirrors": ["https://bob:pa55-in-url@mirror.example/x"],
        "webhook": "https://discord.com/api/webhooks/123456/hook-t0ken-abc",
        "top_n": 3,
    }
    (root / "actor_server.toml").write_text(
        '[server]\nactors_dir = "actors"\n'
        f"[database]\nurl = {json.dumps(url)}\nconnect_timeout_seconds = 2\n"
        '[[actors]]\nname = "feed"\nmodule = "feed"\nplatform = "console"\n'
        'schedule = { type = "interval", seconds = 60 }\n'
        f"settings = {_inline(settings)}\n")


def _inline(value: object) -> str:
    """A TOML inline value (JSON strings are TOML basic strings)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)


def test_config_show_hides_every_secret(tmp_path: Path) -> None:
    url = ("postgresql://bot:hunter2-userinfo@db.example/bots?sslmode=verify-full"
           "&sslpassword=ssl-s3cret-pass&my_password=param-s3cret")
    _project(tmp_path, url)
    r = _cli(tmp_path, "config", "show")
    assert r.returncode == 0, r.stderr
    for secret in SECRETS:
        assert secret not in r.stdout, secret
    assert ('url = "postgresql://bot:***@db.example/bots?sslmode=verify-full&sslpassword=***'
            '&my_password=***"') in r.stdout
    assert 'feed = "https://alice:***@example.com/feed"' in r.stdout
    assert 'Authorization = "Bearer ***"' in r.stdout
    assert 'auth = "Bot ***"' in r.stdout
    assert 'webhook = "https://discord.com/api/webhooks/123456/***"' in r.stdout
    assert "top_n = 3" in r.stdout


def _wrong_password_url(database_server_url: str) -> str:
    """The test server's URL with a wrong password and password parameters added."""
    parts = urlsplit(database_server_url)
    user = parts.username or "postgres"
    host = f"@{parts.hostname}" if parts.hostname else "@"
    if parts.port:
        host += f":{parts.port}"
    query = "&".join(q for q in (parts.query, "sslpassword=ssl-s3cret-pass",
                                  "my_password=param-s3cret") if q)
    return f"{parts.scheme}://{user}:hunter2-userinfo{host}{parts.path}?{query}"


async def test_connection_errors_hide_every_secret(database_server_url: str) -> None:
    url = _wrong_password_url(database_server_url)
    cfg = dataclasses.replace(DatabaseConfig(), url=url, connect_timeout_seconds=5)
    try:
        pool = await create_pool(cfg, url)
    except DatabaseUnavailable as exc:
        message = str(exc)
    else:
        await pool.close()
        pytest.skip("the test server accepted a wrong password (trust authentication)")
    assert "password authentication failed" in message or "password" in message.lower()
    for secret in SECRETS:
        assert secret not in message, message
    assert "sslpassword=***" in message


def test_run_log_and_error_hide_every_secret(tmp_path: Path, database_server_url: str) -> None:
    _project(tmp_path, _wrong_password_url(database_server_url))
    r = _cli(tmp_path, "run", "--dry-run")
    assert r.returncode != 0
    assert "database: " in r.stderr and "sslpassword=***" in r.stderr, r.stderr
    assert "password authentication failed" in r.stderr, r.stderr
    for secret in SECRETS:
        assert secret not in r.stderr + r.stdout, r.stderr
