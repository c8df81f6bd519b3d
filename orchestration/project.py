"""The dbt project Dagster reads, as dagster-dbt's `DbtProject`.

dagster-dbt's model: under `dagster dev` the manifest is re-parsed on every code load
(`prepare_if_dev`, below); anywhere else it is prepared once beforehand, as a deployment's build
step, and the definitions only read it. Here that step is `python -m orchestration.project` (or
`dagster-dbt project prepare-and-package --file orchestration/project.py`, which calls the same
preparer); `eventhouse demo`, the tests and the tools call `prepare_dbt_project()` before they load
the definitions.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject, DbtProjectPreparer
from dagster_shared.record import replace

from settings import REPO_ROOT

DBT_PROJECT_DIR = REPO_ROOT
# dagster-dbt copies partial_parse.msgpack from the project's target path into each run's own
# target directory, so preparing here also makes every run's parse partial.
DBT_TARGET_DIR = REPO_ROOT / "target"
MANIFEST_PATH = DBT_TARGET_DIR / "manifest.json"


class ManifestError(RuntimeError):
    """There is no manifest to build the dbt assets from."""


def dbt_executable() -> str:
    """This virtualenv's dbt, also when the virtualenv is not on PATH (make runs .venv/bin/... directly)."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


class EventhouseDbtPreparer(DbtProjectPreparer):
    """dagster-dbt's default preparation (`dbt parse --quiet` into the project's target path), run
    with this virtualenv's dbt: dagster-dbt's own preparer runs `dbt` from PATH. The project has no
    packages, so there is no `dbt deps` step."""

    def prepare_if_dev(self, project: DbtProject) -> None:
        if self.using_dagster_dev():
            self.prepare(project)

    def prepare(self, project: DbtProject) -> None:
        dbt = DbtCliResource(project_dir=project, dbt_executable=dbt_executable())
        dbt.cli(["parse", "--quiet"], target_path=project.target_path).wait()  # raises with dbt's errors


DBT_PROJECT: DbtProject = replace(
    DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=DBT_TARGET_DIR),
    preparer=EventhouseDbtPreparer(),
)
DBT_PROJECT.prepare_if_dev()


@functools.cache
def prepare_dbt_project() -> Path:
    """Parse the dbt project into target/manifest.json, once per process; its path.

    Once: the dbt files do not change under a demo or a test session, and dbt's partial parse
    still costs a few seconds. A `dagster dev` code server prepares on each reload instead.
    """
    DBT_PROJECT.preparer.prepare(DBT_PROJECT)
    return manifest_path()


def manifest_path() -> Path:
    """target/manifest.json, which must have been prepared (see the module's docstring)."""
    if not DBT_PROJECT.manifest_path.exists():
        raise ManifestError(
            f"{DBT_PROJECT.manifest_path} is missing, so Dagster cannot build the dbt assets: run "
            "`python -m orchestration.project` (or `dbt parse`) first, or start Dagster with `make ui` "
            "(dagster dev prepares it)"
        )
    return DBT_PROJECT.manifest_path


if __name__ == "__main__":
    print(f"prepared {prepare_dbt_project()}")
