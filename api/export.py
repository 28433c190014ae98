"""Raw readings of any size as a streamed answer (CSV, JSON lines, Parquet) in constant memory.

The rows come from a server-side cursor a chunk at a time; each chunk is turned into a table
and encoded in a worker thread (the encoding is the CPU-heavy part), so the event loop keeps
answering other requests while an export runs. The thread is the export's own: a shared pool
hands chunks to whichever thread is free, and each thread's malloc arena then keeps a chunk's
worth of freed memory, which multiplied the export's memory by the number of threads.
The response is sent as it is made: sending a
chunk waits until the client has taken enough of the last ones (uvicorn's flow control), so a
slow reader slows the cursor instead of filling the API's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.responses import StreamingResponse
from psycopg_pool import AsyncConnectionPool

from api import series as ts
from api.tables import MEDIA, Format, Stream, Table, headers_for


def streamed(
    pool: AsyncConnectionPool[Any],
    plan: ts.Plan,
    series: Sequence[ts.SeriesRef],
    head: Table,
    fmt: Format,
    chunk_rows: int,
    filename: str,
) -> StreamingResponse:
    """The readings of a raw ``plan`` as a streaming response; ``head`` is an empty table
    that carries the columns, the extra keys (Parquet metadata) and the headers."""
    return StreamingResponse(
        _body(pool, plan, series, Stream(fmt, head), chunk_rows),
        media_type=MEDIA[fmt],
        headers=headers_for(head, fmt, filename),
    )


async def _body(
    pool: AsyncConnectionPool[Any],
    plan: ts.Plan,
    series: Sequence[ts.SeriesRef],
    stream: Stream,
    chunk_rows: int,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="pusat-export") as thread:
        yield await loop.run_in_executor(thread, stream.begin)
        async with pool.connection() as conn:
            async for found in ts.raw_chunks(conn, plan, series, chunk_rows):
                yield await loop.run_in_executor(thread, _encode, stream, found, plan, series)
        yield await loop.run_in_executor(thread, stream.end)


def _encode(
    stream: Stream, found: list[tuple[object, ...]], plan: ts.Plan, series: Sequence[ts.SeriesRef]
) -> bytes:
    return stream.chunk(ts.raw_table(found, plan, series))
