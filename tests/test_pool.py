"""The connection pool serves waiting requests first come, first served (app/pool.py).

With SQLAlchemy's own asyncio queue, a request that becomes ready in the same turn of the event loop as a
returned connection takes it ahead of every request already waiting, and the one it overtook goes to the back
of the line: under saturation a few requests lose that race again and again, and they are the 99th percentile.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import event, text

from app.config import Settings
from app.db import create_engine
from app.pool import FairAsyncAdaptedQueue, FairAsyncAdaptedQueuePool
from tests.support.servers import until


async def test_a_returned_connection_goes_to_the_longest_waiter_not_to_a_newcomer(postgres_database_url: str) -> None:
    engine = create_engine(Settings(database_url=postgres_database_url, database_pool_size=1))
    assert isinstance(engine.pool, FairAsyncAdaptedQueuePool)
    line = engine.pool._pool  # the queue's line is what this test is about
    assert isinstance(line, FairAsyncAdaptedQueue)
    served: list[str] = []
    parked: set[str] = set()

    async def request(name: str, go: asyncio.Event | None = None) -> None:
        if go is not None:
            parked.add(name)
            await go.wait()
        async with engine.connect() as connection:
            served.append(name)
            await connection.execute(text("SELECT 1"))

    try:
        holder = await engine.connect()
        await holder.execute(text("SELECT 1"))
        waiting = []
        for in_line, name in enumerate(("first", "second", "third"), start=1):
            waiting.append(asyncio.create_task(request(name)))
            await until(lambda n=in_line: line.waiting() == n, f"{name} waiting")
        # The newcomer becomes ready to run in the very turn the connection comes back (just before it goes back
        # into the queue), as a request arriving mid-turn does.
        go = asyncio.Event()
        newcomer = asyncio.create_task(request("newcomer", go))
        await until(lambda: "newcomer" in parked, "the newcomer parked")
        event.listen(engine.sync_engine.pool, "checkin", lambda *_: go.set(), once=True)
        await holder.close()
        await asyncio.gather(*waiting, newcomer)
    finally:
        await engine.dispose()

    assert served == ["first", "second", "third", "newcomer"]


async def test_a_waiter_that_times_out_leaves_the_line_and_the_next_one_is_served() -> None:
    line: FairAsyncAdaptedQueue[str] = FairAsyncAdaptedQueue(maxsize=1)

    impatient = asyncio.create_task(line._wait(0))
    patient = asyncio.create_task(line._wait(None))
    await until(impatient.done, "the impatient waiter timing out")
    assert isinstance(impatient.exception(), Exception)  # Empty: the pool turns it into its TimeoutError
    line.put_nowait("connection")
    assert await patient == "connection"
    assert line.qsize() == 0
    assert line.waiting() == 0


async def test_a_connection_handed_to_a_cancelled_waiter_goes_to_the_next_one() -> None:
    line: FairAsyncAdaptedQueue[str] = FairAsyncAdaptedQueue(maxsize=1)
    gone = asyncio.create_task(line._wait(None))
    next_one = asyncio.create_task(line._wait(None))
    await until(lambda: line.waiting() == 2, "two waiting")
    line.put_nowait("connection")  # handed to the first waiter, which is cancelled before it runs
    gone.cancel()
    assert await next_one == "connection"
    assert gone.cancelled()
    assert line.qsize() == 0
