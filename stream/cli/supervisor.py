"""`steplog serve --processes N`: N serving processes on one port, kept running by a parent.

Python runs one thread of Python at a time, so one process serves streams with one
core. With `--processes N` the parent binds the port first (a busy port is still
one line, before anything starts), makes one listening socket per process on it
with SO_REUSEPORT (the kernel spreads new connections over them), and forks N
children. Each child builds and runs the whole app on its own socket, exactly as
a single-process server does (middleware, the tail hub, its share of the worker
slots), on the same log: SQLite's writers take turns on the file's write lock,
and a commit rings the other processes through the doorbell (storage/doorbell.py);
PostgreSQL's through NOTIFY.

What runs once, not per process:
- the API key, webhook secret and secret key are made (or read) by the parent,
  before forking, and the start-up lines and the CLI's record of the server are
  written by the parent once every child accepts;
- retention (the archiver) runs in process 0 only: archiving is one writer
  transaction per chunk and needs no second runner;
- the worker slots (`--workers`) are shared out among the processes (4 over 2
  processes: 2 each); several pools on one log are safe, as claims are leases.

What stays per process: the stream caps (`STEPLOG_MAX_STREAMS`, per token), the
tail hub, and `/metrics` (each process counts its own requests and streams).

Signals: SIGTERM or SIGINT to the parent is passed on as SIGTERM to every child
(which shuts down gracefully: streams get their farewell, leases are given back),
and the parent exits once they all have; a second signal is passed on too (the
children then exit at once). Each child runs in a process group of its own and
ignores SIGINT, so Ctrl-C in a terminal (sent to the foreground process group)
counts once, through the parent; under systemd use `KillMode=mixed`, which
signals the main process only (`control-group` would signal every child twice).
A child is also sent SIGTERM by the kernel should the parent die
(PR_SET_PDEATHSIG), so none outlives a parent killed with SIGKILL.

A child that dies while serving is reported and replaced on the same socket
(connections that arrived meanwhile wait in its queue), with a back-off should it
keep dying; a child that dies before it ever served stops the whole server with
exit 1 (a database that cannot be opened would fail every restart).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType

from hypercorn.config import Sockets

from stream.settings import Settings

log = logging.getLogger("steplog.serve")

RESTART_DELAY = 0.5
"""Seconds before replacing a child that died, doubled while they keep dying young."""
MAX_RESTART_DELAY = 30.0
STEADY_SECONDS = 10.0
"""A child that served this long before dying is replaced at once (it did not die young)."""
KILL_MARGIN = 10.0
"""Seconds past the graceful timeout after which children still alive are killed."""
_PR_SET_PDEATHSIG = 1

ChildMain = Callable[[Settings, Sockets, Callable[[], None]], int]
"""Runs one serving process: its settings, its sockets, and what to call once it accepts."""


def share(settings: Settings, index: int, processes: int) -> Settings:
    """Process `index`'s settings: its share of the worker slots; retention in process 0."""
    workers = settings.workers // processes + (1 if index < settings.workers % processes else 0)
    return replace(
        settings,
        processes=1,
        workers=workers,
        retention_days=settings.retention_days if index == 0 else None,
    )


@dataclass(slots=True)
class Child:
    index: int
    pid: int
    started: float


class Supervisor:
    """The parent: forks the serving processes, passes signals on, replaces the dead."""

    def __init__(
        self,
        settings: Settings,
        sockets: list[Sockets],
        child_main: ChildMain,
        on_ready: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.child_main = child_main
        self.on_ready = on_ready
        self.children: dict[int, Child] = {}
        self.ever_ready: set[int] = set()
        """The indexes that have served (once all have, the parent says so, once)."""
        self.stopping: float | None = None
        self.signals = 0
        self.failed = False
        self.delays: dict[int, float] = {}
        self.due: dict[int, float] = {}
        self.pid = os.getpid()
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()

    # -- signals ------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a child between fork and its own handlers
            os._exit(128 + signum)
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.info("%s: stopping %d serving processes (graceful timeout %gs)",
                     name, len(self.children), self.settings.graceful_timeout)  # fmt: skip
            self.stopping = time.monotonic()
        else:
            log.warning("second %s: the serving processes exit without waiting", name)
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, signum: signal.Signals) -> None:
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    # -- the loop -------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; the exit code (1: a process could not start)."""
        if threading.active_count() > 1:  # forking copies no other thread's work
            log.warning("forking with %d threads running", threading.active_count())
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the select
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for index in range(len(self.sockets)):
            self._spawn(index)
        while self.children or (self.stopping is None and self.due):
            self._reap()
            self._restart_due()
            self._kill_stragglers()
            if not self.children and (self.stopping is not None or not self.due):
                break
            self._wait(self._timeout())
        return 1 if self.failed else 0

    def _timeout(self) -> float | None:
        deadlines = list(self.due.values()) if self.stopping is None else []
        if self.stopping is not None:
            deadlines.append(self.stopping + self.settings.graceful_timeout + KILL_MARGIN)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a signal, a child saying it accepts, or `timeout`."""
        ready, _, _ = select.select([self._ready_r, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        if self._ready_r in ready:
            for line in os.read(self._ready_r, 512).split():
                self._ready(int(line))

    def _ready(self, pid: int) -> None:
        child = self.children.get(pid)
        if child is None:
            return
        if child.index in self.ever_ready:
            log.info("serving process %d is back (pid %d)", child.index, pid)
            return
        self.ever_ready.add(child.index)
        if len(self.ever_ready) == len(self.sockets):
            self.on_ready()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._ended(child, os.waitstatus_to_exitcode(status))

    def _ended(self, child: Child, code: int) -> None:
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        if self.stopping is not None:
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "serving process %d (pid %d) ended (%s)", child.index, child.pid, how)
            return
        if child.index not in self.ever_ready:
            log.error("serving process %d (pid %d) exited with %s before it served; stopping",
                      child.index, child.pid, how)  # fmt: skip
            self.failed = True
            self.stopping = time.monotonic()
            self._signal_children(signal.SIGTERM)
            return
        young = time.monotonic() - child.started < STEADY_SECONDS
        delay = min(self.delays.get(child.index, RESTART_DELAY / 2) * 2, MAX_RESTART_DELAY)
        delay = delay if young else 0.0
        self.delays[child.index] = delay or RESTART_DELAY / 2
        log.warning("serving process %d (pid %d) exited with %s; starting another%s",
                    child.index, child.pid, how, f" in {delay:g}s" if delay else "")  # fmt: skip
        self.due[child.index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self.stopping is not None:
            self.due.clear()
            return
        now = time.monotonic()
        for index, when in list(self.due.items()):
            if when <= now:
                del self.due[index]
                self._spawn(index)

    def _kill_stragglers(self) -> None:
        if self.stopping is None or not self.children:
            return
        if time.monotonic() > self.stopping + self.settings.graceful_timeout + KILL_MARGIN:
            log.warning("%d serving processes still running: killing them", len(self.children))
            self._signal_children(signal.SIGKILL)
            self.stopping = time.monotonic()  # and wait for them once more

    # -- a child ------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    self._become_child(index, blocked)
                    settings = share(self.settings, index, len(self.sockets))
                    code = self.child_main(settings, self.sockets[index], self._tell_ready)
                except BaseException:
                    log.exception("serving process %d failed", index)
                finally:
                    logging.shutdown()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        self.children[pid] = Child(index, pid, time.monotonic())
        log.debug("serving process %d started (pid %d)", index, pid)

    def _become_child(self, index: int, blocked: set[signal.Signals]) -> None:
        """Leave the parent's signal handling; close what belongs to the parent."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping comes through the parent
        # A process group of its own: what signals the parent's group (Ctrl-C in a terminal,
        # `timeout`, `kill -- -PGID`) reaches the children once, passed on by the parent,
        # instead of twice (which they would take for the second signal: exit at once).
        os.setpgid(0, 0)
        _die_with_parent(self.pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        for fd in (self._ready_r, self._wake_r, self._wake_w):
            os.close(fd)
        mine = self.sockets[index]
        for sockets in self.sockets:
            if sockets is not mine:
                for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                    sock.close()

    def _tell_ready(self) -> None:
        os.write(self._ready_w, b"%d\n" % os.getpid())


def _die_with_parent(parent: int) -> None:
    """Be sent SIGTERM when the parent dies (Linux), so no child outlives a killed parent."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
