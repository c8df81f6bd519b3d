"""Open each dashboard page in headless Chromium, check what it drew, and save a screenshot.

    python -m docs.tools.screenshot_dashboards [--url http://127.0.0.1:8000 | --serve] [--out docs/img]

(`make screenshot` installs Debian's chromium when /usr/bin/chromium is missing and runs this with
--serve: `eventhouse serve` on a free port against the demo's stack, docs/img/dashboard-<page>.png.)
The dashboard tests (tests/integration/test_dashboards.py) call `check_pages` too.

Playwright drives Debian's Chromium (`executable_path`): its own browser download cannot run here.
For each page it waits until every panel has reported what it drew (window.eventhouse.panels, set
by serving/web/static/dashboards.js), then checks that each chart's canvas has pixels painted and
collects the console's errors and failed requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docs.tools.chromium import CHROMIUM_FLAGS, find_chromium
from serving.dashboards import PAGES
from serving.process import running_server
from settings import REPO_ROOT
from stack.processes import free_port

# In the page: how many pixels of each panel's canvas are painted (alpha > 0)
PAINTED_JS = """() => Object.fromEntries([...document.querySelectorAll("article.panel")].map((article) => {
  const canvas = article.querySelector("canvas");
  if (!canvas) return [article.id.slice(6), null];
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1;
  return [article.id.slice(6), painted];
}))"""


@dataclass
class PageReport:
    slug: str
    panels: dict[str, dict[str, Any]]  # what dashboards.js reported per panel
    painted: dict[str, int | None]  # canvas pixels painted per panel (None: not a canvas)
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def check_pages(
    base_url: str,
    out_dir: Path | None,
    query: str = "",
    credentials: tuple[str, str] | None = None,
    timeout_ms: float = 30_000,
) -> list[PageReport]:
    """Load every page (with `query`, e.g. '?start_date=...'), wait for its panels, report and shoot."""
    from playwright.sync_api import sync_playwright

    reports = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900},
                http_credentials={"username": credentials[0], "password": credentials[1]} if credentials else None,
            )
            for page_spec in PAGES:
                page = context.new_page()
                errors: list[str] = []
                page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda e, errors=errors: errors.append(f"page error: {e}"))
                page.on("requestfailed", lambda r, errors=errors: errors.append(f"request failed: {r.url}"))
                page.goto(f"{base_url}/dashboards/{page_spec.slug}{query}")
                page.wait_for_function(
                    "n => window.eventhouse && window.eventhouse.done && "
                    "Object.keys(window.eventhouse.panels).length === n",
                    arg=len(page_spec.panels),
                    timeout=timeout_ms,
                )
                panels = page.evaluate("() => window.eventhouse.panels")
                painted = page.evaluate(PAINTED_JS)
                report = PageReport(page_spec.slug, panels, painted, errors)
                if out_dir is not None:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    report.screenshot = out_dir / f"dashboard-{page_spec.slug}.png"
                    page.screenshot(path=str(report.screenshot), full_page=True)
                reports.append(report)
                page.close()
        finally:
            browser.close()
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where eventhouse serve listens")
    parser.add_argument("--serve", action="store_true", help="start eventhouse serve on a free port for the shots")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    if args.serve:
        with tempfile.TemporaryDirectory() as logs, running_server(
            os.environ, free_port(), Path(logs) / "serve.log"
        ) as base:
            return _shoot(base, args.out)
    return _shoot(args.url.rstrip("/"), args.out)


def _shoot(base: str, out: Path) -> int:
    failed = False
    for report in check_pages(base, out):
        statuses = {k: v["status"] for k, v in report.panels.items()}
        print(f"{report.slug}: {statuses} -> {report.screenshot}")
        for error in report.console_errors:
            print(f"  console: {error}")
            failed = True
        failed |= any(v["status"] == "error" for v in report.panels.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
