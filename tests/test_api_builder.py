"""The API's build process: answers come back from a real spawned process, and one that dies
fails only the build it was running."""

from __future__ import annotations

import asyncio
import math
import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from api.builder import NICE, Builder


def test_a_build_runs_in_another_process_and_a_dead_one_is_replaced() -> None:
    async def run() -> None:
        builder = Builder()
        try:
            assert await builder.run(math.sqrt, 16.0) == 4.0
            first = await builder.run(os.getpid)
            assert first != os.getpid()
            # below the API in CPU priority, so that builds never starve ingest
            assert await builder.run(os.nice, 0) == min(19, os.nice(0) + NICE)
            with pytest.raises(BrokenProcessPool):
                await builder.run(os._exit, 3)  # the process dies mid-build
            second = await builder.run(os.getpid)
            assert second not in (first, os.getpid())
        finally:
            builder.close()

    asyncio.run(run())


def _wait_for(path: str) -> int:
    """A build that runs until ``path`` exists (a city-wide build that takes long)."""
    while not os.path.exists(path):
        time.sleep(0.02)
    return os.getpid()


def test_a_filtered_build_does_not_wait_behind_a_city_wide_one(tmp_path: Path) -> None:
    release = tmp_path / "release"

    async def run() -> None:
        builder = Builder()
        try:
            city = asyncio.ensure_future(builder.run(_wait_for, str(release)))
            # Served by its own process while the city's build still runs: in one process it
            # would wait for the release below, which comes only after it.
            filtered = await asyncio.wait_for(builder.run(os.getpid, lane="filtered"), 60)
            assert not city.done()
            # each lane at the niceness asked for when its process started
            assert await builder.run(os.nice, 0, lane="bulk", nice=19) == min(19, os.nice(0) + 19)
            release.touch()
            assert await asyncio.wait_for(city, 60) not in (filtered, os.getpid())
        finally:
            release.touch()
            builder.close()

    asyncio.run(run())
