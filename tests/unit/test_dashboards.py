"""The dashboards' declarations: each page's exposure names the marts its panels read, and every
panel reads an endpoint the API has."""

from __future__ import annotations

import re

import yaml

from serving.app import create_app
from serving.dashboards import PAGES
from settings import REPO_ROOT, ServeSettings, Settings

EXPOSURES = REPO_ROOT / "models" / "_dashboards__exposures.yml"


def test_each_page_is_an_exposure_of_the_marts_it_reads():
    exposures = {e["name"]: e for e in yaml.safe_load(EXPOSURES.read_text())["exposures"]}
    assert set(exposures) == {f"dashboard_{p.slug}" for p in PAGES}
    for page in PAGES:
        depends = exposures[f"dashboard_{page.slug}"]["depends_on"]
        refs = {m.group(1) for d in depends if (m := re.fullmatch(r"ref\('(\w+)'\)", d))}
        sources = {m.group(1) for d in depends if (m := re.fullmatch(r"source\('raw', '(\w+)'\)", d))}
        assert (refs, sources) == (set(page.marts), set(page.sources)), page.slug
        assert exposures[f"dashboard_{page.slug}"]["url"].endswith(f"/dashboards/{page.slug}")


def _route_pattern(path: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


def test_every_panel_reads_an_endpoint_of_the_api():
    app = create_app(Settings(), ServeSettings())
    paths = [route["path"] for route in [{"path": p} for p in app.openapi()["paths"]]]
    patterns = [_route_pattern(p) for p in paths]
    for page in PAGES:
        for panel in page.panels:
            path = panel.endpoint.split("?")[0].replace("{day}", "2014-04-01")
            assert any(p.match(path) for p in patterns), (page.slug, panel.id, path)
        if page.days[0]:
            assert any(p.match(page.days[0].split("?")[0]) for p in patterns), page.slug


def test_the_marts_a_page_names_exist():
    models = {p.stem for p in (REPO_ROOT / "models").rglob("*.sql")}
    for page in PAGES:
        assert set(page.marts) <= models, (page.slug, set(page.marts) - models)
