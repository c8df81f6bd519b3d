"""`eventhouse serve` as a child process: for `eventhouse ui`, the screenshot tool and the tests."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from settings import REPO_ROOT


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 503 from /health (a failing check) still means the server is up
    except OSError:
        return False


@contextmanager
def running_server(
    env: Mapping[str, str], port: int, log_path: Path, *args: str, timeout: float = 60.0
) -> Iterator[str]:
    """`eventhouse serve --port PORT [args]` with `env` until the block ends; yields its base URL.

    Its output goes to `log_path`; a server that exits or does not answer within `timeout`
    raises RuntimeError with the log's end."""
    with running_server_process(env, port, log_path, *args, timeout=timeout) as (base, _process):
        yield base


@contextmanager
def running_server_process(
    env: Mapping[str, str], port: int, log_path: Path, *args: str, timeout: float = 60.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """running_server, yielding (base URL, the process) for callers that watch it (bench/collector.py
    reads its CPU time)."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventhouse.cli", "serve", "--port", str(port), *args],
            env=dict(env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not answers(base + "/health"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"eventhouse serve did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.05)  # polling for the port to answer, not waiting as synchronisation
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
