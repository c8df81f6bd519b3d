"""`eventhouse serve` as a real process on a free port, for the API, collector and dashboard tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from serving.process import running_server
from stack.processes import free_port


@contextmanager
def running_api(env: Mapping[str, str], log_dir: Path, *args: str) -> Iterator[str]:
    """`eventhouse serve --port <free> [args]` with `env`; yields its base URL, stops it afterwards.
    Its output goes to log_dir/serve-<port>.log (in the error when it fails to start)."""
    port = free_port()
    with running_server(env, port, log_dir / f"serve-{port}.log", *args) as base:
        yield base
