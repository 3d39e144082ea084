"""The import contracts of pyproject.toml ([tool.importlinter]) hold: layers that run one way,
no cycle in any package, no module importing its own package's ``__init__``.

``make lint`` runs the same check; running it here too means a pull request that brings a cycle
or an upward import back fails the test suite, not only the linter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("import-linter is not installed (in the test extra: pip install -e '.[test]')")
    return found


def test_every_import_contract_is_kept() -> None:
    result = subprocess.run(
        [_lint_imports(), "--no-logo", "--no-cache"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
