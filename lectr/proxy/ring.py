"""The bounded ring buffer between the hot path and everything else.

``append`` never blocks and never raises: when the ring is full the event is dropped and
counted by reason. The consumer (the event writer) takes events in batches with ``drain``
(or one by one with ``pop``) and sleeps in ``wait`` until a batch is ready or its flush
interval has passed.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")
_NEVER = 1 << 62  # an int: comparing an int with a float is slower


class EventRing(Generic[T]):
    """A fixed-capacity FIFO of events with drop counting and a batch wake-up."""

    __slots__ = ("capacity", "appended", "dropped", "dropped_by", "_owner", "_items", "_batch_size", "_ready",
                 "_wake_at")

    def __init__(self, capacity: int, *, batch_size: int = 100,
                 owner: Callable[[T], Hashable] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.appended = 0
        self.dropped: Counter[str] = Counter()
        # Drops by (owner, reason), e.g. per org, so a dashboard can say whose events were lost.
        self.dropped_by: Counter[tuple[Hashable, str]] = Counter()
        self._owner = owner
        self._items: deque[T] = deque()
        self._batch_size = batch_size
        self._ready: asyncio.Event | None = None
        # The ``appended`` count that completes the awaited batch; beyond reach while none is awaited.
        self._wake_at = _NEVER

    def __len__(self) -> int:
        return len(self._items)

    def append(self, event: T) -> bool:
        """Add ``event``; return False (and count a ``ring_full`` drop) when there is no room."""
        items = self._items
        if len(items) >= self.capacity:
            self.count_drop("ring_full", owner=self._owner(event) if self._owner else None)
            return False
        items.append(event)
        self.appended += 1
        if self.appended >= self._wake_at:
            self._wake_at = _NEVER
            self._ready.set()
        return True

    def count_drop(self, reason: str, n: int = 1, *, owner: Hashable = None) -> None:
        """Count lost events by reason (and owner, when known)."""
        self.dropped[reason] += n
        self.dropped_by[(owner, reason)] += n

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def drain(self, limit: int | None = None) -> list[T]:
        """Remove and return up to ``limit`` events (all of them when None), oldest first."""
        items = self._items
        n = len(items) if limit is None else min(limit, len(items))
        return [items.popleft() for _ in range(n)]

    def pop(self) -> T | None:
        """Remove and return the oldest event, or None when the ring is empty."""
        return self._items.popleft() if self._items else None

    def wake(self) -> None:
        """Make a ``wait`` under way return now (the consumer is closing)."""
        if self._ready is not None:
            self._ready.set()

    async def wait(self, timeout: float, *, taken: int = 0) -> None:
        """Return once a batch is waiting or ``timeout`` seconds have passed.

        ``taken`` events already out of the ring but not yet written count towards the batch.
        """
        missing = self._batch_size - len(self._items) - taken
        if missing <= 0:
            return
        if self._ready is None:
            self._ready = asyncio.Event()
        self._ready.clear()
        self._wake_at = self.appended + missing
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._wake_at = _NEVER
