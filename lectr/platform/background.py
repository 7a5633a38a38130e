"""Long-running background tasks owned by one component: started once, stopped explicitly."""

from __future__ import annotations

import asyncio
from typing import Coroutine


class Background:
    """Holds one component's tasks so none is forgotten; ``stop`` cancels and awaits them all."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task] = []

    def start(self, coro: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
