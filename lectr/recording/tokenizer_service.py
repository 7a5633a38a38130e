"""The tokeniser as a service shared by every worker, hosted by the cold process.

tiktoken's vocabularies take about 70 MB once loaded (o200k_base about 45 MB, cl100k_base about
25 MB); kept in each worker they would be most of its memory. So one process holds them (the cold
process, or this module run on its own), each loaded on its first use: a deployment whose
providers always report usage never counts a token and never loads one. Workers ask it over a
Unix socket for
the token counts of a whole batch at once: a request is ``[[encoding, text], ...]``, the
reply ``[count, ...]``, each framed by a 4-byte big-endian length. Cold path only: the
writer awaits it between COPYs; no request ever does.

    python -m lectr.recording.tokenizer_service SOCKET_PATH
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

_HEADER = 4
# A request holds at most about MEASURE_REQUEST_CHARS of text (one stream's, if longer), in UTF-8.
MAX_FRAME = 64 * 1024 * 1024
# Text is encoded a slice at a time, so the token list tiktoken builds stays small however long
# the text: cut at whitespace, where a token boundary is all but certain.
SLICE_CHARS = 64 * 1024
RESTART_DELAY = 1.0


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(_HEADER, "big") + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(_HEADER), "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is too large")
    return await reader.readexactly(size)


async def start_server(path: str) -> asyncio.Server:
    """Answer count requests on the Unix socket ``path``, loading each vocabulary on first use.

    The cold process hosts it beside its jobs; ``serve`` runs it as a process of its own.
    """
    from lectr.recording.tokens import TokenCounter

    counter = TokenCounter()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                items = orjson.loads(await _read_frame(reader))
                for name in {name for name, text in items if text and not counter.loaded(name)}:
                    # About half a second, once per vocabulary: in a thread, so the jobs and the
                    # admin listener sharing this loop do not wait for it.
                    await asyncio.to_thread(counter.encoding, name)
                    release_freed_memory()
                counts = [count_tokens(counter.encoding(name), text) if text else 0 for name, text in items]
                del items
                writer.write(_frame(orjson.dumps(counts)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    Path(path).unlink(missing_ok=True)  # left by a predecessor that was killed
    return await asyncio.start_unix_server(handle, path)


async def serve(path: str) -> None:
    """Answer count requests on the Unix socket ``path`` until SIGTERM."""
    server = await start_server(path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def release_freed_memory() -> None:
    """Hand the heap a vocabulary's load freed (its ranks parsed into a dict, then dropped) back
    to the system: glibc keeps freed memory in its arenas otherwise. No-op elsewhere."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def count_tokens(encoding, text: str) -> int:
    """Tokens in ``text``, encoded ``SLICE_CHARS`` at a time (cut before a space or newline)."""
    total = 0
    start = 0
    while len(text) - start > SLICE_CHARS:
        end = start + SLICE_CHARS
        cut = max(text.rfind(" ", start + SLICE_CHARS // 2, end), text.rfind("\n", start + SLICE_CHARS // 2, end))
        if cut > start:
            end = cut
        total += len(encoding.encode_ordinary(text[start:end]))
        start = end
    return total + len(encoding.encode_ordinary(text[start:]))


class TokenizerClient:
    """A worker's connection to the tokeniser process; one batch at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def count(self, items: list[tuple[str, str]], *, timeout: float = 60.0) -> list[int]:
        """Token counts of ``items`` (encoding name, text); raises OSError if the service is away."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._writer is None:
                        self._reader, self._writer = await asyncio.wait_for(
                            asyncio.open_unix_connection(self.path), 5)
                    self._writer.write(_frame(orjson.dumps(items)))
                    return orjson.loads(await asyncio.wait_for(_read_frame(self._reader), timeout))
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    self.close()
                    if attempt == 2:
                        raise OSError(f"tokeniser unavailable: {exc or type(exc).__name__}") from None
                except BaseException:  # cancelled mid-request: its reply must not answer the next one
                    self.close()
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class TokenizerProcess:
    """The tokeniser as a process of its own (tests, tools; `lectr serve` hosts it in the cold process):
    starts it, restarts it if it dies, stops it at the end."""

    def __init__(self) -> None:
        # A short private directory: Unix socket paths are limited to about 100 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="lectr-"))
        self.path = str(self._dir / "tokenizer.sock")
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.get_running_loop().create_task(self._keep_running(), name="lectr-tokenizer")

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lectr.recording.tokenizer_service",
                                                          self.path)
        for _ in range(300):  # it listens at once: vocabularies load on first use
            if os.path.exists(self.path):
                return
            if self._proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        log.error("the tokeniser process did not start; streamed responses without usage stay unmeasured")

    async def _keep_running(self) -> None:
        while not self._stopping:
            code = await self._proc.wait()
            if self._stopping:
                return
            log.error("the tokeniser process exited with %s; restarting", code)
            Path(self.path).unlink(missing_ok=True)
            await asyncio.sleep(RESTART_DELAY)
            await self._spawn()

    async def stop(self) -> None:
        self._stopping = True
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        shutil.rmtree(self._dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
