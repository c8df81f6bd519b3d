"""Background processes with pidfiles and logs: start, wait until ready, stop."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A service failed to start, to become ready, or to stop."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (for tests and ephemeral stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def log_tail(logfile: Path, lines: int = 15) -> str:
    try:
        return "\n".join(logfile.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    pidfile: Path
    logfile: Path
    ready: Callable[[], bool]
    env: dict[str, str] | None = None
    # extra subprocess.Popen arguments (e.g. the user PostgreSQL runs as when we are root)
    popen_kwargs: dict[str, object] | None = None
    # PostgreSQL's clean and prompt shutdown is SIGINT ("fast"): SIGTERM waits for every client to leave
    stop_signal: int = signal.SIGTERM

    def running_pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        if pid is not None and pid_alive(pid):
            return pid
        return None

    def start(self, timeout: float = 60.0) -> int:
        """Start in the background and return the pid once the service answers."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.logfile, "ab") as log:
            log.write(
                f"\n--- starting {self.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self.argv)}\n".encode()
            )
            log.flush()
            process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that ran `eventhouse stack up`
                env=env,
                **(self.popen_kwargs or {}),  # type: ignore[arg-type]
            )
        self.pidfile.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                self.pidfile.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {code} while starting. Last lines of {self.logfile}:\n"
                    f"{log_tail(self.logfile)}"
                )
            if self.ready():
                return process.pid
            time.sleep(0.1)
        self.stop()
        raise ServiceError(
            f"{self.name} did not become ready within {timeout:.0f} s. Last lines of {self.logfile}:\n"
            f"{log_tail(self.logfile)}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """`stop_signal`, then SIGKILL after `timeout`; True when something was running."""
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid):
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)
        return True
