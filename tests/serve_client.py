"""One raw HTTP request to a local ``nesyloop serve`` on a new connection, for the load tests
and the client processes they start (standard library only, so a child imports it cheaply)."""

from __future__ import annotations

import asyncio


async def one_request(port: int, body: bytes, timeout: float = 60) -> str:
    """A POST on a new connection: the status, or how it failed ("reset", "dropped", ...)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                                timeout)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), timeout)
        writer.close()
    except ConnectionResetError:
        return "reset"
    except (OSError, asyncio.TimeoutError) as err:
        return type(err).__name__
    return data.split(b" ", 2)[1].decode() if data else "dropped"
