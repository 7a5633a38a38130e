"""The spool: batches that could not reach Postgres, kept on disk until it is back.

Each batch is one file, written whole under a temporary name and renamed into place, named
so that a sorted listing is the order they were written in. Replay takes the oldest first;
the writer records each batch's id in the same transaction as its rows, so a batch is
applied exactly once even if Lectr stops between committing it and deleting its file.
Past ``max_bytes`` new batches are refused (and counted as dropped by the caller).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import time
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import orjson

from lectr.recording.rows import COLUMNS, COST_USD, CREATED_AT

log = logging.getLogger(__name__)
_SUFFIX = ".batch"


class SpooledBatch:
    """One batch read back from the spool."""

    __slots__ = ("path", "batch_id", "rows")

    def __init__(self, path: Path, batch_id: uuid.UUID, rows: list[tuple]) -> None:
        self.path = path
        self.batch_id = batch_id
        self.rows = rows


class Spool:
    """A directory of batch files, bounded in size, shared safely by several processes."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._seq = itertools.count()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = directory / ".replay.lock"
        self._size = self._scan_size()

    def size(self) -> int:
        """Bytes spooled (as this process knows it; rescanned after each replay)."""
        return self._size

    def _scan_size(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def rescan(self) -> None:
        self._size = self._scan_size()

    def pending(self) -> int:
        return len(self._files())

    def write(self, rows: list[tuple]) -> bool:
        """Append one batch; False when the spool is full or the disk refuses (the caller counts the drop)."""
        data = _encode(uuid.uuid4(), rows)
        if self.size() + len(data) > self.max_bytes:
            return False
        # Time first so files from several processes sort in write order; pid and a counter
        # keep names unique.
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}{_SUFFIX}"
        tmp = self.directory / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(self.directory / name)
        except OSError as exc:  # a full or read-only disk: the batch is lost, and counted
            log.error("could not spool %d events to %s: %s", len(rows), self.directory, exc)
            tmp.unlink(missing_ok=True)
            return False
        self._size += len(data)
        return True

    def oldest(self) -> SpooledBatch | None:
        """The oldest batch, or None; a file that cannot be read is set aside as ``.bad``."""
        for path in self._files():
            try:
                return _decode(path)
            except (OSError, ValueError, KeyError) as exc:
                log.error("spool file %s is unreadable (%s); setting it aside", path.name, exc)
                path.rename(path.with_suffix(".bad"))
        return None

    def remove(self, batch: SpooledBatch) -> None:
        try:
            size = batch.path.stat().st_size
            batch.path.unlink()
            self._size = max(0, self._size - size)
        except FileNotFoundError:
            pass

    def replay_lock(self) -> "_ReplayLock":
        """Held while replaying, so only one process replays the shared spool at a time."""
        return _ReplayLock(self._lock_path)

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))


class _ReplayLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> bool:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing releases the lock


def _encode(batch_id: uuid.UUID, rows: list[tuple]) -> bytes:
    header = orjson.dumps({"batch_id": str(batch_id), "rows": len(rows)})
    body = [orjson.dumps(_jsonable(row)) for row in rows]
    return b"\n".join([header, *body]) + b"\n"


def _jsonable(row: tuple) -> list:
    out = list(row)
    out[CREATED_AT] = row[CREATED_AT].isoformat()
    if row[COST_USD] is not None:
        out[COST_USD] = str(row[COST_USD])
    return out


def _decode(path: Path) -> SpooledBatch:
    lines = path.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    rows = []
    for line in lines[1:]:
        values = orjson.loads(line)
        # Columns are only ever added at the end: a batch spooled by an earlier Lectr lacks them.
        values += [None] * (len(COLUMNS) - len(values))
        values[CREATED_AT] = datetime.fromisoformat(values[CREATED_AT])
        if values[COST_USD] is not None:
            values[COST_USD] = Decimal(values[COST_USD])
        rows.append(tuple(values))
    if len(rows) != header["rows"]:
        raise ValueError(f"expected {header['rows']} rows, found {len(rows)} (truncated write?)")
    return SpooledBatch(path, uuid.UUID(header["batch_id"]), rows)


def spooled_bytes(directory: Path) -> int:
    """The spool's size on disk now, whichever worker wrote or replayed it."""
    total = 0
    for path in directory.glob("*.batch"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # replayed meanwhile, by this worker or another
            pass
    return total
