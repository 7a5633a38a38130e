"""Header rules: what Lectr reads, what it keeps from the provider, what it never forwards."""

from __future__ import annotations

import re
from typing import NamedTuple

# RFC 9110 §7.6.1: connection-specific fields, never forwarded by a proxy. Also the ones
# Lectr re-creates for its own hop: Host (the provider's), Content-Length (the same body,
# re-framed) and Expect (Lectr answered the 100-continue itself).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}

LECTR_PREFIX = b"x-lectr-"
# In every provider-specific credential header's name (``providers.registry`` asserts it):
# a request without such a name skips the credential filter.
CREDENTIAL_MARK = b"api-key"
FEATURE_MAX_CHARS = 100
UNTAGGED = "untagged"


# What ``ClientHeaders`` does with a header, by lower-cased name; anything else is forwarded.
_FORWARD, _LECTR_KEY, _FEATURE, _TASK, _PROVIDER, _AUTHORIZATION, _CONTENT_TYPE, _CONTENT_LENGTH, _EXPECT, \
    _CONNECTION, _DROP, _LECTR_OTHER, _HOST, _TRANSFER_ENCODING, _UPGRADE, _CREDENTIAL = range(16)
_KINDS = {
    b"x-lectr-key": _LECTR_KEY, b"x-lectr-feature": _FEATURE, b"x-lectr-task": _TASK,
    b"x-lectr-provider": _PROVIDER, b"authorization": _AUTHORIZATION, b"content-type": _CONTENT_TYPE,
    b"content-length": _CONTENT_LENGTH, b"expect": _EXPECT, b"connection": _CONNECTION,
    b"host": _HOST, b"transfer-encoding": _TRANSFER_ENCODING, b"upgrade": _UPGRADE,
    **{name: _DROP for name in NOT_FORWARDED - {b"content-length", b"expect", b"connection", b"host",
                                                b"transfer-encoding", b"upgrade"}},
}
# The same, by name exactly as clients spell it: a client sends the same names request after
# request, so most headers cost one lookup instead of lower-casing and two checks. Bounded,
# since names are the client's to choose.
_KIND_BY_SPELLING: dict[bytes, int] = {}
_SPELLINGS_MAX = 2048
_SPELLING_MAX_BYTES = 64
# Connection options that name no forwarded field: ``keep-alive`` (which nearly every client
# sends) and ``close`` leave the forwarded fields as they are, with no re-filtering.
_NEVER_FORWARDED = NOT_FORWARDED | {b"close"}


def _kind(name: bytes) -> int:
    lname = name.lower()
    kind = _KINDS.get(lname)
    if kind is None:
        kind = _LECTR_OTHER if lname.startswith(LECTR_PREFIX) else _FORWARD  # unknown X-Lectr-* headers go too
        if kind == _FORWARD and CREDENTIAL_MARK in lname:
            kind = _CREDENTIAL  # forwarded, but marks the request for the credential filter
    if len(name) <= _SPELLING_MAX_BYTES:  # a long made-up name is not worth remembering
        if len(_KIND_BY_SPELLING) >= _SPELLINGS_MAX:
            _KIND_BY_SPELLING.clear()
        _KIND_BY_SPELLING[name] = kind
    return kind


class ClientHeaders:
    """The request headers split into what Lectr reads and what goes upstream.

    One pass over the parsed list, one dictionary lookup per header; names are compared
    lower-cased, values kept as sent.

    ``repeated`` is the lower-cased name of the first ``X-Lectr-*`` header sent more than once
    (ambiguous: which key bills, which feature counts), else None; ``hosts`` counts Host fields;
    ``chunked`` says a Transfer-Encoding was sent (the parser accepts one only when it ends in
    chunked); ``upgrade`` is the Upgrade field's value, for a request cycle that may switch
    protocols; ``credentials`` says a forwarded name contains ``api-key`` (it may be a
    provider's key header, which ``decide`` filters).
    """

    __slots__ = ("lectr_key", "feature", "task", "provider", "authorization", "content_type",
                 "content_length", "expect", "forward", "repeated", "hosts", "chunked", "upgrade", "credentials")

    # ``forward`` holds the forwarded headers already laid out as request bytes, four parts per
    # header (CRLF, name, ": ", value), so the upstream request takes them with one list extend.

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.lectr_key = self.feature = self.task = self.provider = self.authorization = None
        self.content_type = self.content_length = self.expect = self.repeated = self.upgrade = None
        self.hosts = 0
        self.chunked = self.credentials = False
        connection = None
        lectr_others = None
        self.forward = forward = []
        known = _KIND_BY_SPELLING
        for name, value in raw:
            kind = known.get(name)
            if kind is None:
                kind = _kind(name)
            # Ordered by how often each kind comes: nearly every request has the first five.
            if kind == _FORWARD:
                forward += (b"\r\n", name, b": ", value)
            elif kind == _HOST:
                self.hosts += 1
            elif kind == _CONTENT_TYPE:
                self.content_type = value
                forward += (b"\r\n", name, b": ", value)
            elif kind == _CONTENT_LENGTH:
                self.content_length = value
            elif kind == _AUTHORIZATION:
                self.authorization = value
            elif kind == _LECTR_KEY:
                if self.lectr_key is not None:
                    self._repeat(name)
                self.lectr_key = value.strip()
            elif kind == _FEATURE:
                if self.feature is not None:
                    self._repeat(name)
                self.feature = value
            elif kind == _CONNECTION:
                connection = value if connection is None else connection + b"," + value
            elif kind == _CREDENTIAL:
                self.credentials = True
                forward += (b"\r\n", name, b": ", value)
            elif kind == _TASK:
                if self.task is not None:
                    self._repeat(name)
                self.task = value
            elif kind == _PROVIDER:
                if self.provider is not None:
                    self._repeat(name)
                self.provider = value
            elif kind == _EXPECT:
                self.expect = value
            elif kind == _TRANSFER_ENCODING:
                self.chunked = True
            elif kind == _UPGRADE:
                self.upgrade = value
            elif kind == _LECTR_OTHER:
                # Not read by Lectr, but a repeat is as ambiguous as a repeated key (and a
                # header Lectr reads tomorrow must not change meaning then).
                lname = name.lower()
                if lectr_others is None:
                    lectr_others = {lname}
                elif lname in lectr_others:
                    self._repeat(name)
                else:
                    lectr_others.add(lname)
        if connection:
            # Fields a client names in Connection are for this hop only (RFC 9110 §7.6.1).
            listed = {t.strip().lower() for t in connection.split(b",")} - _NEVER_FORWARDED
            if listed:
                self.forward = [part for i in range(0, len(forward), 4) if forward[i + 1].lower() not in listed
                                for part in forward[i:i + 4]]

    def _repeat(self, name: bytes) -> None:
        if self.repeated is None:
            self.repeated = name.lower()

    def expects_continue(self) -> bool:
        """Whether the client waits for ``100 Continue`` before sending its body."""
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


# A hop-by-hop field's whole line (with any obsolete folded continuation lines), in a
# lower-cased head, from the CRLF before it to the CRLF after it. Values never hold CR or LF,
# which the parser has already checked, so the name can only match at the start of a line.
_HOP_LINE = re.compile(rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(HOP_BY_HOP)) + rb"):[^\r]*"
                       rb"(?:\r\n[ \t][^\r]*)*")
# The same less Transfer-Encoding, for a chunked response: Lectr frames the body in chunks
# again, so the provider's own line stays, as sent and where it was sent.
_HOP_LINE_BUT_CODING = re.compile(rb"\r\n(?:" + b"|".join(re.escape(n) for n in sorted(HOP_BY_HOP - {b"transfer-encoding"}))
                                  + rb"):[^\r]*(?:\r\n[ \t][^\r]*)*")
# A Transfer-Encoding line in a head of any case, with its folded continuation lines.
_CODING_LINE = re.compile(rb"\r\ntransfer-encoding:[^\r]*(?:\r\n[ \t][^\r]*)*", re.IGNORECASE)
# The value of each Transfer-Encoding field, in order.
_TRANSFER_CODINGS = re.compile(rb"\r\ntransfer-encoding:([^\r]*)")
# ResponseHead without its Python-level __new__: parse_response_head runs per response.
_new_head = tuple.__new__


class ResponseHead(NamedTuple):
    """What Lectr relays of a provider's response head, and what it notes about it."""

    relay: bytes  # status line and header lines, each ending in CRLF, without the blank line;
    # a chunked response's Transfer-Encoding lines included (see ``without_transfer_coding``)
    has_length: bool
    chunked: bool
    content_type: str | None
    content_encoding: str | None


def parse_response_head(head: bytes) -> ResponseHead:
    """Read a provider's head (its status line and header lines, exactly as sent, which the
    parser has already validated) without a callback per field.

    The head is relayed as the provider's own bytes, less its hop-by-hop fields: Lectr frames
    the body for its own hop. A chunked response keeps its Transfer-Encoding lines, since Lectr
    relays it chunked too (to an HTTP/1.1 client). An HTTP/1.0 status line is relayed as HTTP/1.1.
    """
    low = head.lower()
    has_length = b"\r\ncontent-length:" in low
    # Chunked framing when chunked is the last coding of all Transfer-Encoding fields together.
    chunked = b"\r\ntransfer-encoding:" in low and \
        b",".join(_TRANSFER_CODINGS.findall(low)).rsplit(b",", 1)[-1].strip() == b"chunked"
    content_type = _field(head, low, b"\r\ncontent-type:")
    content_encoding = _list_field(head, low, b"\r\ncontent-encoding:")
    hop_line = _HOP_LINE_BUT_CODING if chunked else _HOP_LINE
    hop = hop_line.search(low)
    if hop is not None:
        head = _without_hop_fields(head, low, hop, hop_line)
    if not head.startswith(b"HTTP/1.1 "):
        head = b"HTTP/1.1" + head[head.index(b" "):]
    return _new_head(ResponseHead, (head, has_length, chunked,
                                    None if content_type is None else content_type.decode("latin-1"),
                                    None if content_encoding is None else content_encoding.decode("latin-1")))


def _field(head: bytes, low: bytes, marker: bytes) -> bytes | None:
    """The value of the last field ``marker`` (CRLF, lower-cased name, colon) starts, trimmed."""
    at = low.rfind(marker)
    if at < 0:
        return None
    start = at + len(marker)
    return head[start:head.index(b"\r\n", start)].strip(b" \t")


def _list_field(head: bytes, low: bytes, marker: bytes) -> bytes | None:
    """``_field`` for a list-valued field: several lines of it are one list, in order (RFC 9110
    §5.3), as ``Content-Encoding: gzip`` then ``Content-Encoding: br`` is ``gzip, br``."""
    at = low.find(marker)
    if at < 0 or at == low.rfind(marker):
        return None if at < 0 else _field(head, low, marker)
    values = []
    while at >= 0:
        start = at + len(marker)
        values.append(head[start:head.index(b"\r\n", start)].strip(b" \t"))
        at = low.find(marker, start)
    return b", ".join(values)


def without_transfer_coding(relay: bytes) -> bytes:
    """A relayed head (``ResponseHead.relay``) less its Transfer-Encoding lines: for a response
    Lectr does not send chunked (to an HTTP/1.0 client, or one that has no body)."""
    return _CODING_LINE.sub(b"", relay)


def _without_hop_fields(head: bytes, low: bytes, hop: re.Match, hop_line: re.Pattern) -> bytes:
    kept = []
    start = 0
    while hop is not None:
        kept.append(head[start:hop.start()])
        start = hop.end()  # the CRLF that ended the cut line now ends the one before it
        hop = hop_line.search(low, start)
    kept.append(head[start:])
    return b"".join(kept)
