"""The README's two set-up commands stay true: CI runs exactly its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_a_run_and_a_test_command():
    run, test = readme_commands()[:2]
    assert "pip install -e '.[test]'" in run and "voice-console" in run
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    test = readme_commands()[1].strip()
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert ci_lines[-1] == test
