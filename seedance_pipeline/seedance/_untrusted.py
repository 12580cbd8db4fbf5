"""Text the network sends (error messages of the API and of result-link hosts), made safe to
print, log and store: a terminal escape in a vendor's message must not repaint a user's screen
or forge a line of a run's summary."""

from __future__ import annotations

import unicodedata

MAX_TEXT = 500  # characters kept of one message
# Control and format characters (escapes, bidirectional overrides, zero-width spaces), lone
# surrogates (no database stores them), private-use and unassigned characters.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def plain(text: str, limit: int = MAX_TEXT) -> str:
    """`text` on one line, without control, invisible or unstorable characters, cut to `limit`
    characters."""
    if text.isprintable() and len(text) <= limit:  # nearly always: no copy
        return text
    kept = "".join(
        " " if c.isspace() else c
        for c in text
        if c.isspace() or unicodedata.category(c) not in _DROPPED
    )
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"
