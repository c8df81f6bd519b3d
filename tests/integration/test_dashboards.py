"""The dashboards as a person opens them: headless Debian Chromium (Playwright with executable_path)
loads each page from `eventhouse serve` on the expected-output case's warehouse, waits for every
panel, and checks that each chart drew something, or is empty because its endpoint has no rows,
and that the console stayed free of errors. Screenshots go to the test's directory;
`make screenshot` writes the README's from the demo with the same checks (docs/tools/)."""

from __future__ import annotations

import shutil

import httpx
import pytest

from docs.tools.screenshot_dashboards import check_pages
from serving.dashboards import PAGES

pytestmark = pytest.mark.integration

# panels the case's data leaves empty, and why (each is also checked to be empty at its endpoint)
EMPTY_IN_THE_CASE = {
    ("pipeline", "dead_letters"): "the case's odd events are all valid envelopes: nothing is dead-lettered",
    ("pipeline", "alerts"): "the case never runs the alert publisher",
}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium: make test installs it")
def test_every_page_draws_its_charts_without_console_errors(case_api, tmp_path):
    reports = check_pages(case_api, tmp_path)
    assert [r.slug for r in reports] == [p.slug for p in PAGES]
    with httpx.Client(base_url=case_api) as api:
        for report, spec in zip(reports, PAGES, strict=True):
            assert report.console_errors == [], (report.slug, report.console_errors)
            assert set(report.panels) == {p.id for p in spec.panels}, report.slug
            for panel in spec.panels:
                seen = report.panels[panel.id]
                where = (report.slug, panel.id)
                if where in EMPTY_IN_THE_CASE:
                    assert seen["status"] == "empty", where
                    answer = api.get(seen["path"])
                    assert answer.status_code == 200 and answer.json() == [], where
                    continue
                assert seen["status"] == "drawn" and seen["points"] > 0, (where, seen)
                if panel.kind in {"line", "bar", "hbar", "stacked", "doughnut"}:
                    # the canvas has pixels painted: the chart really drew
                    assert report.painted[panel.id], (where, report.painted)
            assert report.screenshot is not None and report.screenshot.stat().st_size > 10_000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium: make test installs it")
def test_the_date_range_filter_redraws_the_range(case_api):
    """A person picks a range and clicks Apply: the range panels redraw with that range's days only."""
    from playwright.sync_api import sync_playwright

    from docs.tools.chromium import CHROMIUM_FLAGS, find_chromium

    with httpx.Client(base_url=case_api) as api:
        days = sorted(r["metric_date"] for r in api.get("/metrics/daily", params={"limit": 1000}).json())
    assert len(days) >= 3
    start, end = days[1], days[-2]
    inside = [d for d in days if start <= d <= end]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(f"{case_api}/dashboards/clickstream")
            page.wait_for_function("() => window.eventhouse && window.eventhouse.refreshes >= 1")
            page.fill("input[name=start]", start)
            page.fill("input[name=end]", end)
            page.click("#range button")
            page.wait_for_function("() => window.eventhouse.refreshes >= 2 && window.eventhouse.done")
            daily = page.evaluate("() => window.eventhouse.panels.daily")
            assert f"start_date={start}" in daily["path"] and f"end_date={end}" in daily["path"]
            # two series (clicks, purchases), one point per day of the range
            assert daily["points"] == 2 * len(inside)
            assert page.url.endswith(f"?start_date={start}&end_date={end}")
            # the page refreshes itself on the configured period
            config = page.evaluate("() => JSON.parse(document.getElementById('page-config').textContent)")
            assert config["refresh_seconds"] == 30
        finally:
            browser.close()
