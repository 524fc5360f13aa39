"""docs/authentication-and-persistence.md covers what a newcomer needs, each with a sample."""

from __future__ import annotations

from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "authentication-and-persistence.md"

SECTIONS = {
    "## Words used on this page": ("**Linked device**", "**Root key**", "**Lock file**"),
    "## Against the real WhatsApp server": ("Linked devices", "server_root_key"),
    "## Share a folder with Baileys (the multi-file backend)": (
        'backend="multi-file"',
        "useMultiFileAuthState",
    ),
    "## Replace the Signal key store": ("signal_store=", "TransactionalStore"),
    "## Build your own persistence wrapper": ("open_auth_state(", "async def commit"),
    "### The root key": ("untrusted_server", "--server-root-key"),
    "### The lock file": ("StoreLockedError", ".baileys-trio.lock"),
}


def section(text: str, heading: str) -> str:
    """The body under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    body = text.split(f"\n{heading}\n", 1)[1]
    for marker in ("\n## ", f"\n{level} "):
        body = body.split(marker, 1)[0]
    return body


def test_each_topic_has_its_own_section_saying_what_it_must() -> None:
    """Every newcomer topic is a heading of its own whose body names the API it is about."""
    text = GUIDE.read_text()
    missing = [h for h in SECTIONS if f"\n{h}\n" not in text]
    assert missing == []
    for heading, phrases in SECTIONS.items():
        body = section(text, heading)
        assert all(p in body for p in phrases), heading


def test_the_api_sections_carry_a_runnable_python_sample() -> None:
    """The Baileys, signal-store, wrapper, real-server and root-key sections each run code."""
    text = GUIDE.read_text()
    for heading in (
        "## Against the real WhatsApp server",
        "## Share a folder with Baileys (the multi-file backend)",
        "## Replace the Signal key store",
        "## Build your own persistence wrapper",
        "### The root key",
    ):
        assert "```python\n" in section(text, heading), heading
