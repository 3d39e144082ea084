"""The wheel the README's Install builds (``pip wheel --no-deps .``): everything the package
reads at run time is in it, and it declares the ``discord-actor`` command and the pytest
plugin. A missing package-data pattern passes every test of a checkout and breaks an install."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "discord_actor"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel, built from a copy of the sources (so no build/ or egg-info in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "discord_actor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    [built] = out.glob("discord_actor-*-py3-none-any.whl")
    return zipfile.ZipFile(built)


def files_in(directory: Path, pattern: str) -> set[str]:
    return {str(f.relative_to(REPO)) for f in directory.glob(pattern)}


def test_the_wheel_holds_the_package_and_its_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    sources = {str(f.relative_to(REPO)) for f in PACKAGE.rglob("*.py")
               if "__pycache__" not in f.parts}
    assert sources - names == set()
    data = (
        files_in(PACKAGE / "db" / "sql", "*.sql")
        | files_in(PACKAGE / "db" / "migrations", "*.sql")
        | files_in(PACKAGE / "web" / "templates", "*.html")
        | files_in(PACKAGE / "web" / "static", "*")
    )
    assert {"discord_actor/db/sql/functions.sql",
            "discord_actor/db/migrations/0001_initial.sql"} <= data
    assert data - names == set()
    assert "discord_actor/py.typed" in names
    assert not any(n.startswith(("tests/", "bench/", "actors/", "docs/")) for n in names)


def test_the_wheel_declares_the_command_and_the_pytest_plugin(wheel: zipfile.ZipFile) -> None:
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parsed = configparser.ConfigParser()
    parsed.read_string(wheel.read(entry_points).decode())
    assert parsed["console_scripts"]["discord-actor"] == "discord_actor.cli:main"
    assert parsed["pytest11"]["discord_actor"] == "discord_actor.testing.plugin"
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert "Name: discord-actor" in text and "Requires-Python: >=3.11" in text
