"""Adaptive busy polling: keep the event loop awake for a short, self-tuned while after I/O.

A core that goes idle between two requests halts, and on a virtual machine waking it again
(and waking it from another core) costs tens of microseconds: more than everything Lectr does
for a request. While events keep arriving closer together than ``max_us``, the loop polls with
a zero timeout instead of sleeping, so the next event is picked up at once. The window tunes
itself like Linux's haltpoll governor: it doubles when an event arrives just after the loop
went to sleep, and halves when a spin ends with nothing to show, so sparse traffic (requests
that take seconds, an idle gateway) soon costs no spinning at all.

A spin with nothing to poll for can do a small piece of deferred work instead (``idle``, set
by whoever owns such work): at low load the cold path then runs in the gaps between requests
rather than in batches that a request can arrive behind.
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns
from typing import Callable

# The first window after a wake-up that came too soon, and the smallest worth spinning.
GROW_START_NS = 10_000
MIN_WINDOW_NS = 2_000


class BusyPoller:
    """Call ``kick`` on every I/O event; the loop then spins until a quiet window has passed."""

    __slots__ = ("loop", "clock", "max_ns", "window_ns", "active", "spinning", "quiet_since", "idle_since",
                 "idle")

    def __init__(self, loop: asyncio.AbstractEventLoop, max_us: int,
                 clock: Callable[[], int] = monotonic_ns) -> None:
        self.loop = loop
        self.clock = clock
        self.max_ns = max_us * 1000
        self.window_ns = 0
        self.active = False
        self.spinning = False
        self.quiet_since = 0
        self.idle_since = 0
        # One short step of deferred work (a few microseconds), run once per spin with nothing to poll.
        self.idle: Callable[[], object] | None = None

    def kick(self) -> None:
        """An event arrived (hot path: one attribute store unless the loop had gone to sleep)."""
        self.active = True
        if not self.spinning and self.max_ns:
            self._wake()

    def _wake(self) -> None:
        # Tune the window on how long the loop was idle before this event.
        now = self.clock()
        idle = now - self.idle_since
        if idle > self.max_ns:
            self.window_ns //= 2  # too long to have spun for: spin less
        elif idle > self.window_ns:
            self.window_ns = min(self.max_ns, max(GROW_START_NS, self.window_ns * 2))
        if self.window_ns >= MIN_WINDOW_NS:
            self.spinning = True
            self.quiet_since = 0
            self.loop.call_soon(self._spin)
        else:
            self.idle_since = now  # the loop sleeps again once this event is handled

    def _spin(self) -> None:
        if self.active:
            self.active = False
            self.quiet_since = 0
            self.loop.call_soon(self._spin)
            return
        now = self.clock()
        if not self.quiet_since:
            self.quiet_since = now
        elif now - self.quiet_since >= self.window_ns:
            self.spinning = False  # a whole window with nothing: let the loop sleep
            self.idle_since = self.quiet_since
            return
        self.loop.call_soon(self._spin)  # first: a failing idle step must not stop the spinning
        if self.idle is not None:
            self.idle()
