"""One check for every URL that crosses the network: callbacks, media and result links.

A URL is sent to the vendor (callbacks, media) or fetched by us (result links) only when its
host is public. Hosts are read the way resolvers and browsers read them, so that no spelling
of a private address slips through: IPv4 in octal, hex, shortened or integer form, percent
escapes, IPv6 forms that embed an IPv4 address, and names that only resolve inside a network.
A public name may still resolve to a private address: the client checks the address each
download connection reaches against the same rules (`address_problem`).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote, urlsplit

# Names that only mean something inside a network (RFC 6761/6762/8375 and cluster DNS).
_INTERNAL_SUFFIXES = (
    ".localhost",
    ".local",
    ".internal",
    ".intranet",
    ".lan",
    ".home",
    ".home.arpa",
    ".corp",
    ".localdomain",
    ".svc",
    ".cluster.local",
    ".in-addr.arpa",
    ".ip6.arpa",
    ".invalid",
    ".test",
    ".example",
)
_IPV4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
# What each API root's calls add to it.
CALL_PATHS = {"EVOLINK_BASE_URL": "/v1", "EVOLINK_FILES_URL": "/api/v1"}
# The local-use NAT64 prefix (RFC 8215): it reaches IPv4 hosts of the operator's choosing, in
# any of RFC 6052's layouts, and Python counts it as global.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address an IPv4 literal means in any spelling `inet_aton` accepts, else None.

    `127.1`, `0x7f.1`, `0177.0.0.1` and `2130706433` are all 127.0.0.1.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(p) for p in parts):
        return None
    numbers = [_ipv4_number(p) for p in parts]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host} is not a valid IPv4 address")
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    return int(part, 8) if part.startswith("0") else int(part)


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, Teredo, NAT64)."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96") or ip in ipaddress.IPv6Network("::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `address` is not a public address, or None when it is.

    Refuses loopback, private, link-local (cloud metadata), reserved and shared addresses, the
    local-use NAT64 prefix, and IPv6 addresses that embed a non-public IPv4 address.
    """
    if not address.is_global or address in _LOCAL_NAT64:
        return f"{address} is private, loopback or reserved"
    inner = _embedded(address) if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None and not inner.is_global:
        return f"{address} embeds {inner}"
    return None


def host_problem(host: str) -> str | None:
    """Why `host` is not a public host, or None when it is.

    Refuses addresses `address_problem` refuses in every spelling, names that exist only
    inside a network, and single-label names.
    """
    name = unquote(host).strip().rstrip(".").lower()
    if not name:
        return "has no host"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if name.startswith("[") or ":" in name:
        try:
            address = ipaddress.IPv6Address(name.strip("[]").split("%")[0])
        except ValueError:
            return f"host {host} is not a valid IPv6 address"
    else:
        try:
            address = _ipv4(name)
        except ValueError as exc:
            return str(exc)
    if address is not None:
        problem = address_problem(address)
        return f"host {host} is not public ({problem})" if problem else None
    if not _HOST_NAME.match(name):
        return f"host {host} is not a valid host name"
    if name == "localhost" or name.endswith(_INTERNAL_SUFFIXES):
        return f"host {host} is not public (a local or internal name)"
    if "." not in name:
        return f"host {host} is not public (a single-label name)"
    return None


def url_problem(
    url: object, *, schemes: tuple[str, ...] = ("https",), allow_origin: str | None = None
) -> str | None:
    """Why `url` may not be sent to or fetched from the network, or None when it may.

    Args:
        url: the candidate URL.
        schemes: the schemes accepted for public hosts.
        allow_origin: `scheme://host:port` of a loopback emulator whose own URLs (on exactly
            that origin, plain http allowed) are accepted.
    """
    if not isinstance(url, str) or not url.strip():
        return "must be a non-empty URL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (user:password@host)"
    if _SPACE_OR_CONTROL.search(url) or not url.isprintable():
        return "contains spaces, control or invisible characters"
    if allow_origin is not None and _origin(parts.scheme, parts.hostname, port) == allow_origin:
        return None
    if parts.scheme not in schemes:
        return f"must use {' or '.join(schemes)}, not {parts.scheme or 'no scheme'}"
    return host_problem(parts.hostname or "")


def origin(url: str) -> str:
    """`scheme://host:port` of `url` (the form `url_problem`'s `allow_origin` takes)."""
    parts = urlsplit(url)
    return _origin(parts.scheme, parts.hostname, parts.port)


def _origin(scheme: str, host: str | None, port: int | None) -> str:
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{(host or '').lower()}:{port or default}"


def api_root_problem(url: str, setting: str) -> str | None:
    """Why `url` cannot be where the API is (`setting`: `EVOLINK_BASE_URL` or
    `EVOLINK_FILES_URL`), or None.

    httpx would send a user name and password as Basic auth in place of the key, and a query
    would end up before each call's path. A path is kept (a gateway may serve the API under
    one), but not one ending in the start of what each call adds (`CALL_PATHS`): every call
    would answer 404.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in url for c in "@?#"):
        return (
            "must be an http(s):// URL with no user name, password, query or fragment "
            "(the key goes in EVOLINK_API_KEY)"
        )
    added = CALL_PATHS.get(setting, "").split("/")[1:]
    starts = ["/" + "/".join(added[:n]) for n in range(len(added), 0, -1)]  # longest first
    if tail := next((t for t in starts if parts.path.rstrip("/").endswith(t)), None):
        return (
            f"ends in {tail}, which each call adds itself ({CALL_PATHS[setting]}/...): give the "
            "address without it"
        )
    return None
