"""The benchmark's raw HTTP client reads what a fast server sends in one piece.

A replay's first chunk follows its head at once, so one read can bring the head
and a large part of the body together. That used to be taken for "response
headers larger than 64 KiB" and failed a benchmark row now and then.
"""

from __future__ import annotations

import asyncio

from tests.bench import client

BODY = b"x" * (200 * 1024)


async def head_and_body_in_one_write() -> tuple[int, bytes]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        writer.write(head + BODY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        response = await client.get("127.0.0.1", port, "/")
        body = b""
        while (chunk := await response.read()) is not None:
            body += chunk
        response.close()
        return response.status, body


def test_a_head_and_a_large_body_in_one_read() -> None:
    status, body = asyncio.run(head_and_body_in_one_write())
    assert status == 200
    assert body == BODY
