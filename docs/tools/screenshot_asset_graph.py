"""Screenshot the Dagster UI's global asset lineage (docs/img/asset-graph.png) with headless Chromium.

    python -m docs.tools.screenshot_asset_graph [--out docs/img/asset-graph.png] [--expand kafka ingestion]

(`make screenshot` installs Debian's chromium first when /usr/bin/chromium is missing.) Starts
`dagster-webserver -m orchestration.definitions` on a free port with the demo's DAGSTER_HOME
($EVENTHOUSE_HOME/dagster: after `make demo` the nodes show the demo's materializations), opens
/asset-groups (the global asset graph, left to right) with the `--expand` groups open (by default
the Kafka topics and the raw tables, every other group as one tile: 73 assets opened at once make a
graph several screens tall), waits until the graph has rendered (the expected names are on the page,
nothing is loading and the page has stopped changing), saves the PNG over Chromium's DevTools
protocol and stops both. The embedded stack need not run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from docs.tools.chromium import CHROMIUM_FLAGS, find_chromium
from orchestration.instance import Webserver, dagster_home, running_webserver
from orchestration.project import prepare_dbt_project
from settings import REPO_ROOT
from stack.processes import free_port

# Before the UI's scripts run: no "Join the Dagster community" dialog, left-to-right layout, and asset
# nodes that show their status and kinds (Kafka, ClickHouse, dbt) but not every facet (the UI's
# useStateWithStorage keys, JSON values).
PAGE_SETUP_JS = """
localStorage.setItem("communityNux", JSON.stringify("1"));
localStorage.setItem("asset-graph-direction", JSON.stringify("horizontal"));
localStorage.setItem("asset-node-facets", JSON.stringify(["status", "kind-tag"]));
"""
# In the page: the asset nodes drawn in the graph's SVG, and whether a spinner or "Loading" shows.
PAGE_STATE_JS = """(() => {
  const text = document.body ? document.body.innerText : "";
  return JSON.stringify({
    nodes: document.querySelectorAll("svg foreignObject").length,
    loading: /Loading assets|Loading\\u2026/.test(text)
      || document.querySelectorAll("[class*='spinner' i], [class*='Spinner']").length,
    text: text,
  });
})()"""


class DevTools:
    """Just enough of the Chrome DevTools protocol: send a command, wait for its answer."""

    def __init__(self, socket: ClientConnection):
        self.socket = socket
        self.ids = itertools.count(1)

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> dict:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


def _debugger_websocket(process: subprocess.Popen, port: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                pages = [target for target in json.loads(response.read()) if target.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@contextlib.contextmanager
def headless_chromium(width: int, height: int) -> Iterator[DevTools]:
    """A headless Chromium with a fresh profile; yields a DevTools connection to its one page."""
    profile = Path(tempfile.mkdtemp(prefix="eventhouse-chromium-"))
    port = free_port()
    command = [
        find_chromium(),
        "--headless",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with connect(_debugger_websocket(process, port), max_size=None, open_timeout=20) as socket:
            devtools = DevTools(socket)
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            devtools.call("Emulation.setDeviceMetricsOverride", **metrics)
            yield devtools
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


def graph_url(server: Webserver, expand: list[str]) -> str:
    """/asset-groups, the global asset graph, with these groups open (`expanded=global@global:<group>,...`).

    `expand == ["all"]` opens every group.
    """
    groups = sorted({node["groupName"] for node in server.graphql("{ assetNodes { groupName } }")["assetNodes"]})
    unknown = set(expand) - set(groups) - {"all"}
    if unknown:
        raise SystemExit(f"no asset group {sorted(unknown)}; the groups are {groups}")
    opened = groups if "all" in expand else expand
    return f"{server.url}/asset-groups?" + urllib.parse.urlencode(
        {"expanded": ",".join(f"global@global:{group}" for group in opened)}
    )


def wait_rendered(devtools: DevTools, must_show: list[str], timeout: float, settle: float) -> dict:
    """Until the graph's nodes are drawn, `must_show` appear, nothing loads and the page is still for `settle` s."""
    deadline = time.monotonic() + timeout
    last_digest, still_since, state = None, time.monotonic(), {}
    while time.monotonic() < deadline:
        state = json.loads(devtools.evaluate(PAGE_STATE_JS) or "{}")
        text = state.get("text", "")
        if "Unexpected GraphQL error" in text:
            raise GraphQLErrorShown(text[:300])
        ready = state.get("nodes", 0) > 0 and not state.get("loading") and all(name in text for name in must_show)
        digest = hashlib.sha1(f"{state.get('nodes')}|{text}".encode()).hexdigest()
        if digest != last_digest:
            last_digest, still_since = digest, time.monotonic()
        elif ready and time.monotonic() - still_since >= settle:
            return state
        time.sleep(0.25)
    raise RuntimeError(
        f"the asset graph did not render within {timeout:.0f} s: {state.get('nodes')} SVG elements, "
        f"loading={state.get('loading')}, missing {[n for n in must_show if n not in state.get('text', '')]}, "
        f"page text starts {state.get('text', '')[:300]!r}"
    )


class GraphQLErrorShown(RuntimeError):
    """The page shows "Unexpected GraphQL error" (seen once on a busy machine while the UI's queries raced)."""


def screenshot(out: Path, width: int, height: int, home: Path, expand: list[str], timeout: float) -> None:
    prepare_dbt_project()  # dagster-webserver (not dagster dev) reads the prepared manifest
    with (
        tempfile.TemporaryDirectory(prefix="eventhouse-ui-") as scratch,
        running_webserver(home, timeout=timeout, log_path=Path(scratch) / "webserver.log") as server,
    ):
        url = graph_url(server, expand)
        print(f"dagster-webserver on {server.url} (DAGSTER_HOME={home}); shooting {url}", flush=True)
        must_show = ["Global asset lineage", "staging", "marts_game"]
        if "kafka" in expand or "all" in expand:
            must_show.append("game.events")
        if "ingestion" in expand or "all" in expand:
            must_show.append("raw_game_events")
        with headless_chromium(width, height) as devtools:
            devtools.call("Page.enable")
            devtools.call("Page.addScriptToEvaluateOnNewDocument", source=PAGE_SETUP_JS)
            for attempt in range(3):
                devtools.call("Page.navigate", url=url)
                try:
                    state = wait_rendered(devtools, must_show, timeout, settle=3.0)
                    break
                except GraphQLErrorShown:
                    if attempt == 2:
                        raise RuntimeError(
                            f"the UI keeps showing 'Unexpected GraphQL error'; webserver log:\n{server.log()[-4000:]}"
                        ) from None
            shot = devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"wrote {out} ({width}x{height}, {out.stat().st_size // 1024} KiB, {state['nodes']} graph elements drawn)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "img" / "asset-graph.png")
    parser.add_argument("--width", type=int, default=1800)
    parser.add_argument("--height", type=int, default=1100)
    parser.add_argument(
        "--expand",
        nargs="*",
        default=["kafka", "ingestion"],
        help="asset groups to open (default: %(default)s; 'all' opens every group; none: group tiles only)",
    )
    parser.add_argument(
        "--dagster-home", type=Path, default=None, help="default: $EVENTHOUSE_HOME/dagster (the demo's instance)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the server and for the page")
    args = parser.parse_args(argv)
    home = args.dagster_home.resolve() if args.dagster_home else dagster_home()
    screenshot(args.out, args.width, args.height, home, args.expand, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
