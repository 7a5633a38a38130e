"""The in-memory lookups the hot path reads: orgs by key hash, Azure targets by org.

A ``Directory`` is built whole by the cache loader and swapped in with one assignment, so a
request always sees one consistent snapshot and never takes a lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lectr.keys import hash_key
from lectr.providers.base import AzureTarget

# Keys this snapshot has already matched, at most this many (then forgotten all at once).
_RECENT_KEYS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Org:
    """An organization, as the proxy needs it."""

    id: int
    name: str
    azure: AzureTarget | None = None


@dataclass(frozen=True, slots=True)
class Directory:
    """One snapshot of every org the proxy can authenticate."""

    orgs_by_key_hash: dict[str, Org] = field(default_factory=dict)
    # Valid keys seen, so a busy key is hashed once per snapshot rather than once per request.
    # Only keys that matched an org get in, and a new snapshot (a rotation) starts empty.
    _recent: dict[bytes, Org] = field(default_factory=dict, compare=False, repr=False)

    def org_for_key(self, key: bytes) -> Org | None:
        """The org whose key is ``key``, or None."""
        org = self._recent.get(key)
        if org is None:
            org = self.orgs_by_key_hash.get(hash_key(key))
            if org is not None:
                if len(self._recent) >= _RECENT_KEYS_MAX:
                    self._recent.clear()
                self._recent[key] = org
        return org

    @property
    def org_count(self) -> int:
        return len({org.id for org in self.orgs_by_key_hash.values()})


class DirectoryHolder:
    """The one mutable reference to the current snapshot, shared by the proxy and the loader."""

    __slots__ = ("current", "loaded")

    def __init__(self) -> None:
        self.current = Directory()
        self.loaded = False

    def replace(self, directory: Directory) -> None:
        self.current = directory
        self.loaded = True
