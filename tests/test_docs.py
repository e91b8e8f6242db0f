"""The documentation: docs/operating.md documents every setting and every command the CLI
has; the README stays a front door (at most 250 lines); and every relative Markdown link
between README.md and docs/*.md points at a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

from sesguard.cli import build_parser
from sesguard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
OPERATING = (ROOT / "docs" / "operating.md").read_text()
README_MAX_LINES = 250


def test_every_setting_is_in_the_operating_manual() -> None:
    missing = [
        f"SESGUARD_{name.upper()}"
        for name in Settings.model_fields
        if f"SESGUARD_{name.upper()}" not in OPERATING
    ]
    assert missing == []


def test_every_command_is_in_the_operating_manual() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"sesguard {name}" in OPERATING, name
    partners = commands["partners"]._subparsers._group_actions[0].choices
    for action in partners:
        assert f"sesguard partners {action}" in OPERATING, action


def test_the_readme_is_a_front_door() -> None:
    lines = README_PATH.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    # The two commands stay the very first thing after the title.
    assert lines[0] == "# sesguard"
    assert lines[2] == "```sh"
    assert lines[3].startswith("make demo ")
    assert lines[4].startswith("make test ")


# ---- links between the documents -----------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _without_code(text: str) -> str:
    """Markdown with its fenced code blocks and inline code spans blanked out."""
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup dropped, lower case,
    punctuation removed (letters, digits, `_`, `-` and spaces kept), spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown text; repeats get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        base = slug(match[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[tuple[str, str]]:
    """(target file, anchor) of every relative link in a Markdown file; the file is
    `path` itself for a bare `#anchor`."""
    links = []
    for target in _LINK.findall(_without_code(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        links.append((file, anchor))
    return links


def documents() -> list[Path]:
    return [README_PATH, *sorted((ROOT / "docs").glob("*.md"))]


def test_slugs_follow_github() -> None:
    assert slug("5. Guarantees, and why each holds") == "5-guarantees-and-why-each-holds"
    assert slug("The SDK never retries `SendEmail`") == "the-sdk-never-retries-sendemail"
    assert slug("Partner lifecycle events (EventBridge)") == "partner-lifecycle-events-eventbridge"
    assert slug("Dead-letter queues: reading and redriving") == (
        "dead-letter-queues-reading-and-redriving"
    )
    assert slug("Hours, windows and resume") == "hours-windows-and-resume"


def test_every_relative_link_resolves() -> None:
    broken = []
    checked = 0
    for doc in documents():
        for file, anchor in relative_links(doc):
            target = (doc.parent / file).resolve() if file else doc
            name = f"{doc.relative_to(ROOT)}: {file}#{anchor}"
            if not target.exists():
                broken.append(f"{name}: no such file")
                continue
            checked += 1
            if anchor and target.suffix == ".md" and anchor not in anchors(target.read_text()):
                broken.append(f"{name}: no such heading")
    assert broken == []
    assert checked > 50  # the check saw the links (the documents link to each other a lot)
