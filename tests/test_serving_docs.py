"""Swagger UI and ReDoc work offline: the pages name no external URL and their assets load from the app."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from edgerun.config import Settings
from edgerun.serving import ServeConfig, create_app

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
