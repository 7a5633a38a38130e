"""Request paths that stay where they were sent: dot segments resolved, ambiguous encodings refused.

Lectr forwards ``/v1/<rest>`` to ``<provider base>/<rest>``. A ``..`` segment in ``rest``,
in any spelling a server might resolve, would walk out of the provider's base
(``/openai/v1/../../x`` is ``/x`` to Groq). So before routing, the path's dot segments are
removed as RFC 3986 §5.2.4 says, counting ``%2e``/``%2E`` as a dot (RFC 3986 §2.3: an
encoded unreserved character is the character), and what cannot be resolved without
guessing how the provider decodes is refused with 400:

- ``%2f``/``%5c`` (an encoded ``/`` or ``\\``): some servers decode them into separators
  after resolving dot segments, some before, so ``..%2f`` means different things to each;
- ``\\`` itself, which some servers treat as ``/``;
- ``%25`` before an encoded dot, slash or backslash (double encoding), which a server that
  decodes twice would resolve after Lectr did;
- ``%00``, and dot segments with parameters (``..;x``), which some servers resolve as ``..``;
- a ``%`` not followed by two hex digits (IIS reads ``%u002e`` as a dot), bytes that are not
  UTF-8 once decoded (overlong forms such as ``%c0%ae`` are a dot to lax decoders), and
  characters that Unicode compatibility normalisation turns into ``.``, ``/``, ``\\`` or ``%``
  (``%ef%bc%8e``, a full-width full stop).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

from lectr.providers.base import PathRefused

# Anything that could make a path mean something other than its plain segments.
_SUSPECT = re.compile(rb"%|/\.|\\")
_REFUSED = re.compile(rb"%(?:2f|5c|00|25(?:2e|2f|5c))|\\", re.IGNORECASE)
_ENCODED_DOT = re.compile(rb"%2e", re.IGNORECASE)
_DOT_WITH_PARAMS = re.compile(rb"^\.\.?;")
_BAD_PERCENT = re.compile(rb"%(?![0-9a-fA-F]{2})")
_SEPARATORS = "./\\%"
# Paths that need no normalisation, as sent: one set lookup instead of a regex scan.
_PLAIN: set[bytes] = set()
_PLAIN_MAX = 1024
_PLAIN_MAX_BYTES = 256


def normalise_path(path: bytes) -> bytes:
    """``path`` (the request target before ``?``) with its dot segments removed.

    ``b"/v1/chat/../models"`` → ``b"/v1/models"``; ``b"/v1/%2e%2e/x"`` → ``b"/x"``; a path
    with nothing to resolve comes back as the same object. Other segments keep their bytes.
    Raises ``PathRefused`` for encoded slashes or backslashes, double-encoded dots, NUL and
    dot segments with parameters.
    """
    if path in _PLAIN:
        return path  # a path already found plain: clients send the same few, request after request
    if _SUSPECT.search(path) is None and path.isascii():
        # The usual case: nothing to resolve. Remembered, bounded (paths are the client's to choose).
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        if len(path) <= _PLAIN_MAX_BYTES:
            _PLAIN.add(path)
        return path
    refused = _REFUSED.search(path)
    if refused is not None:
        what = refused.group().decode("latin-1")
        raise PathRefused(f"the path holds {what!r}, which providers do not all read the same way")
    _check_decoding(path)
    out: list[bytes] = []
    segments = path.split(b"/")
    last = len(segments) - 1
    for i, segment in enumerate(segments[1:], 1):
        plain = _ENCODED_DOT.sub(b".", segment) if b"%" in segment else segment
        if plain == b".":
            if i == last:
                out.append(b"")  # "/a/." is "/a/"
            continue
        if plain == b"..":
            if out:
                out.pop()
            if i == last:
                out.append(b"")
            continue
        if _DOT_WITH_PARAMS.match(plain):
            raise PathRefused("the path holds a dot segment with parameters")
        out.append(segment)
    return b"/" + b"/".join(out)


def _check_decoding(path: bytes) -> None:
    # What a lax or normalising decoder could read as a separator that Lectr did not see.
    if _BAD_PERCENT.search(path) is not None:
        raise PathRefused("the path holds a '%' that is not followed by two hex digits")
    try:
        text = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise PathRefused("the path is not UTF-8 once decoded") from None
    if not text.isascii():
        folded = unicodedata.normalize("NFKC", text)
        if any(folded.count(c) != text.count(c) for c in _SEPARATORS):
            raise PathRefused("the path holds a character that normalises to a separator")
