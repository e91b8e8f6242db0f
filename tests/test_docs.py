"""The README documents every setting and every command the CLI has."""

from __future__ import annotations

from pathlib import Path

from sesguard.cli import build_parser
from sesguard.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"SESGUARD_{name.upper()}"
        for name in Settings.model_fields
        if f"SESGUARD_{name.upper()}" not in README
    ]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"sesguard {name}" in README, name
    partners = commands["partners"]._subparsers._group_actions[0].choices
    for action in partners:
        assert f"sesguard partners {action}" in README, action
