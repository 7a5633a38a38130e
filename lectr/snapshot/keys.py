"""Org keys: how they are made and the only form in which Lectr keeps them."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "lc_key_"


def new_org_key() -> str:
    """A fresh org key: ``lc_key_`` and 43 URL-safe random characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    """The stored form of a key. Keys are 256 random bits, so a fast hash is enough."""
    if isinstance(key, str):
        # A header's non-UTF-8 bytes reach here as surrogates (aiohttp): hashed, never an error.
        key = key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()


def key_hint(key: str) -> str:
    """A short, safe reminder of a key for listings (``lc_key_AbC…xyz``)."""
    return f"{key[:10]}…{key[-3:]}"
