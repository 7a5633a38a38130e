"""Start-up checks of ``lectr serve``: one Lectr per port, and failures told in one line.

The proxy workers share their port with ``SO_REUSEPORT``, which lets any later process of the
same user join the port and take part of the traffic. So before any worker binds, the port is
probed with a socket that does *not* set ``SO_REUSEPORT``: the kernel refuses it while anyone
(any user, Lectr or not) listens there. A socket lingering in TIME_WAIT from a stopped Lectr
does not count (``SO_REUSEADDR``, as the listeners themselves use). Two instances starting at
the same moment could both pass the probe; a lock held for the life of the process (an
abstract Unix socket named after the port, which the kernel frees when the process dies)
makes one of them lose.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

EXIT_STARTUP = 1
# A worker that cannot listen exits with this; its supervisor then stops rather than restarting it.
EXIT_CANNOT_LISTEN = 3


class StartupError(RuntimeError):
    """``lectr serve`` cannot start; the message says why in one line."""


class CannotListen(StartupError):
    """A listener's port is taken or refused."""


@dataclass(frozen=True, slots=True)
class Listener:
    role: str  # "proxy" or "admin"
    host: str
    port: int


def describe_bind_error(listener: Listener, exc: OSError) -> str:
    """One line for a listener that could not bind, naming the port and what to do."""
    where = f"{listener.host}:{listener.port} ({listener.role} port, LECTR_{listener.role.upper()}_PORT)"
    if exc.errno == errno.EADDRINUSE:
        return f"port {listener.port} is already in use: cannot listen on {where}; is another Lectr running?"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where}: ports below 1024 need privileges"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: LECTR_HOST is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def _probe(listener: Listener) -> None:
    try:
        addresses = socket.getaddrinfo(listener.host, listener.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {listener.host}:{listener.port} ({listener.role} port): "
                           f"LECTR_HOST {listener.host!r} does not resolve ({exc.strerror})") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds it
            try:
                probe.bind(address)
            except OSError as exc:
                raise CannotListen(describe_bind_error(listener, exc)) from None


class PortClaim:
    """The ports this Lectr listens on, checked free and held by a lock until ``release``."""

    def __init__(self) -> None:
        self._locks: list[socket.socket] = []

    def claim(self, listeners: list[Listener]) -> None:
        """Check every listener's port is free and take its lock; StartupError if one is not."""
        ports = {}
        for listener in listeners:
            if listener.port == 0:  # the kernel picks a free port: nothing to collide with
                continue
            if listener.port in ports:
                raise StartupError(f"the proxy and admin ports are both {listener.port}: "
                                   "set LECTR_PROXY_PORT and LECTR_ADMIN_PORT apart")
            ports[listener.port] = listener
        try:
            for listener in ports.values():
                self._lock(listener)
                _probe(listener)
        except BaseException:
            self.release()
            raise

    def _lock(self, listener: Listener) -> None:
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0lectr-port-{listener.port}")
        except OSError as exc:
            lock.close()
            if exc.errno == errno.EADDRINUSE:
                raise CannotListen(describe_bind_error(listener, exc)) from None
            return  # no abstract sockets here: the probe alone decides
        os.set_inheritable(lock.fileno(), False)
        self._locks.append(lock)

    def release(self) -> None:
        while self._locks:
            self._locks.pop().close()

# Where the cold process's tokeniser listens; set by the supervisor for the processes it starts.
TOKENIZER_SOCKET_ENV = "LECTR_TOKENIZER_SOCKET"
