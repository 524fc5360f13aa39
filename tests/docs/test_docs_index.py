"""docs/README.md links every page of docs/, and links between pages resolve."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces → '-'."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose(path: Path) -> list[str]:
    """The lines of a page outside fenced code blocks."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(path) if line.startswith("#")}


def local_links(path: Path) -> list[str]:
    return [
        target
        for line in prose(path)
        for target in LINK.findall(line)
        if not re.match(r"[a-z]+:", target)
    ]


def test_slug_matches_github() -> None:
    """Anchors are computed as GitHub renders them."""
    assert slug("Move a device to another backend") == "move-a-device-to-another-backend"
    assert slug("`inspect`") == "inspect"
    assert (
        slug("Limitations: what the seed's become here") == "limitations-what-the-seeds-become-here"
    )


def test_the_index_links_every_page() -> None:
    """Every docs/*.md page is linked from docs/README.md."""
    linked = {target.partition("#")[0] for target in local_links(DOCS / "README.md")}
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages - linked == set()


def test_links_between_pages_resolve() -> None:
    """Each relative link names an existing file and, with #anchor, an existing heading."""
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        for target in local_links(page):
            name, _, anchor = target.partition("#")
            file = (page.parent / name) if name else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
