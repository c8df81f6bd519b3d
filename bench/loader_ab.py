"""The loader of this checkout against another one (a baseline), on the same events, in one run.

Produces N events once, then runs `eventhouse load --until-caught-up` from each checkout in turn
(baseline, this, baseline, this, ...), each into its own raw database with its own consumer
group, and reports the median rows/s of each and their ratio. Alternating the runs spreads a
noisy machine's slow moments over both sides.

    git worktree add /tmp/eventhouse-baseline HEAD~1
    python -m bench.loader_ab --baseline /tmp/eventhouse-baseline [--events 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import embedded_stack, sample_event
from ingestion.publisher import Publisher
from settings import REPO_ROOT, load_settings

BASE = datetime(2024, 4, 1, tzinfo=UTC)


def _load(checkout: Path, env: dict[str, str], database: str, batch_rows: int) -> dict:
    """One loader run from `checkout` (its modules come first on sys.path: it runs with cwd there)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", "load", "--until-caught-up", "--raw-database", database]
        + ["--group-id", database, "--batch-rows", str(batch_rows), "--batch-bytes", str(64 << 20)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    summary["wall_s"] = time.perf_counter() - started
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of eventhouse")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    sides = {"baseline": args.baseline.resolve(), "this": REPO_ROOT}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    with embedded_stack("eventhouse-loader-ab-") as env:
        env = {**env, "PYTHONPATH": ""}
        publisher = Publisher(load_settings(env).kafka, client_id="bench-producer")
        for i in range(args.events):
            publisher.publish(sample_event(i, BASE + timedelta(milliseconds=97 * i)))
        publisher.close()
        for round_number in range(args.rounds):
            for name, checkout in sides.items():
                summary = _load(checkout, env, f"raw_ab_{name}_{round_number}", args.batch_rows)
                assert summary["rows_loaded"] == args.events, summary
                runs[name].append(summary)
                print(
                    f"round {round_number + 1} {name}: {summary['rows_per_s_since_first_message']} rows/s", flush=True
                )

    def median(name: str, key: str) -> float:
        return statistics.median(float(run[key]) for run in runs[name])

    report = {
        "events": args.events,
        "rounds": args.rounds,
        "baseline": str(sides["baseline"]),
        **{f"{name}_rows_per_s_median": round(median(name, "rows_per_s_since_first_message")) for name in sides},
        **{
            f"{name}_parse_validate_s_median": round(
                statistics.median(run["time_split_s"]["parse_validate"] for run in runs[name]), 2
            )
            for name in sides
        },
    }
    report["ratio_this_over_baseline"] = round(
        report["this_rows_per_s_median"] / report["baseline_rows_per_s_median"], 3
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
