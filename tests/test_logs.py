"""Logs and run details, as an operator sees them: real ``discord-actor`` processes on the test
database, their stderr read line by line."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import (
    CLI,
    COUNTER_PY,
    FAILING_PY,
    _env,
    cli,
    db_section,
    populate,
    query,
    write_project,
)

# A failure and a success at every start (immediate), then nothing.
IMMEDIATE_ACTORS = """
[[actors]]
name = "counter"
module = "counter"
platform = "console"
schedule = { type = "immediate" }

[[actors]]
name = "failing"
module = "failing"
platform = "none"
schedule = { type = "immediate" }
"""


def serve_until(project: Path, seen: str, env: dict[str, str], *args: str) -> list[str]:
    """``discord-actor run ARGS`` until ``seen`` is in its stderr, then SIGTERM; its lines."""
    p = subprocess.Popen([*CLI, "run", *args], cwd=project, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if seen in line:
                p.send_signal(signal.SIGTERM)
                break
        _, rest = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    lines += rest.splitlines()
    assert p.returncode == 0, "\n".join(lines)
    return lines


@pytest.fixture
def immediate_project(tmp_path: Path, database_url: str, db_schema: str) -> Path:
    write_project(tmp_path, db_section(database_url, db_schema), IMMEDIATE_ACTORS,
                  server='log_runs = "failures"',
                  modules={"counter": COUNTER_PY, "failing": FAILING_PY})
    return tmp_path


def test_json_lines_name_the_actor_and_run_and_successes_can_be_left_out(
    immediate_project: Path, database_url: str, db_schema: str
) -> None:
    env = _env() | {"DISCORD_ACTOR_LOG_FORMAT": "json"}
    lines = serve_until(immediate_project, "RuntimeError: boom", env)
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line is JSON
    for r in records:
        assert set(r) == {"time", "level", "logger", "actor", "run_id", "message", "exception"}
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", r["time"])
    (failure,) = [r for r in records if "RuntimeError: boom" in r["message"]]
    runs = {row["actor"]: row["id"] for row in query(
        database_url,
        f'SELECT t.actor, r.id FROM "{db_schema}".runs r JOIN "{db_schema}".tasks t'
        " ON t.id = r.task_id")}
    assert (failure["actor"], failure["run_id"], failure["level"]) == (
        "failing", runs["failing"], "WARNING")
    assert failure["message"].startswith(f"run {runs['failing']} of failing failed: RuntimeError")
    # log_runs = "failures": counter ran (it is recorded) but logged no line of its own.
    assert "counter" in runs
    assert not [r for r in records if "succeeded" in r["message"]], records
    assert any(r["actor"] is None and "started" in r["message"] for r in records)


def test_text_lines_have_dates_and_levels_come_from_flags_or_the_environment(
    immediate_project: Path,
) -> None:
    config = immediate_project / "actor_server.toml"
    config.write_text(config.read_text().replace('log_runs = "failures"', 'log_runs = "all"'))
    lines = serve_until(immediate_project, "RuntimeError: boom", _env())
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d [A-Z]+ ", line)
               for line in lines), lines
    assert any(re.search(r"run \d+ of counter succeeded", line) for line in lines), lines

    # -q: warnings and up only (the failure is a warning; the start-up lines are info).
    quiet = serve_until(immediate_project, "RuntimeError: boom", _env(), "-q")
    assert quiet and all(" INFO " not in line for line in quiet), quiet
    # The environment variable sets the level; a flag wins over it.
    debug = serve_until(immediate_project, "RuntimeError: boom",
                        _env() | {"DISCORD_ACTOR_LOG_LEVEL": "debug"})
    assert any(" DEBUG " in line for line in debug)

    r = cli("status", "--log-level", "loud", cwd=immediate_project)
    assert r.code == 2 and "--log-level" in r.err and "loud" in r.err
    env = _env() | {"DISCORD_ACTOR_LOG_LEVEL": "loud"}
    p = subprocess.run([*CLI, "status"], cwd=immediate_project, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "$DISCORD_ACTOR_LOG_LEVEL" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_history_show_prints_the_traceback_of_a_failed_run(project_with_runs: Path) -> None:
    (failed,) = cli("history", "failing", "--json", cwd=project_with_runs).json()
    r = cli("history", "--show", str(failed["id"]), cwd=project_with_runs)
    assert r.code == 0, r.err
    assert f"run {failed['id']} of failing: failed" in r.out
    assert "error          RuntimeError: boom" in r.out
    assert "Traceback (most recent call last):" in r.out
    assert 'raise RuntimeError("boom")' in r.out

    r = cli("history", "--show", str(failed["id"]), "--json", cwd=project_with_runs)
    shown = r.json()
    assert shown["error"] == "RuntimeError: boom"
    assert shown["traceback"].startswith("Traceback (most recent call last):")

    (ok,) = cli("history", "counter", "--json", cwd=project_with_runs).json()
    r = cli("history", "--show", str(ok["id"]), cwd=project_with_runs)
    assert r.code == 0 and "succeeded" in r.out and "Traceback" not in r.out

    r = cli("history", "--show", "999999", cwd=project_with_runs)
    assert r.code == 1 and "no run with id 999999" in r.err


def test_prune_dry_run_counts_and_deletes_nothing(
    project_with_runs: Path, database_url: str, db_schema: str
) -> None:
    def count() -> int:
        return int(query(database_url, f'SELECT count(*) AS n FROM "{db_schema}".runs')[0]["n"])

    r = cli("prune", "--dry-run", cwd=project_with_runs)  # 30 days: the runs are recent
    assert r.code == 0, r.err
    assert r.out.startswith("would delete 0 runs finished more than 30 days ago (before ")
    r = cli("prune", "--dry-run", "--older-than-days", "0", cwd=project_with_runs)
    assert r.code == 0, r.err
    assert "would delete 2 runs finished more than 0 days ago" in r.out
    assert "nothing was deleted" in r.out
    assert re.search(r"^counter\s+1$", r.out, re.MULTILINE), r.out
    assert re.search(r"^failing\s+1$", r.out, re.MULTILINE), r.out
    assert count() == 2
    r = cli("prune", "--older-than-days", "0", cwd=project_with_runs)
    assert r.code == 0 and "deleted 2 runs" in r.out
    assert count() == 0


@pytest.fixture
def project_with_runs(tmp_path: Path, database_url: str, db_schema: str) -> Path:
    from test_cli import STORY_ACTORS

    write_project(tmp_path, db_section(database_url, db_schema), STORY_ACTORS,
                  modules={"counter": COUNTER_PY, "failing": FAILING_PY})
    assert populate(tmp_path) == ["failed", "succeeded"]
    return tmp_path
