"""The code is formatted: `ruff format` (configured in pyproject.toml) would change nothing."""

import subprocess
import sys
from pathlib import Path

from dpo_toxicity.paths import project_root


def test_ruff_format_would_change_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    checked = subprocess.run([str(ruff), "format", "--check", "."], cwd=project_root(), capture_output=True, text=True)
    assert checked.returncode == 0, f"Run `{ruff} format .`; it would reformat:\n{checked.stdout}{checked.stderr}"
