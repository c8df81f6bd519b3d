"""Ownership of the one chDB engine a data directory may have, and the sessions on it.

chDB lets exactly one process open a data directory. The server process takes an
exclusive lock on the directory before opening the engine, so a second process gets
a clear error naming the directory and the pid that owns it instead of chDB's own.
Within the process chDB allows any number of connection handles; each handle has its
own current database, settings and temporary tables, which is what an HTTP session is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb

from stack.clickhouse_protocol import ClickHouseError

log = logging.getLogger(__name__)

LOCK_FILE_NAME = "eventhouse-server.lock"
POOL_SIZE = 16
DEFAULT_SESSION_TIMEOUT = 60.0
SESSION_LOCK_WAIT_S = 2.0
MAX_SESSION_TIMEOUT = 3600.0


class DataDirectoryInUse(RuntimeError):
    """Another live process owns the chDB data directory."""


def _read_owner(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


class DataDirectoryLock:
    """An exclusive flock on `<data>/eventhouse-server.lock` holding the owner's pid.

    flock is released by the kernel when the process dies, so a crashed server never
    leaves a stale lock behind.
    """

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirectoryInUse(
                f"ClickHouse data directory {self.data_dir} is in use by process {_read_owner(self.path)}; "
                "chDB allows one process per data directory. Stop that process "
                "(`eventhouse stack down`) or choose another directory (--home / EVENTHOUSE_HOME)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class Session:
    session_id: str
    handle: Any
    timeout: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    # What the HTTP layer knows of the handle's state (current database, URL settings).
    protocol_state: Any = None
    # Pooled handles only: set when a statement changed state a later request must not see.
    discard: bool = False
    # Set when a query on the handle failed part-way (see ChdbEngine.scrub).
    tainted: bool = False

    @property
    def pooled(self) -> bool:
        return not self.session_id

    def expired(self, now: float) -> bool:
        return not self.lock.locked() and now - self.last_used > self.timeout


class ChdbEngine:
    """The process's chDB engine: fresh handles for session-less requests, kept handles for sessions."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir.resolve()
        self._lock = DataDirectoryLock(self.data_dir)
        self._primary: Any = None
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self._pool: list[Session] = []
        self._pool_lock = threading.Lock()
        self._handles_lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def open(self) -> None:
        self._lock.acquire()
        try:
            # The primary handle keeps the engine alive between requests.
            self._primary = chdb.connect(str(self.data_dir))
        except Exception:
            self._lock.release()
            raise
        self._reaper = threading.Thread(target=self._reap_sessions, name="session-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        self._stop.set()
        with self._sessions_lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        with self._pool_lock:
            sessions += self._pool
            self._pool.clear()
        for session in sessions:
            with session.lock:
                self.close_handle(session.handle)
        if self._primary is not None:
            self._primary.close()
            self._primary = None
        self._lock.release()

    def use_atomic_default_database(self) -> None:
        """Replace clickhouse-local's `default` database (Atomic + Filesystem overlay) with the Atomic one.

        In chDB `default` overlays a Filesystem database on the Atomic one that holds its
        tables, so `SELECT * FROM `/etc/passwd`` reads any file the process may read. The
        overlay is rebuilt at every start; re-attaching the same Atomic database (same UUID, so
        the same tables) removes the Filesystem layer until the process ends.
        """
        row = self.query("SELECT engine, uuid FROM system.databases WHERE name = 'default'").decode().split()
        if not row or row[0] != "Overlay":
            return
        uuid = row[1]
        # One handle for both: a new handle cannot open while `default` is detached.
        self._primary.query("DETACH DATABASE default", "TabSeparated")
        self._primary.query(f"ATTACH DATABASE default UUID '{uuid}' ENGINE = Atomic", "TabSeparated")
        engine = self.query("SELECT engine FROM system.databases WHERE name = 'default'").decode().strip()
        if engine != "Atomic":
            raise RuntimeError(f"chDB's default database is {engine!r} after re-attaching it as Atomic")

    def new_handle(self) -> Any:
        # Opening and closing handles is serialized: it touches the engine's shared
        # state, and it is ~0.1 ms, so the lock costs nothing measurable.
        with self._handles_lock:
            return chdb.connect(str(self.data_dir))

    def close_handle(self, handle: Any) -> None:
        with self._handles_lock:
            handle.close()

    @contextmanager
    def pooled(self) -> Iterator[Session]:
        """A handle for one session-less request, taken from and returned to a pool.

        A reused handle answers a tiny query ~1 ms faster than a fresh one. The caller
        resets the database and URL settings it applies; a handle whose statement changed
        session state (SET, USE, temporary tables) or that failed is closed, not reused.
        """
        with self._pool_lock:
            entry = self._pool.pop() if self._pool else None
        if entry is None:
            entry = Session("", self.new_handle(), 0.0)
        entry.discard = entry.tainted = False
        try:
            yield entry
        except BaseException:
            entry.discard = True
            raise
        finally:
            with self._pool_lock:
                keep = (
                    not entry.discard and not entry.tainted and not self._stop.is_set() and len(self._pool) < POOL_SIZE
                )
                if keep:
                    self._pool.append(entry)
            if not keep:
                self.close_handle(entry.handle)

    def query(self, sql: str, fmt: str = "TabSeparated") -> bytes:
        """Run one statement on a fresh handle (for the server's own bookkeeping)."""
        handle = self.new_handle()
        try:
            return handle.query(sql, fmt).bytes()
        finally:
            self.close_handle(handle)

    @staticmethod
    def scrub(handle: Any) -> None:
        """Clear what a failed query left on a handle.

        chDB 4.4 keeps the output a query produced before it failed and prepends it to
        the next result on the same handle; one throwaway query takes it. Session handles
        are kept (they hold the client's settings and temporary tables), so they are
        scrubbed; pooled handles are simply closed.
        """
        for _ in range(3):
            try:
                if handle.query("SELECT 1", "TabSeparated").bytes() == b"1\n":
                    return
            except Exception:
                log.debug("scrub query failed", exc_info=True)
        log.warning("a session handle still returned stale output after a failed query")

    @contextmanager
    def session(self, session_id: str, timeout: float | None, check: bool) -> Iterator[Session]:
        """The session's handle, held exclusively for the length of one request."""
        timeout = DEFAULT_SESSION_TIMEOUT if timeout is None else min(max(timeout, 1.0), MAX_SESSION_TIMEOUT)
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ClickHouseError(372, f"Session {session_id} not found")
                session = Session(session_id, self.new_handle(), timeout)
                self._sessions[session_id] = session
        # A client may send its next request the moment it has read a response, while the
        # thread that wrote the response is still releasing the session: wait a little before
        # calling the session locked (a real concurrent query still gets the error).
        if not session.lock.acquire(timeout=SESSION_LOCK_WAIT_S):
            raise ClickHouseError(373, f"Session {session_id} is locked by a concurrent client")
        try:
            session.timeout = timeout
            session.tainted = False
            try:
                yield session
            except BaseException:
                session.tainted = True
                raise
            finally:
                if session.tainted:
                    self.scrub(session.handle)
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    @property
    def session_count(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    def _reap_sessions(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._sessions_lock:
                expired = [s for s in self._sessions.values() if s.expired(now)]
                for session in expired:
                    del self._sessions[session.session_id]
            for session in expired:
                log.debug("closing idle session %s", session.session_id)
                self.close_handle(session.handle)
