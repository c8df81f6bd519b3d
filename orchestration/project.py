"""The dbt project Dagster reads: its manifest, re-parsed when a dbt file is newer than it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from settings import REPO_ROOT

DBT_PROJECT_DIR = REPO_ROOT
# dagster-dbt copies partial_parse.msgpack from the default target path into each run's own
# target directory, so parsing here also makes every run's parse partial.
DBT_TARGET_DIR = REPO_ROOT / "target"
MANIFEST_PATH = DBT_TARGET_DIR / "manifest.json"
_DBT_INPUTS = ("models", "macros", "seeds", "snapshots", "tests/dbt", "analyses")
_DBT_FILES = ("dbt_project.yml", "profiles.yml")


class ManifestError(RuntimeError):
    """dbt could not parse the project, so there is no manifest to build assets from."""


def newest_dbt_input(project_dir: Path = DBT_PROJECT_DIR) -> float:
    newest = max((project_dir / name).stat().st_mtime for name in _DBT_FILES)
    for folder in _DBT_INPUTS:
        for root, _dirs, files in os.walk(project_dir / folder):
            for name in files:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


def manifest_is_stale(manifest: Path = MANIFEST_PATH) -> bool:
    return not manifest.exists() or manifest.stat().st_mtime < newest_dbt_input()


def dbt_executable() -> str:
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def ensure_manifest() -> Path:
    """The path of an up-to-date manifest.json, running `dbt parse` when a dbt file changed."""
    if manifest_is_stale():
        command = [
            dbt_executable(),
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(DBT_TARGET_DIR),
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=DBT_PROJECT_DIR)
        if done.returncode != 0 or not MANIFEST_PATH.exists():
            raise ManifestError(
                "`dbt parse` failed, so Dagster cannot build the dbt assets; fix the project and reload:\n"
                + (done.stdout + done.stderr)[-4000:]
            )
    return MANIFEST_PATH
