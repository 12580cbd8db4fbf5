"""Text the network sends (error messages of the API and of result-link hosts), made safe to
print, log and store: a terminal escape in a vendor's message must not repaint a user's screen
or forge a line of a run's summary, and a link it quotes must not hand its signature on."""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT = 500  # characters kept of one message
# Control and format characters (escapes, bidirectional overrides, zero-width spaces), lone
# surrogates (no database stores them), private-use and unassigned characters.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


# What grants access to whoever reads it, in a link a message may quote ("cannot fetch <url>"):
# a presigned URL's credential, signature and session token (S3's and its clones', and
# CloudFront's), and the token of a URL on the callback receiver's path.
_GRANTS = re.compile(
    r"((?:X-Amz-(?:Credential|Signature|Security-Token)|AWSAccessKeyId|Signature|Key-Pair-Id)=)"
    r"[^&\s\"'<>]+|(/callbacks/)[A-Za-z0-9_-]{43}",
    re.IGNORECASE,
)


def plain(text: str, limit: int = MAX_TEXT) -> str:
    """`text` on one line, without control, invisible or unstorable characters or a link's
    grants (`_GRANTS`), cut to `limit` characters."""
    if "=" in text or "/callbacks/" in text:
        text = _GRANTS.sub(lambda m: f"{m.group(1) or m.group(2)}***", text)
    if text.isprintable() and len(text) <= limit:  # nearly always: no copy
        return text
    kept = "".join(
        " " if c.isspace() else c
        for c in text
        if c.isspace() or unicodedata.category(c) not in _DROPPED
    )
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"
