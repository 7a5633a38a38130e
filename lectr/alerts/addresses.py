"""What kind of address a webhook goes to: public, or one of the internal kinds refused unless
the operator allows them (``LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE``). Pure: used when a URL is set
(``alerts.settings``) and on every address a delivery connects to (``alerts.webhook``).
"""

from __future__ import annotations

import ipaddress
import re
import socket

ALLOW_PRIVATE_VARIABLE = "LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE"

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT: not routable on the internet
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4 address reached
_LEGACY_IPV4 = re.compile(r"(?=.*[0-9])[0-9a-fA-FxX.]+")


def describe_target(url: str) -> str:
    """The URL without its path: Slack-style webhook paths are secrets, and logs keep no secrets."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def address_kind(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """None when ``address`` is public (globally routable); otherwise what it is: ``loopback``,
    ``link-local``, ``unspecified``, ``multicast``, ``shared``, ``reserved``, ``private`` or
    ``non-global``. An IPv6 address that carries an IPv4 one (mapped, 6to4, NAT64) is judged by
    the IPv4 address it reaches. ValueError if ``address`` is not an IP address."""
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])  # an IPv6 zone id says nothing of the kind
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_kind(embedded)
    for kind, test in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                       ("shared", ip in _SHARED), ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if test:
            return kind
    return None if ip.is_global else "non-global"


def literal_kind(host: str) -> str | None:
    """``address_kind`` of a URL's host written as an address — also the legacy IPv4 forms a
    connect accepts (``2130706433``, ``127.1``, ``0x7f.1``); None when it is public or a name
    (a name is judged by what it resolves to)."""
    try:
        return address_kind(host)
    except ValueError:
        if not _LEGACY_IPV4.fullmatch(host):
            return None
        try:  # what inet_aton (and so a connect) reads as an address
            return address_kind(ipaddress.IPv4Address(socket.inet_aton(host)))
        except OSError:
            return None
