"""Header rules: what Lectr reads, what it keeps from the provider, what it never forwards."""

from __future__ import annotations

# RFC 9110 §7.6.1: connection-specific fields, never forwarded by a proxy. Also the ones
# Lectr re-creates for its own hop: Host (the provider's), Content-Length (the same body,
# re-framed) and Expect (Lectr answered the 100-continue itself).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}

LECTR_PREFIX = b"x-lectr-"
FEATURE_MAX_CHARS = 100
UNTAGGED = "untagged"


class ClientHeaders:
    """The request headers split into what Lectr reads and what goes upstream.

    One pass over the list; names are compared lower-cased, values kept as sent.
    """

    __slots__ = ("lectr_key", "feature", "task", "provider", "authorization", "content_type",
                 "forward")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.lectr_key: bytes | None = None
        self.feature: bytes | None = None
        self.task: bytes | None = None
        self.provider: bytes | None = None
        self.authorization: bytes | None = None
        self.content_type: bytes | None = None
        forward: list[tuple[bytes, bytes]] = []
        connection_tokens: list[bytes] | None = None
        for name, value in raw:
            lname = name.lower()
            if lname.startswith(LECTR_PREFIX):
                self._read_lectr(lname, value)
            elif lname == b"authorization":
                self.authorization = value
            elif lname in NOT_FORWARDED:
                if lname == b"connection":
                    connection_tokens = [t.strip().lower() for t in value.split(b",")]
            else:
                if lname == b"content-type":
                    self.content_type = value
                forward.append((name, value))
        if connection_tokens:
            # Fields a client names in Connection are for this hop only (RFC 9110 §7.6.1).
            listed = set(connection_tokens)
            forward = [(n, v) for n, v in forward if n.lower() not in listed]
        self.forward = forward

    def _read_lectr(self, lname: bytes, value: bytes) -> None:
        if lname == b"x-lectr-key":
            self.lectr_key = value.strip()
        elif lname == b"x-lectr-feature":
            self.feature = value
        elif lname == b"x-lectr-task":
            self.task = value
        elif lname == b"x-lectr-provider":
            self.provider = value

    def feature_tag(self) -> str:
        """``X-Lectr-Feature`` as stored: as sent, cut to 100 characters; ``untagged`` if absent."""
        if not self.feature:
            return UNTAGGED
        text = self.feature.decode("utf-8", "replace").strip()
        return text[:FEATURE_MAX_CHARS] if text else UNTAGGED

    def task_tag(self) -> str | None:
        """``X-Lectr-Task`` as sent (invalid values are stored too and ignored later)."""
        if not self.task:
            return None
        return self.task.decode("utf-8", "replace").strip()[:FEATURE_MAX_CHARS] or None


def response_head(headers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], bool, str | None, str | None]:
    """The provider's header lines to relay, whether it gave a Content-Length, its Content-Type
    and Content-Encoding. Hop-by-hop fields are dropped: Lectr frames the body for its own hop.
    """
    lines: list[bytes] = []
    has_length = False
    content_type = content_encoding = None
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            continue
        if lname == b"content-length":
            has_length = True
        elif lname == b"content-type":
            content_type = value.decode("latin-1")
        elif lname == b"content-encoding":
            content_encoding = value.decode("latin-1")
        lines.append(name + b": " + value + b"\r\n")
    return lines, has_length, content_type, content_encoding
