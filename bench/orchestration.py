"""What the Dagster layer costs: loading the definitions, serving them, and the whole demo through Dagster.

1. load: `import orchestration.definitions` in a fresh interpreter (what every Dagster process,
   code server, run worker and `eventhouse demo` pays), median of `--repeats` with a prepared
   manifest: the process's wall time and the import alone, measured inside it. Preparing the
   manifest (`dbt parse`: what `dagster dev` does on each code load, and `eventhouse demo` once) is
   measured separately, into a temporary target directory so the repository's target/ is left
   alone: a full parse (nothing to reuse, as on a fresh checkout) and a partial parse
   (target/partial_parse.msgpack copied in, no file changed; one changed model costs a little more).
2. webserver: `dagster-webserver -m orchestration.definitions` from start until its code location
   has loaded (what `make ui` and the webserver test wait for), median of `--webserver-repeats`.
3. demo: `eventhouse demo` end to end (stack start, events into Kafka, every asset materialized
   through Dagster, summary) in a temporary EVENTHOUSE_HOME on free ports; its stack is stopped
   afterwards. Several minutes: `--parts load webserver` leaves it out.

    python -m bench.orchestration [--parts load webserver demo] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestration.instance import running_webserver
from orchestration.project import DBT_PROJECT_DIR, DBT_TARGET_DIR, dbt_executable, prepare_dbt_project
from settings import REPO_ROOT
from stack.processes import free_port

IMPORT_SNIPPET = (
    "import time; began = time.perf_counter(); import orchestration.definitions as d; "
    "print(round(time.perf_counter() - began, 3), len(list(d.defs.resolve_asset_graph().get_all_asset_keys())))"
)


def _venv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def measure_load(repeats: int) -> dict:
    prepare_dbt_project()
    walls, imports, assets = [], [], 0
    for _ in range(repeats):
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_SNIPPET], capture_output=True, text=True, cwd=REPO_ROOT, env=_venv_env()
        )
        walls.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"importing the definitions failed:\n{done.stderr[-3000:]}")
        seconds, count = done.stdout.split()[-2:]
        imports.append(float(seconds))
        assets = int(count)
    print(
        f"definitions: process {statistics.median(walls):.2f} s, import {statistics.median(imports):.2f} s", flush=True
    )
    return {
        "repeats": repeats,
        "assets": assets,
        "process_wall_s_median": round(statistics.median(walls), 2),
        "process_wall_s": [round(w, 2) for w in walls],
        "import_s_median": round(statistics.median(imports), 2),
        "import_s": [round(i, 2) for i in imports],
    }


def _dbt_parse(target: Path) -> float:
    command = [dbt_executable(), "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR)]
    command += ["--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target)]
    env = _venv_env()
    env["DBT_LOG_PATH"] = str(target / "logs")
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=DBT_PROJECT_DIR, env=env)
    elapsed = time.perf_counter() - began
    if done.returncode != 0 or not (target / "manifest.json").exists():
        raise RuntimeError(f"dbt parse failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return elapsed


def measure_dbt_parse() -> dict:
    with tempfile.TemporaryDirectory(prefix="eventhouse-parse-") as scratch:
        full = _dbt_parse(Path(scratch) / "full")
        partial_target = Path(scratch) / "partial"
        partial_target.mkdir()
        msgpack = DBT_TARGET_DIR / "partial_parse.msgpack"
        partial = None
        if msgpack.exists():
            shutil.copy2(msgpack, partial_target / msgpack.name)
            partial = _dbt_parse(partial_target)
    print(f"dbt parse: full {full:.1f} s, partial {partial if partial is None else round(partial, 1)} s", flush=True)
    return {"full_s": round(full, 1), "partial_unchanged_s": None if partial is None else round(partial, 1)}


def measure_webserver(repeats: int) -> dict:
    prepare_dbt_project()  # dagster-webserver (not dagster dev) reads the prepared manifest
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="eventhouse-webserver-") as scratch:
            began = time.perf_counter()
            with running_webserver(Path(scratch) / "dagster", timeout=180):
                times.append(time.perf_counter() - began)
    print(f"webserver ready: median {statistics.median(times):.1f} s", flush=True)
    return {
        "repeats": repeats,
        "ready_s_median": round(statistics.median(times), 1),
        "ready_s": [round(t, 1) for t in times],
    }


def measure_demo() -> dict:
    home = Path(tempfile.mkdtemp(prefix="eventhouse-demo-bench-"))
    ports = ["--clickhouse-port", str(free_port()), "--kafka-port", str(free_port())]
    env = _venv_env()
    env["EVENTHOUSE_HOME"] = str(home)
    cli = [sys.executable, "-m", "eventhouse.cli"]
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [*cli, "demo", "--home", str(home), *ports], capture_output=True, text=True, cwd=REPO_ROOT, env=env
        )
        wall = time.perf_counter() - began
    finally:
        subprocess.run([*cli, "stack", "down", "--home", str(home), *ports], cwd=REPO_ROOT, env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"eventhouse demo failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    print(f"demo end to end: {wall:.1f} s", flush=True)
    return {"wall_s": round(wall, 1), "output_tail": done.stdout.strip().splitlines()[-12:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--parts", nargs="+", choices=["load", "webserver", "demo"], default=["load", "webserver", "demo"]
    )
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters importing the definitions")
    parser.add_argument("--webserver-repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    report: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    if "load" in args.parts:
        report["definitions_load_fresh_manifest"] = measure_load(args.repeats)
        report["dbt_parse"] = measure_dbt_parse()
    if "webserver" in args.parts:
        report["webserver_ready"] = measure_webserver(args.webserver_repeats)
    if "demo" in args.parts:
        report["demo"] = measure_demo()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
