"""pyHanko's validation and time-stamping are coroutines; hub calls them from synchronous code."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code, also when this thread already runs an event loop (an async
    caller, a test driving a browser): asyncio.run refuses that, so the coroutine then gets a thread and a loop of
    its own while the caller waits for it, as it would have for the synchronous call."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="signing-loop") as pool:
        return pool.submit(asyncio.run, coro).result()
