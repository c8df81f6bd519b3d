"""Where eventhouse's Dagster instance lives: `$EVENTHOUSE_HOME/dagster`.

`eventhouse demo` (make demo) runs its jobs with this DAGSTER_HOME and `eventhouse ui` (make ui)
serves the UI from it, so the UI shows the demo's runs, materializations and check results.
`running_webserver` serves the definitions on a free port for tests and tools (the README screenshot).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings import REPO_ROOT, eventhouse_home

DAGSTER_YAML = """\
# Written by eventhouse (orchestration/instance.py); storage defaults to SQLite files in this folder.
telemetry:
  enabled: false
"""


def dagster_home(env: Mapping[str, str] | None = None) -> Path:
    """`eventhouse_home(env) / "dagster"`, created, with a dagster.yaml that turns telemetry off.

    An existing dagster.yaml is left as it is, so local changes to it (storage, run
    coordinator, ...) survive.
    """
    home = eventhouse_home(env) / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def dagster_env(env: Mapping[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment (os.environ by default) for Dagster processes: DAGSTER_HOME (`dagster_home(env)` unless
    given), and this Python's bin directory first on PATH, so that the code server finds this virtualenv's
    `dbt` (DbtCliResource runs `dbt` from PATH) also when the venv is not activated, as under `make`."""
    base = dict(os.environ if env is None else env)
    base["DAGSTER_HOME"] = str(home if home is not None else dagster_home(base))
    bin_dir = str(Path(sys.executable).parent)
    path = base.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        base["PATH"] = bin_dir + (os.pathsep + path if path else "")
    return base


_LOCATIONS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


@dataclass
class Webserver:
    """A running `dagster-webserver -m orchestration.definitions` (see `running_webserver`)."""

    process: subprocess.Popen
    port: int
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """POST a GraphQL query to /graphql; the `data` of the answer (errors raise)."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def wait_ready(self, timeout: float) -> None:
        """Until /server_info answers and the code location has loaded; a location that failed to load raises."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited with {self.process.returncode}:\n{self.log()[-6000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                    response.read()
                entries = self.graphql(_LOCATIONS_QUERY, timeout=10)["workspaceOrError"]["locationEntries"]
            except (OSError, RuntimeError, ValueError, KeyError, TypeError):
                entries = []
            loaded = [entry for entry in entries if entry["loadStatus"] == "LOADED"]
            if entries and len(loaded) == len(entries):
                errors = [
                    e["locationOrLoadError"]
                    for e in loaded
                    if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"
                ]
                if errors:
                    raise RuntimeError(
                        "the Dagster definitions failed to load in dagster-webserver:\n"
                        + "\n".join(error.get("message", "") for error in errors)
                        + f"\nlog:\n{self.log()[-4000:]}"
                    )
                return
            time.sleep(0.5)
        raise RuntimeError(f"dagster-webserver did not come up within {timeout:.0f} s:\n{self.log()[-6000:]}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the webserver's process group (it and its code server), SIGKILL what is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def running_webserver(
    home: Path, port: int | None = None, timeout: float = 90.0, log_path: Path | None = None
) -> Iterator[Webserver]:
    """`dagster-webserver -m orchestration.definitions` on 127.0.0.1 with DAGSTER_HOME=home, ready, stopped after.

    For tests and tools (the UI screenshot); people use `eventhouse ui` (dagster dev, with the daemon).
    """
    from stack.processes import free_port

    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = log_path or home / "webserver.log"
    env = dagster_env(home=home)
    beside = Path(sys.executable).with_name("dagster-webserver")
    command = [str(beside) if beside.exists() else "dagster-webserver"]
    command += ["-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Webserver(process, port, log_path)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
