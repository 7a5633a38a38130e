"""The in-memory lookups the hot path reads: orgs by key hash, Azure targets by org.

A ``Directory`` is built whole by the cache loader and swapped in with one assignment, so a
request always sees one consistent snapshot and never takes a lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lectr.providers.base import AzureTarget


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
