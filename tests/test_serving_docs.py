"""Swagger UI and ReDoc work offline: the pages name no external URL and their assets load from the app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgerun.config import Settings
from edgerun.serving import ServeConfig, create_app

from .camera_helpers import Chromium, Page, wait_for
from .serving_helpers import ServerThread

URL_ATTRIBUTE = re.compile(r"""(?:src|href|url)\s*[=:(]\s*['"]([^'"]+)['"]""")


@pytest.fixture(scope="module")
def docs_server() -> Iterator[ServerThread]:
    with ServerThread(create_app(ServeConfig(settings=Settings(), models=()))) as server:
        yield server


@pytest.mark.parametrize(("page", "assets"), [
    ("/docs", {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/openapi.json"}),
    ("/redoc", {"/docs/static/redoc.standalone.js", "/openapi.json"}),
])
def test_docs_page_names_no_external_url_and_its_assets_load(docs_server: ServerThread, page: str,
                                                             assets: set[str]) -> None:
    with docs_server.client() as http:
        html = http.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?://", html.text), re.findall(r"https?://[^\s'\"]+", html.text)
        referenced = set(URL_ATTRIBUTE.findall(html.text))
        assert assets <= referenced, referenced
        for url in referenced:
            response = http.get(url)
            assert response.status_code == 200 and len(response.content) > 1000, url
        css = http.get("/docs/static/swagger-ui.css")
        assert css.headers["content-type"].startswith("text/css")
        assert "javascript" in http.get("/docs/static/swagger-ui-bundle.js").headers["content-type"]


def test_streams_are_documented_with_their_error_statuses(docs_server: ServerThread) -> None:
    with docs_server.client() as http:
        paths = http.get("/openapi.json").json()["paths"]
    assert {"400", "404", "429", "403", "415"} <= set(paths["/v1/streams"]["post"]["responses"])
    assert "404" in paths["/v1/streams/{stream_id}"]["delete"]["responses"]
    assert "404" in paths["/v1/streams/{stream_id}/mjpeg"]["get"]["responses"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/streams", "GET, POST"), ("POST", "/v1/streams/s1", "DELETE, GET"),
    ("DELETE", "/v2/health/live", "GET"), ("GET", "/v2/models/m/infer", "POST"),
])
def test_405_answers_name_every_allowed_method(docs_server: ServerThread, method: str, path: str,
                                               allowed: str) -> None:
    with docs_server.client() as http:
        response = http.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    assert allowed in response.json()["error"]


@pytest.mark.parametrize(("page_path", "rendered"), [
    ("/docs", "document.querySelectorAll('.opblock').length"),
    ("/redoc", "document.querySelectorAll('[data-section-id^=\"operation/\"]').length"),
])
def test_docs_pages_render_in_a_browser_from_the_server_alone(docs_server: ServerThread, tmp_path: Path,
                                                              page_path: str, rendered: str) -> None:
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        page = Page(browser)
        page.send("Network.enable")
        page.send("Network.setBlockedURLs", {"urls": ["https://*"]})  # every CDN is https: as offline
        page.send("Page.navigate", {"url": f"{docs_server.url}{page_path}"})
        operations = wait_for(lambda: page.evaluate(rendered) >= 20, 30, f"{page_path} rendered")
        assert operations and not page.errors(), page.errors()
        # what the page needs (document, scripts, styles, fonts, the schema) came from the server;
        # ReDoc's decorative "by Redocly" logo image is the one outside request, hidden when it fails
        needed = {e["params"]["request"]["url"] for e in list(browser.events)
                  if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == page.session
                  and e["params"].get("type") != "Image"}
        foreign = sorted(url for url in needed if not url.startswith((docs_server.url, "data:", "blob:")))
        assert needed and not foreign, foreign
    finally:
        browser.close()
