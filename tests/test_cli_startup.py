"""The commands that need no database answer without loading asyncpg or discord.py: ``--help``,
``--version``, a usage error, ``init`` and ``config show`` (the CLI imports the heavy modules in
the commands that use them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The console script's entry point, then which of the heavy modules were imported on the way.
WRAPPER = """
import sys
from discord_actor.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # --help, --version and usage errors exit in argparse
    code = e.code
heavy = [name for name in ("asyncpg", "discord") if name in sys.modules]
print("loaded:" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def loaded_by(*args: str, cwd: Path) -> tuple[int, list[str]]:
    """Run ``discord-actor ARGS`` in ``cwd``: its exit code and the heavy modules it loaded."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    last = done.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("loaded:"), done.stderr
    return done.returncode, [name for name in last.removeprefix("loaded:").split(",") if name]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["schedules", "add", "--help"], 0),
        (["history", "--limit", "0"], 2),
        (["no-such-command"], 2),
    ],
)
def test_help_version_and_usage_errors_load_neither(
    tmp_path: Path, args: list[str], code: int
) -> None:
    assert loaded_by(*args, cwd=tmp_path) == (code, [])


def test_init_and_config_show_load_neither(tmp_path: Path) -> None:
    project = tmp_path / "project"
    assert loaded_by("init", str(project), cwd=tmp_path) == (0, [])
    assert (project / "actor_server.toml").is_file()
    assert loaded_by("config", "show", "--config", str(project / "actor_server.toml"),
                     cwd=tmp_path) == (0, [])
