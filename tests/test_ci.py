"""CI runs what the README tells a new user to run: `.ci/run` reads the set-up and test commands from it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readmes_commands_and_the_tests_say_why_they_skip():
    script = (ROOT / ".ci" / "run").read_text()
    reader = re.search(r"^readme_command\(\) \{.*\}$", script, re.M)
    assert reader, "the README reader is gone from .ci/run"
    commands = subprocess.run(["bash", "-c", f'{reader.group(0)}\nreadme_command "# set up"; readme_command "# test"'],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert commands == ["python3 -m venv .venv && .venv/bin/pip install -e '.[test]'", ".venv/bin/python -m pytest -rs"]
    assert 'eval "$test"' in script and 'eval "$setup"' in script
    readme = (ROOT / "README.md").read_text()
    assert "apt-get install chromium" in readme and "apt-get install xvfb xdotool x11-apps" in readme
