"""The API's build process: answers come back from a real spawned process, and one that dies
fails only the build it was running."""

from __future__ import annotations

import asyncio
import math
import os
from concurrent.futures.process import BrokenProcessPool

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
            assert await builder.run(os.nice, 0) == os.nice(0) + NICE
            with pytest.raises(BrokenProcessPool):
                await builder.run(os._exit, 3)  # the process dies mid-build
            second = await builder.run(os.getpid)
            assert second not in (first, os.getpid())
        finally:
            builder.close()

    asyncio.run(run())
