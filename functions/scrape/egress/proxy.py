"""A per-run SOCKS5 egress proxy: the browser's only way out, checked per connection.

Route interception (`Guard.route`) sees requests but not redirect hops, and not
connections the browser opens on its own (preconnects). So each run's browser
context is pointed at this proxy (Playwright sends loopback through it too), and
the proxy applies the same `Guard` to every connection before it opens one:
a refused target gets a SOCKS "not allowed by ruleset" reply and no packet.
The proxy resolves the host itself and connects to the address it checked, so
the answer cannot change between check and connect (DNS rebinding).

SOCKS5 rather than an HTTP proxy because every connection, plain HTTP included,
is then a tunnel to one fixed host and port: nothing to parse, nothing a reused
keep-alive connection could redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct

from functions.scrape.egress.httpcheck import FORBIDDEN, RequestRefused, forward_requests
from functions.scrape.egress.targets import (
    Guard,
    TargetRefused,
    TargetUnresolvable,
    path_prefixes,
    path_refusal,
)

log = logging.getLogger("steplog.scrape.proxy")

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0
CHUNK = 64 * 1024
CLOSE_GRACE = 1.0

# SOCKS5 reply codes (RFC 1928)
SUCCEEDED = 0
GENERAL_FAILURE = 1
NOT_ALLOWED = 2
HOST_UNREACHABLE = 4
CONNECTION_REFUSED = 5
COMMAND_NOT_SUPPORTED = 7
ADDRESS_NOT_SUPPORTED = 8


class EgressProxy:
    """A SOCKS5 server on 127.0.0.1 for one browser context."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def server_url(self) -> str:
        assert self._server is not None, "the proxy is not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"socks5://127.0.0.1:{port}"

    async def start(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        """Stop listening and cut every tunnel (the context using them is gone).

        Closing the sockets ends the tunnels by themselves; only a connection still
        in its handshake or connecting upstream is cancelled.
        """
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # only `close()` cancels these tasks, and it is waiting for them to end
        except Exception:
            log.exception("egress proxy connection failed")
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            version, count = await reader.readexactly(2)
            await reader.readexactly(count)
            if version != 5:
                return
            writer.write(b"\x05\x00")  # no authentication: only this process can reach us
            _version, command, _reserved, kind = await reader.readexactly(4)
            host = await _read_address(reader, kind)
            (port,) = struct.unpack("!H", await reader.readexactly(2))
        if host is None:
            return await _reply(writer, ADDRESS_NOT_SUPPORTED)
        if command != 1:  # only CONNECT; no BIND, no UDP
            return await _reply(writer, COMMAND_NOT_SUPPORTED)
        try:
            addresses = await self.guard.connect_addresses(
                host, port, "a connection the browser opened: a redirect, a subresource or a link"
            )
        except TargetRefused:
            return await _reply(writer, NOT_ALLOWED)
        except TargetUnresolvable:
            return await _reply(writer, HOST_UNREACHABLE)
        upstream = await _connect(addresses, port)
        if upstream is None:
            return await _reply(writer, CONNECTION_REFUSED)
        up_reader, up_writer = upstream
        self._writers.add(up_writer)
        self.connections += 1
        try:
            await _reply(writer, SUCCEEDED)
            if path_prefixes(host, port) is None:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            else:
                await self._checked(host, port, reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            self._writers.discard(up_writer)

    async def _checked(
        self,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """A tunnel to a host allowed only under a path prefix: each request is checked."""
        answers = asyncio.ensure_future(_pipe(up_reader, writer))
        try:
            await forward_requests(reader, up_writer, lambda p: path_refusal(host, port, p))
        except RequestRefused as exc:
            shown = f"http://{host}:{port}{exc.path}" if exc.path != "?" else f"{host}:{port}"
            self.guard.refuse(TargetRefused(shown, exc.reason, "a request on an allowed host"))
            up_writer.close()
            writer.write(FORBIDDEN)
            with contextlib.suppress(Exception):
                await writer.drain()
            answers.cancel()
        else:
            with contextlib.suppress(Exception):
                if up_writer.can_write_eof():
                    up_writer.write_eof()
        await asyncio.gather(answers, return_exceptions=True)


async def _read_address(reader: asyncio.StreamReader, kind: int) -> str | None:
    if kind == 1:
        return str(ipaddress.IPv4Address(await reader.readexactly(4)))
    if kind == 4:
        return str(ipaddress.IPv6Address(await reader.readexactly(16)))
    if kind == 3:
        (length,) = await reader.readexactly(1)
        name = await reader.readexactly(length)
        return name.decode("ascii") if name.isascii() else None  # browsers send punycode
    return None


async def _connect(
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address], port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect to the first checked address that answers."""
    for ip in addresses:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await asyncio.open_connection(str(ip), port)
        except (OSError, TimeoutError):
            continue
    return None


async def _reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
