"""``discord-actor sandbox`` as a user runs it: a subprocess whose standard input is the
terminal, the shipped reminders actor, the real embedded PostgreSQL (or the test server through
a URL) and the real discord.py bot against the in-process fake Discord. No token anywhere."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "discord_actor.cli"]
ANSWER = "/remind -> (only you) I will remind you "
POSTED = "#general  bot: @you stand up  (pings @you)"

REMINDERS = """
[[actors]]
name = "reminders"
module = "reminders"
platform = "discord"
allowed_mentions = ["users"]
max_schedules_per_owner = 5
"""


MORNING_PY = """
from discord_actor import RunContext, actor


@actor(platform="discord")
async def morning(ctx: RunContext) -> None:
    await ctx.post("good morning")
"""

MORNING = """
[[actors]]
name = "morning"
module = "morning"
platform = "discord"
channel_id = 1234
schedule = { type = "immediate" }
"""


def project(root: Path, database: str = "", *, morning: bool = False) -> Path:
    """A project of the shipped reminders actor; ``database``: its [database] keys;
    ``morning``: with an actor posting at start to a configured channel."""
    (root / "actors").mkdir()
    shutil.copy(REPO / "actors" / "reminders.py", root / "actors" / "reminders.py")
    actors = REMINDERS
    if morning:
        (root / "actors" / "morning.py").write_text(MORNING_PY)
        actors += MORNING
    (root / "actor_server.toml").write_text(
        f'[server]\nactors_dir = "actors"\n\n[database]\n{database}\n{actors}'
    )
    return root


class Sandbox:
    """``discord-actor sandbox`` in ``cwd``, its output collected line by line as it comes."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
        self.proc = subprocess.Popen(
            [*CLI, "sandbox", *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[tuple[float, str]] = []  # (monotonic time, line)
        self.err = ""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._errors, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _errors(self, stream: object) -> None:
        self.err = stream.read()  # type: ignore[attr-defined]

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, timeout: float = 30) -> tuple[float, str]:
        """The first output line containing ``text`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen in list(self.lines):
                if text in seen[1]:
                    return seen
            if self.proc.poll() is not None and not self._readers[0].is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} in:\n{self.output}\n{self.err}")

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def end_input(self, timeout: float = 30) -> int:
        """Close standard input (Ctrl-D) and wait for the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        """The exit code, once all the output is read."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_remind_is_answered_at_once_posted_later_and_the_real_data_is_untouched(
    tmp_path: Path,
) -> None:
    """The story of docs/sandbox.md on the embedded server: the ephemeral answer at once, the
    post with its ping two seconds later; a line that is no command, or names a wrong option,
    says what exists; end of input exits 0. The project's own data directory is never made,
    and a second sandbox of the project refuses to empty the database of the first."""
    sandbox = Sandbox(project(tmp_path))
    try:
        sandbox.wait_for("Type a command such as /remind in:10s text:stand up; 'help' lists")
        usage = sandbox.wait_for(
            "  /remind in:text text:text [timezone:text] [dm:true|false]  Remind me of"
        )[1]
        assert usage.startswith(" " * 11)
        sandbox.wait_for("/reminders cancel id:text  Cancel one of your pending reminders")
        second = Sandbox(tmp_path)  # would empty the database under the first one
        try:
            assert second.end_input() == 1
        finally:
            second.kill()
        assert "another process uses the sandbox's database" in second.err, second.err
        assert f"(pid {sandbox.proc.pid})" in second.err and "Traceback" not in second.err
        sandbox.type("/remind in:2s text:stand up")
        answered, answer = sandbox.wait_for(ANSWER)
        assert re.search(r"\(in [12] s\) in this channel: stand up$", answer), answer
        posted, _ = sandbox.wait_for(POSTED, timeout=10)
        assert 1.0 <= posted - answered <= 8.0, (posted - answered, sandbox.output)
        sandbox.type("/bogus thing")
        sandbox.wait_for("no command /bogus; the bot registered: /actors, /remind, /reminders")
        sandbox.type("/remind in:5m txt:lunch")
        sandbox.wait_for("/remind has no option 'txt'; it takes in, text, timezone")
        sandbox.type("/remind text:lunch")
        sandbox.wait_for("/remind needs in: /remind in:text text:text [timezone:text]")
        sandbox.type("/reminders list")
        sandbox.wait_for("/reminders list -> (only you) You have no pending reminders.")
        assert sandbox.end_input() == 0, sandbox.err
    finally:
        sandbox.kill()
    assert "stopping (end of input)" in sandbox.output
    assert "Traceback" not in sandbox.err and sandbox.err.strip() == "", sandbox.err
    assert sandbox.output.count("@you stand up") == 1
    assert not (tmp_path / ".discord_actor" / "pgdata").exists()
    assert (tmp_path / ".discord_actor" / "sandbox-pgdata").is_dir()


def test_on_a_database_url_the_sandbox_has_its_own_schema_and_the_user_owns_the_bot(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """With a configured URL the sandbox works in ``<schema>_sandbox``, emptied at each start,
    and leaves the configured schema alone; a channel the configuration names receives its
    actor's posts; the terminal's user may use /actors; -v shows the
    runtime's log; 'quit' and Ctrl-C (SIGINT) stop with 0."""
    sandbox_schema = f"{db_schema}_sandbox"
    root = project(tmp_path, f'url = "{database_url}"\nschema = "{db_schema}"', morning=True)
    try:
        for start in (1, 2):
            sandbox = Sandbox(root, "-v")
            try:
                sandbox.wait_for("Type a command")
                sandbox.wait_for("#morning  bot: good morning")  # the configured channel 1234
                sandbox.type("/actors list")
                sandbox.wait_for("/actors list -> (only you)")
                sandbox.wait_for("reminders  active")
                if start == 1:
                    sandbox.type("/remind in:1h text:left over from the first start")
                    sandbox.wait_for(ANSWER)
                else:  # a new fake Discord: nothing of the first start is left
                    sandbox.type("/reminders list")
                    sandbox.wait_for("You have no pending reminders")
                if start == 1:
                    sandbox.type("quit")
                else:
                    sandbox.proc.send_signal(signal.SIGINT)  # Ctrl-C
                assert sandbox.wait() == 0, sandbox.err
            finally:
                sandbox.kill()
            stopped = "stopping (quit)" if start == 1 else "SIGINT: shutting down"
            assert stopped in sandbox.output + sandbox.err
            assert f"(schema {sandbox_schema})" in sandbox.err and "stopped cleanly" in sandbox.err
            assert "Traceback" not in sandbox.err and "created a new" not in sandbox.err
        assert asyncio.run(tables(database_url, db_schema)) == []
        assert "tasks" in asyncio.run(tables(database_url, sandbox_schema))
    finally:
        asyncio.run(drop(database_url, sandbox_schema))


async def tables(url: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        return sorted(r["table_name"] for r in rows)
    finally:
        await conn.close()


async def drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
