"""The commit doorbell: wake the other processes that follow one SQLite file, at once.

PostgreSQL tells every process about a commit through `LISTEN`/`NOTIFY`; a SQLite
file has no such channel, so without one a process sees another's commits only
at its next poll (`STEPLOG_TAIL_POLL_INTERVAL`, the worker's claim poll). The
doorbell is that channel: a directory beside the file (`<db>.bell/`, mode 0700)
holding one UNIX-domain datagram socket per open log. After each commit the
writer sends one small datagram (`b"<head pos> <flags>"`) to every socket there
but its own, and each listener turns what it receives into the same calls its
own commits make (commit listeners with the head; work listeners when a run
became claimable).

Why datagrams in a directory:

- **No broker and no shared state.** A process joins by binding a socket there
  and leaves by removing it; the directory listing is the set of listeners. It
  is cached and read again when the directory changes (or every
  `RELIST_SECONDS`, as timestamps are coarse).
- **Never blocks the writer.** Sends are non-blocking: a listener whose queue is
  full (`EAGAIN`) already has rings waiting, so one more would say nothing new.
- **Crashes clean up after themselves.** A process killed with SIGKILL leaves its
  socket file behind; the first ring that gets `ECONNREFUSED` for it removes it.
- **Owner only.** The directory is 0700: another user cannot ring (a forged head
  could make a follower skip events), nor see who listens.

The ring is a wake-up, never the source of truth: a listener reads the log
after its own cursor, and the polls stay as the safety net for a ring lost to a
full queue or to a process that joined between a listing and a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("steplog.storage.doorbell")

WORK = 1
"""Flag: the commit made a run claimable (created, or its lease given back)."""

RELIST_SECONDS = 0.5
"""Read the directory again at least this often: a directory's mtime ticks with the
kernel's coarse clock, so a socket bound in the same tick as the last listing does
not change it."""

MAX_SUN_PATH = 107
"""Longest socket path the kernel takes (108 bytes with the terminating NUL)."""

OnRing = Callable[[int, int], None]
"""Called on the listener's event loop with the highest head rung and the flags ORed."""


def bell_directory(database: Path) -> Path:
    """Where the sockets of the processes following `database` live."""
    return database.with_name(database.name + ".bell")


class Doorbell:
    """One log's end of the doorbell: its own socket to be rung on, and the ringing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        self._dir_fd: int | None = None
        self._listener: socket.socket | None = None
        self._sender: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peers: list[str] = []
        self._listed_at = -RELIST_SECONDS
        self._listed_mtime = -1

    def __repr__(self) -> str:
        return f"Doorbell({str(self.directory / self.name)!r})"

    # -- addresses -------------------------------------------------------------
    def _address(self, name: str) -> str:
        """The socket path of `name`; through /proc/self/fd when the real one is too long."""
        path = os.path.join(self.directory, name)
        if len(os.fsencode(path)) <= MAX_SUN_PATH or self._dir_fd is None:
            return path
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    # -- lifecycle (on the event loop) -------------------------------------------
    def open(self, on_ring: OnRing) -> None:
        """Bind this log's socket and start calling `on_ring` for each ring received."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.setblocking(False)
        listener.bind(self._address(self.name))
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(listener.fileno(), self._readable, on_ring)

    def close(self) -> None:
        """Stop listening and remove this log's socket (rings to it are refused from now on)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(listener.fileno())
            with contextlib.suppress(OSError):
                os.unlink(self._address(self.name))
            listener.close()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _readable(self, on_ring: OnRing) -> None:
        """Take every ring queued (one wake-up for a burst) and report the latest head."""
        listener = self._listener
        if listener is None:
            return
        head, flags, rung = 0, 0, False
        while True:
            try:
                data = listener.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("reading the doorbell failed: %s", exc)
                break
            parts = data.split()
            if len(parts) != 2 or not all(part.isdigit() for part in parts):
                continue  # not a ring of ours: ignored
            head, flags, rung = max(head, int(parts[0])), flags | int(parts[1]), True
        if rung:
            on_ring(head, flags)

    # -- ringing (on the writer's thread) ----------------------------------------
    def ring(self, head: int, flags: int = 0) -> None:
        """Tell every other listener that `head` is committed; never blocks, never raises."""
        sender = self._sender
        if sender is None:
            return
        message = b"%d %d" % (head, flags)
        for name in tuple(self._listing()):
            try:
                sender.sendto(message, self._address(name))
            except (BlockingIOError, InterruptedError):
                continue  # its queue is full: it has rings to read already
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(name)  # a process that died without removing its socket
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    log.debug("ringing %s failed: %s", name, exc)

    def _listing(self) -> list[str]:
        """The other listeners, from the cached listing unless the directory changed."""
        now = time.monotonic()
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return []
        if mtime != self._listed_mtime or now - self._listed_at >= RELIST_SECONDS:
            try:
                names = [
                    entry.name
                    for entry in os.scandir(self.directory)
                    if entry.name.endswith(".sock") and entry.name != self.name
                ]
            except OSError:
                return []
            self._peers, self._listed_mtime, self._listed_at = names, mtime, now
        return self._peers

    def _forget(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._address(name))
        with contextlib.suppress(ValueError):
            self._peers.remove(name)
