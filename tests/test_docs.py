"""Every relative link in README.md and docs/*.md leads somewhere: the file exists and,
for a ``#anchor`` into a markdown file, so does the heading, under GitHub's slug rules.
The README is short and points into docs/, so a moved or renamed page must not leave a
dead link behind."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the target may carry a "title" after a space
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (links as their text, no
    emphasis marks), lowercased, punctuation other than ``-`` and ``_`` removed, each
    space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a markdown file; a repeated one gets ``-1``, ``-2``..."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The link targets of a markdown file, code blocks and code spans left out."""
    targets: list[str] = []
    for line in prose_lines(page.read_text()):
        reference = REFERENCE.match(line)
        if reference:
            targets.append(reference[1])
            continue
        targets.extend(INLINE_LINK.findall(CODE_SPAN.sub("", line)))
    return targets


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` that lead nowhere, each with the reason."""
    broken: list[str] = []
    for target in links(page):
        if SCHEME.match(target):
            continue  # https:, mailto: ... are not files of this repository
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no file {os.path.relpath(resolved, ROOT)}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_the_readme_points_into_docs() -> None:
    named = {target.partition("#")[0] for target in links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in named, f"README.md links to no docs/{page.name}"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("How it works", "how-it-works"),
        ("Why tocsin over Alertmanager", "why-tocsin-over-alertmanager"),
        ("Metrics (`GET /metrics`, Prometheus text)", "metrics-get-metrics-prometheus-text"),
        ("W3, where the milliseconds go: p50 / p99", "w3-where-the-milliseconds-go-p50--p99"),
        ("[Securing NATS](x.md) and `TOCSIN_NATS_*`", "securing-nats-and-tocsin_nats_"),
    ],
)
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Least privilege and TLS\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Two words\n\n"
        "[ok](other.md) [ok](other.md#least-privilege-and-tls) [ok](#two-words)\n"
        "[gone](missing.md) [bad anchor](other.md#least-privilege) [bad](#three-words)\n"
        "![gone](missing.png) `[in code](nowhere.md)` [web](https://example.com/x)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        f"missing.md: no file {os.path.relpath(tmp_path / 'missing.md', ROOT)}",
        "other.md#least-privilege: no heading with the anchor #least-privilege",
        "#three-words: no heading with the anchor #three-words",
        f"missing.png: no file {os.path.relpath(tmp_path / 'missing.png', ROOT)}",
    ]
