"""A process of the API's own for answers too big to work out beside the event loop.

A city's `latest` is 510,000 rows: reading them into Python, working out ages and encoding
141 MB of JSON takes seconds of CPU. In a thread of the API process it still held the GIL in
long C calls (one ``orjson.dumps`` or ``bytes.join`` of millions of pieces), and every other
request waited, some long enough for uvicorn to close their kept-alive connections. Here the
build runs in one spawned process with a database connection of its own, and the API receives
the encoded bytes. The process starts at the first build and is replaced if it dies. It runs
at a lower CPU priority (``NICE``): on a small machine its builds otherwise took a core from the
ingest worker, whose lag then grew to tens of seconds; a `latest` a little older is the better
cost.

Builds run in lanes, one process each (the callers name them: `latest` has one per format for
the whole city and one for filtered answers), so that a district's 25,000 rows do not wait
seconds behind a city-wide build.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
NICE = 10  # added to a build process's niceness
# The whole city's builds (seconds of CPU each) yield further: at 10, three such processes
# took enough of a saturated machine to triple ingest's lag p99 (bench/RESULTS.md, run 8).
NICE_BULK = 19


class Builder:
    def __init__(self) -> None:
        self._pools: dict[str, ProcessPoolExecutor] = {}

    async def run(
        self, fn: Callable[..., T], *args: Any, lane: str = "city", nice: int = NICE
    ) -> T:
        """``fn(*args)`` in the build process of ``lane`` (both must pickle: a module-level
        function); a new process gets ``nice`` added to its niceness."""
        pool = self._pools.get(lane)
        if pool is None:
            # spawn, not fork: the API process has threads (the event loop's, the pools')
            pool = self._pools[lane] = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=os.nice,
                initargs=(nice,),
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            # Killed (out of memory, say): this build fails, the next one gets a new process.
            if self._pools.get(lane) is pool:
                del self._pools[lane]
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self._pools.clear()
