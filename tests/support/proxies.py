"""A loopback TCP proxy that loses responses: the client whose write was done but whose answer never came."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ("response_withholding_proxy",)


@asynccontextmanager
async def response_withholding_proxy(port: int) -> AsyncIterator[str]:
    """The base URL of a proxy to the service on ``port`` that passes requests on and never passes anything
    back. When the service closes a connection (or dies), the proxy drops the client's."""
    relays: set[asyncio.Task[None]] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        relays.add(asyncio.current_task())  # type: ignore[arg-type]  # always set inside a handler
        service_reader, service_writer = await asyncio.open_connection("127.0.0.1", port)

        async def forward() -> None:
            while data := await client_reader.read(65536):
                service_writer.write(data)
                await service_writer.drain()

        forwarding = asyncio.create_task(forward())
        try:
            while await service_reader.read(65536):
                pass  # withheld
        except ConnectionError:
            pass
        finally:
            forwarding.cancel()
            client_writer.close()
            service_writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
