"""The README and the site in docs/: links that resolve, every page in the toctree, a command
line page that matches the parser, the README's own-bot path as a new user follows it, and a
strict Sphinx build."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import spawn_run_in, wait_for_text

from discord_actor.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.glob("*.md"))

# A Markdown link or image: [text](target) or ![alt](target), the target without a title.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INCLUDE = re.compile(r"```\{include\} (\S+)")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and inline code, where a link is no link."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            if line.startswith("```{include}"):
                lines.append(line)
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def slug(heading: str) -> str:
    """The anchor of a heading, as GitHub and MyST (``myst_heading_anchors``) make it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, with those of the files it includes."""
    text = path.read_text()
    found = {slug(m) for m in re.findall(r"^#{1,6} (.+)$", prose(text), re.M)}
    for included in INCLUDE.findall(text):
        found |= anchors((path.parent / included).resolve())
    return found


def links(path: Path) -> Iterator[str]:
    """The relative link targets of a Markdown file (not URLs, not mail addresses)."""
    for target in LINK.findall(prose(path.read_text())):
        if not re.match(r"[a-z][a-z+.-]*:", target):
            yield target


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    broken = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert broken == [], "\n".join(broken)


def test_the_readme_links_into_the_docs() -> None:
    """The README is the front page: its reference moved to docs/, and it points there."""
    targets = {t.partition("#")[0] for t in links(README)}
    for page in ("docs/index.md", "docs/configuration.md", "docs/cli.md", "docs/operating.md",
                 "docs/how-it-works.md", "docs/testing.md", "docs/sandbox.md"):
        assert page in targets, page


def toctree_entries() -> list[str]:
    text = (DOCS / "index.md").read_text()
    entries = []
    for block in re.findall(r"```\{toctree\}\n(.*?)```", text, re.S):
        entries += [line.strip() for line in block.splitlines()
                    if line.strip() and not line.startswith(":")]
    return entries


def test_every_page_is_in_the_toctree_once() -> None:
    entries = toctree_entries()
    assert sorted(entries) == sorted(set(entries)), entries
    pages = {p.stem for p in PAGES} - {"index"}
    assert set(entries) == pages


def parser_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every command of the parser, with its group: ``run``, ``schedules add``, ..."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= parser_commands(sub, f"{prefix}{name} ") or {f"{prefix}{name}"}
    return found


def documented_commands() -> set[str]:
    """The commands of the rows of docs/cli.md's table: ``| `discord-actor schedules add ...``."""
    found = set()
    for row in re.findall(r"^\| `discord-actor ([^`]+)`", (DOCS / "cli.md").read_text(), re.M):
        words = []
        for word in row.split():
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            words.append(word)
        found.add(" ".join(words))
    return found


def test_the_cli_page_has_a_row_for_every_command_of_the_parser() -> None:
    commands = parser_commands(build_parser())
    assert {"init", "run", "schedules add", "config show"} <= commands  # the walk works
    assert documented_commands() == commands


# --------------------------------------------------------------------------------------------
# The README's own-bot path, as a new user follows it.


def readme_section(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(f"\n## {heading}\n") + 1 :]
    return section[: section.index("\n## ", 1)]


def readme_files() -> list[tuple[str, bool, str]]:
    """The files the README's tour shows: (path, appended to an existing file, body), in order."""
    text = README.read_text()
    tour = text[text.index("<!-- tour -->") : text.index("<!-- /tour -->")]
    return [
        (path, bool(at_end), body)
        for path, at_end, body in re.findall(
            r"```(?:python|toml)\n# (\S+)( \(at the end\))?\n(.*?)```", tour, re.S
        )
    ]


def shown_output(section: str, command: str) -> list[str]:
    """The lines the README shows after ``$ command``, up to the next command or the end."""
    block = section[section.index(f"$ {command}\n") :].split("\n", 1)[1]
    return block.split("\n$ ")[0].split("\n```")[0].splitlines()


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "discord_actor.cli", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120,
    )


def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DISCORD_"))}


def own_bot(tmp_path: Path) -> Path:
    """``discord-actor init mybot`` in ``tmp_path``, checked against what the README says it
    prints, then the README's files added as it says; returns ``mybot``."""
    section = readme_section("Your own bot")
    assert "discord-actor init mybot\ncd mybot\ndiscord-actor run\n" in section
    p = cli("init", "mybot", cwd=tmp_path, env=user_env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == shown_output(section, "discord-actor init mybot")
    bot = tmp_path / "mybot"
    assert sorted(str(f.relative_to(bot)) for f in bot.rglob("*") if f.is_file()) == [
        "actor_server.toml", "actors/hello.py",
    ]
    for path, at_end, body in readme_files():
        target = bot / path
        assert target.exists() == at_end, f"{path}: the README says to add it at the end"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a" if at_end else "w") as f:
            f.write("\n" + body if at_end else body)
    return bot


def test_the_readme_own_bot_path_checks_as_shown(tmp_path: Path) -> None:
    bot = own_bot(tmp_path)
    assert {"actors/pulse.py", "actors/remind.py", "tests/test_mybot.py"} <= {
        path for path, _, _ in readme_files()
    }
    p = cli("check", cwd=bot, env=user_env())
    assert p.returncode == 0, p.stdout + p.stderr
    shown = shown_output(readme_section("A first actor"), "discord-actor check")
    for line in shown:
        if line != "..." and "next:" not in line:  # the slots depend on the time
            assert line in p.stdout.splitlines(), (line, p.stdout)
    assert "remind  (module remind, platform console)" in p.stdout


@pytest.mark.slow
def test_the_readme_own_bot_runs_and_its_tests_pass(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """``discord-actor run`` in mybot until hello has run and a keyed schedule added from the
    command line has run, then the README's test file under pytest."""
    bot = own_bot(tmp_path)
    config = bot / "actor_server.toml"
    text = config.read_text()
    assert 'schema = "discord_actor"' in text
    config.write_text(text.replace('schema = "discord_actor"', f'schema = "{db_schema}"'))
    env = user_env() | {"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "run.txt"
    proc = spawn_run_in(bot, env, log)
    try:
        deadline = time.monotonic() + 60
        wait_for_text(log, "[hello] hello (run 1)", deadline)
        added = cli("schedules", "add", "remind", "r:1", "--every", "20", "--payload",
                    '{"text": "stretch"}', cwd=bot, env=env)
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith("added remind r:1: every 20 s (UTC), next run ")
        wait_for_text(log, "[remind] r:1: stretch", deadline)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 0, out
    assert "[hello] hello (run 1)" in out and "[remind] r:1: stretch" in out, out
    assert "run 1 of hello succeeded (schedule, slot " in out
    assert "Traceback" not in out

    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests"],
        cwd=bot, env=env, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout
    assert "2 passed" in readme_section("Testing your actors")


# --------------------------------------------------------------------------------------------
# The site, as `make docs` builds it.


def test_the_docs_build_without_a_warning(tmp_path: Path) -> None:
    if any(importlib.util.find_spec(m) is None for m in ("sphinx", "myst_parser", "furo")):
        pytest.skip("Sphinx, MyST-Parser or Furo is not installed: pip install -e '.[docs]'")
    p = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-E",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "html" / "index.html").exists()
    api = (tmp_path / "html" / "api.html").read_text()
    for name in ("discord_actor.actor.RunContext", "discord_actor.keyed.Schedules",
                 "discord_actor.testing.harness.ActorHarness"):
        assert f'id="{name}"' in api, name


def test_the_start_up_output_shown_lists_every_migration() -> None:
    """A first start applies every migration; the pages that show its log say which."""
    shipped = ", ".join(
        p.stem for p in sorted((REPO / "discord_actor" / "db" / "migrations").glob("*.sql"))
    )
    shown = {
        page.name: line.split("applied migrations: ", 1)[1].strip()
        for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
        for line in page.read_text().splitlines()
        if "applied migrations: " in line
    }
    assert shown, "no page shows a first start"
    assert {name: shipped for name in shown} == shown
