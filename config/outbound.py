"""Which addresses the server may call when a user names a URL (a judge's endpoint, a model
version's inference server): public ones only, unless the operator allows private ones
with the setting ``OUTBOUND_ALLOW_PRIVATE``. Without this a project admin could point a
judge at ``http://127.0.0.1:...`` or the cloud metadata service (169.254.169.254) and
make the server fetch from inside its own network (SSRF).

Plain Python: no Django, nothing of the apps. Callers pass ``allow_private`` (from the
setting). A URL is checked when it is stored (``check_outbound_url``) and again right
before each connection (``checked_address``), because the name may resolve elsewhere by
then; callers connect to the address that was checked, not to the name again.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class OutboundRefused(ValueError):
    """The URL names a host the server may not call. The message is safe to show."""


class HostNotResolved(OutboundRefused):
    """The host has no address now. When a URL is stored this is no reason to refuse it (the
    name may resolve later); each connection checks again."""


def refused_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) may not be called, or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return f"a {name} address"
    if not ip.is_global:  # shared address space (100.64/10), 6to4/NAT64 forms and the like
        return "not a public address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IP literals resolve to themselves)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise HostNotResolved(f"The host {host!r} could not be resolved.") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    if not addresses:
        raise HostNotResolved(f"The host {host!r} could not be resolved.")
    return addresses


def checked_address(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for ``host``: resolved now, and refused
    (``OutboundRefused``) when any address it resolves to is not public, unless
    ``allow_private``. Every address must pass, so a name that answers with a public and a
    private address cannot pick the private one later."""
    addresses = resolve(host, port)
    if not allow_private:
        for address in addresses:
            reason = refused_reason(address)
            if reason:
                raise OutboundRefused(
                    f"The host {host!r} resolves to {reason} ({address}); the server calls "
                    "public addresses only (an operator may allow private ones with "
                    "OUTBOUND_ALLOW_PRIVATE)."
                )
    return addresses[0]


def url_host_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL; ``OutboundRefused`` for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise OutboundRefused("The URL is not valid.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("The URL must start with http:// or https:// and name a host.")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_outbound_url(url: str, *, allow_private: bool) -> None:
    """Refuse (``OutboundRefused``) a URL whose host is, or resolves to, a loopback,
    link-local (the 169.254.169.254 metadata service included), private, reserved,
    multicast or unspecified address, IPv4 or IPv6 (IPv4-mapped IPv6 included), unless
    ``allow_private``. A name that does not resolve now passes (``HostNotResolved`` is
    not raised): it is checked again before every connection."""
    host, port = url_host_port(url)
    if allow_private:
        return
    try:
        checked_address(host, port, allow_private=False)
    except HostNotResolved:
        return
