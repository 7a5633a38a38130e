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


# What ``ClientHeaders`` does with a header, by lower-cased name; anything else is forwarded.
_LECTR_KEY, _FEATURE, _TASK, _PROVIDER, _AUTHORIZATION, _CONTENT_TYPE, _CONTENT_LENGTH, _EXPECT, _CONNECTION, \
    _DROP = range(10)
_KINDS = {
    b"x-lectr-key": _LECTR_KEY, b"x-lectr-feature": _FEATURE, b"x-lectr-task": _TASK,
    b"x-lectr-provider": _PROVIDER, b"authorization": _AUTHORIZATION, b"content-type": _CONTENT_TYPE,
    b"content-length": _CONTENT_LENGTH, b"expect": _EXPECT, b"connection": _CONNECTION,
    **{name: _DROP for name in NOT_FORWARDED - {b"content-length", b"expect", b"connection"}},
}


class ClientHeaders:
    """The request headers split into what Lectr reads and what goes upstream.

    One pass over the parsed list, one dictionary lookup per header; names are compared
    lower-cased, values kept as sent.
    """

    __slots__ = ("lectr_key", "feature", "task", "provider", "authorization", "content_type",
                 "content_length", "expect", "forward")

    # ``forward`` holds the forwarded headers already laid out as request bytes, four parts per
    # header (CRLF, name, ": ", value), so the upstream request takes them with one list extend.

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.lectr_key = self.feature = self.task = self.provider = self.authorization = None
        self.content_type = self.content_length = self.expect = None
        connection = None
        self.forward = forward = []
        for name, value in raw:
            lname = name.lower()
            kind = _KINDS.get(lname)
            if kind is None:
                if not lname.startswith(LECTR_PREFIX):  # unknown X-Lectr-* headers are dropped too
                    forward += (b"\r\n", name, b": ", value)
            elif kind == _CONTENT_TYPE:
                self.content_type = value
                forward += (b"\r\n", name, b": ", value)
            elif kind == _AUTHORIZATION:
                self.authorization = value
            elif kind == _LECTR_KEY:
                self.lectr_key = value.strip()
            elif kind == _CONTENT_LENGTH:
                self.content_length = value
            elif kind == _FEATURE:
                self.feature = value
            elif kind == _TASK:
                self.task = value
            elif kind == _PROVIDER:
                self.provider = value
            elif kind == _EXPECT:
                self.expect = value
            elif kind == _CONNECTION:
                connection = value
        if connection:
            # Fields a client names in Connection are for this hop only (RFC 9110 §7.6.1).
            listed = {t.strip().lower() for t in connection.split(b",")}
            self.forward = [part for i in range(0, len(forward), 4) if forward[i + 1].lower() not in listed
                            for part in forward[i:i + 4]]

    def expects_continue(self) -> bool:
        return self.expect is not None and self.expect.strip().lower() == b"100-continue"

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


_HOP, _LENGTH, _TYPE, _ENCODING = range(4)
_RESPONSE_KINDS = {name: _HOP for name in HOP_BY_HOP} | {
    b"content-length": _LENGTH, b"content-type": _TYPE, b"content-encoding": _ENCODING}


def response_head(status_line: bytes, headers: list[tuple[bytes, bytes]],
                  raw: bytes | None = None) -> tuple[bytes, bool, str | None, str | None]:
    """The provider's head to relay, without its closing blank line; whether it gave a
    Content-Length; its Content-Type and Content-Encoding.

    Hop-by-hop fields are dropped: Lectr frames the body for its own hop. ``raw`` is the read
    the head arrived in, when it began with it: the head is then relayed as the provider's own
    bytes, cut where a hop-by-hop field was, instead of being rebuilt line by line.
    """
    has_length = False
    content_type = content_encoding = None
    dropped: list[int] = []
    for index, (name, value) in enumerate(headers):
        kind = _RESPONSE_KINDS.get(name.lower())
        if kind is None:
            continue
        if kind == _HOP:
            dropped.append(index)
        elif kind == _LENGTH:
            has_length = True
        elif kind == _TYPE:
            content_type = value.decode("latin-1")
        else:
            content_encoding = value.decode("latin-1")
    head = _raw_head(raw, len(headers), dropped) if raw is not None else None
    if head is None:
        parts = [status_line]
        skip = set(dropped)
        for index, (name, value) in enumerate(headers):
            if index not in skip:
                parts += (name, b": ", value, b"\r\n")
        head = b"".join(parts)
    return head, has_length, content_type, content_encoding


def _raw_head(raw: bytes, count: int, dropped: list[int]) -> bytes | None:
    """The status line and header lines of ``raw`` (an HTTP/1.1 head, whole), less ``dropped``."""
    end = raw.find(b"\r\n\r\n")
    if end < 0 or not raw.startswith(b"HTTP/1.1 "):
        return None
    if not dropped:
        return raw[:end + 2]
    lines = raw[:end].split(b"\r\n")
    if len(lines) != count + 1:
        return None  # not one line per field (a folded value): rebuild instead
    for index in reversed(dropped):
        del lines[index + 1]
    lines.append(b"")
    return b"\r\n".join(lines)
