"""The event collector's throughput and latency: POST /api/v1/events on the embedded stack.

One `eventhouse serve` process (its defaults: uvicorn with uvloop and httptools, one worker) in
front of a fresh embedded Kafka. `--clients` client processes, each with one keep-alive httpx
connection, post batches of `--batch` valid clickstream clicks (made with make_event, fresh
event_ids in every request) in two phases of `--seconds` each, after a warm-up (the collector's
first request creates its producer and the topics):

1. saturated: every client posts its next batch as soon as the answer comes back, so the
   server is the bottleneck; gives the most events/s (and the latency when requests queue).
2. paced: the clients together post `--rate` events/s on a fixed schedule (the target rate),
   the latency a server at that load gives.

Reported per phase: accepted events/s, request latency percentiles (ms, from the client's send to
the whole answer, which comes after Kafka's acks), errors, and the CPU the server process used
(in cores: 1.0 is one core busy all the time). Clients, server and broker share the machine.

    python -m bench.collector [--clients 4] [--batch 100] [--seconds 15] [--rate 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from bench.common import embedded_stack
from ingestion.contract import make_event
from serving.process import running_server_process
from stack.processes import free_port

# Each request's event_ids get a fixed-width request number in place of this (a bytes replace
# per request rather than building 100 events: the clients share the machine with the server).
PLACEHOLDER = b"@@@@@@@@@@@@"
WARMUP_REQUESTS = 20


def batch_template(batch: int) -> bytes:
    """A JSON array of `batch` clicks whose event_ids carry PLACEHOLDER."""
    now = datetime.now(UTC)
    events = [
        make_event(
            "clickstream.click",
            f"bench-{PLACEHOLDER.decode()}-{i}",
            now,
            {"item_id": 214_536_500 + i, "category": "S"},
            session_id=f"s{i % 17}",
            service="bench",
        )
        for i in range(batch)
    ]
    return orjson.dumps(events)


def run_client(base: str, client: int, batch: int, start_at: float, seconds: float, interval: float) -> dict:
    """One client process: post from `start_at` (wall clock) for `seconds`, a request every
    `interval` seconds (0: as soon as the previous answer is in); latencies in ms."""
    template = batch_template(batch)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    accepted = 0
    request = 0
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=base, timeout=30) as http:
        time.sleep(max(start_at - time.time(), 0))
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            if interval:
                # the schedule, not the previous answer, says when: a late answer delays nothing
                time.sleep(max(started + request * interval - time.perf_counter(), 0))
            request += 1
            body = template.replace(PLACEHOLDER, f"{client:02d}{request:010d}".encode())
            sent = time.perf_counter()
            try:
                response = http.post("/api/v1/events", content=body, headers=headers)
                status = str(response.status_code)
                if response.status_code == 202:
                    accepted += response.json()["accepted"]
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
    return {"latencies": latencies, "statuses": statuses, "accepted": accepted}


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def warm_up(base: str, batch: int) -> None:
    template = batch_template(batch)
    with httpx.Client(base_url=base, timeout=60) as http:
        for n in range(WARMUP_REQUESTS):
            body = template.replace(PLACEHOLDER, f"warm{n:08d}".encode())
            warm = http.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
            if warm.status_code != 202:
                raise SystemExit(f"warm-up request answered {warm.status_code}: {warm.text[:500]}")


def run_phase(base: str, server_pid: int, args: argparse.Namespace, phase: int, rate: float | None) -> dict:
    """The clients for `args.seconds`, saturating (rate None) or together at `rate` events/s."""
    interval = args.clients * args.batch / rate if rate else 0.0
    with ProcessPoolExecutor(max_workers=args.clients) as pool:
        start_at = time.time() + 2.0  # every client process started and connected by then
        # client numbers differ between phases (every request's event_ids are new); paced clients
        # take turns (client c starts c/clients of an interval later) rather than post at once
        futures = [
            pool.submit(
                run_client,
                base,
                phase * 100 + c,
                args.batch,
                start_at + c * interval / args.clients,
                args.seconds,
                interval,
            )
            for c in range(args.clients)
        ]
        time.sleep(max(start_at - time.time(), 0))
        cpu_before, wall_before = cpu_seconds(server_pid), time.perf_counter()
        results = [f.result() for f in futures]
        cpu_used, wall = cpu_seconds(server_pid) - cpu_before, time.perf_counter() - wall_before
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, int] = {}
    for r in results:
        for status, n in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    accepted = sum(r["accepted"] for r in results)
    return {
        "offered_events_per_s": rate,
        "requests": len(latencies),
        "events_accepted": accepted,
        "events_per_s": round(accepted / args.seconds),
        "requests_per_s": round(len(latencies) / args.seconds, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2),
        },
        "errors": sum(n for status, n in statuses.items() if status != "202"),
        "statuses": statuses,
        "server_cpu_cores": round(cpu_used / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4, help="client processes, one connection each")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s of the paced phase (the target)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with embedded_stack("eventhouse-collector-bench-") as env, tempfile.TemporaryDirectory() as logs:
        log_path = Path(logs) / "serve.log"
        with running_server_process(env, free_port(), log_path) as (base, server):
            warm_up(base, args.batch)
            saturated = run_phase(base, server.pid, args, 1, None)
            paced = run_phase(base, server.pid, args, 2, args.rate)
        server_log = log_path.read_text(errors="replace")

    report = {
        "clients": args.clients,
        "batch_events": args.batch,
        "seconds_per_phase": args.seconds,
        "machine_cpus": os.cpu_count(),
        "saturated": saturated,
        "paced": paced,
    }
    if saturated["errors"] or paced["errors"]:
        report["server_log_tail"] = server_log[-2000:]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
