"""The snapshot: everything the hot path reads, in memory, swapped whole.

Today: orgs by key hash, and each org's Azure target. Later: routing rules, rate limits and
budgets, each one more part of it. A ``Snapshot`` is built by the loader (``snapshot/loader.py``:
which table reloads which part is a table there) and swapped in with one assignment, so a
request always sees one consistent snapshot and never takes a lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lectr.snapshot.keys import hash_key
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
class Snapshot:
    """One snapshot of what the proxy decides with: the orgs it can authenticate, their Azure targets.

    ``azure_by_org`` (org id → target) defaults to the targets the orgs themselves carry.
    """

    orgs_by_key_hash: dict[str, Org] = field(default_factory=dict)
    azure_by_org: dict[int, AzureTarget] | None = None
    # Valid keys seen, so a busy key is hashed once per snapshot rather than once per request.
    # Only keys that matched an org get in, and a new snapshot (a rotation) starts empty.
    _recent: dict[bytes, Org] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.azure_by_org is None:
            object.__setattr__(self, "azure_by_org", {
                org.id: org.azure for org in self.orgs_by_key_hash.values() if org.azure is not None})

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

    def with_parts(self, **parts: object) -> Snapshot:
        """A new snapshot with some parts replaced (``orgs_by_key_hash=…``, ``azure_by_org=…``)."""
        return replace(self, _recent={}, **parts)

    @property
    def org_count(self) -> int:
        return len({org.id for org in self.orgs_by_key_hash.values()})


class SnapshotHolder:
    """The one mutable reference to the current snapshot, shared by the proxy and the loader."""

    __slots__ = ("current", "loaded")

    def __init__(self) -> None:
        self.current = Snapshot()
        self.loaded = False

    def replace(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.loaded = True


# The names the rest of Lectr has used for them.
Directory = Snapshot
DirectoryHolder = SnapshotHolder
