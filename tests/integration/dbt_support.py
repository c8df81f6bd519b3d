"""Running dbt from integration tests: in a database and target directory of the test's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestration.project import dbt_executable
from settings import REPO_ROOT


def run_dbt(args: list[str], env: dict, target_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`dbt <args>` against the repository's project; logs and artifacts go to `target_path`."""
    env = {**env, "DBT_TARGET_PATH": str(target_path), "DBT_LOG_PATH": str(target_path / "logs")}
    return subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(REPO_ROOT), "--profiles-dir", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
    )
