"""Who may call the service: browser-borne requests (foreign Origin, form posts) refused, UTF-8 API keys,
health open to orchestrators, /metrics behind the key only when configured."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from edgerun.config import Settings
from edgerun.serving import ServeConfig, create_app
from edgerun.serving.config import AuthConfig

from .serving_helpers import ServerThread

UTF8_KEY = "clé-secrète-🔑-ключ"


def _server(auth: AuthConfig) -> ServerThread:
    """A server with no models (the middleware answers before any model is involved)."""
    return ServerThread(create_app(ServeConfig(settings=Settings(), models=(), auth=auth)))


@pytest.fixture(scope="module")
def open_server() -> Iterator[ServerThread]:
    with _server(AuthConfig(allowed_origins=("https://dashboard.example:8443",))) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerThread]:
    with _server(AuthConfig(api_key=UTF8_KEY, metrics_require_key=True)) as server:
        server.wait_ready()
        yield server


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain",
                                          "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path", ["/v2/repository/models/blazeface/unload", "/v1/streams"])
def test_without_a_key_a_form_post_cannot_change_state(open_server: ServerThread, path: str,
                                                       content_type: str) -> None:
    with open_server.client() as http:
        response = http.post(path, content=b"source=rtsp://x", headers={"Content-Type": content_type})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_json_and_clients_without_a_content_type_still_work(open_server: ServerThread) -> None:
    with open_server.client() as http:
        # past the middleware: the route itself answers (no such model / bad body)
        unload = http.post("/v2/repository/models/nothing/unload", json={})
        assert unload.status_code == 404, unload.text
        bare = http.post("/v2/repository/models/nothing/unload", content=b'{"parameters": {}}')
        assert bare.status_code == 404, bare.text  # tritonclient sends no Content-Type
        stream = http.post("/v1/streams", json={"source": "file:///nonexistent.mp4", "model": "nothing"})
        assert stream.status_code == 404, stream.text
        # inference is not a state change: a multipart image upload is still accepted
        assert http.post("/v1/models/nothing/predict", files={"file": b"x"}).status_code == 404


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
def test_a_foreign_origin_cannot_post(open_server: ServerThread, origin: str) -> None:
    with open_server.client() as http:
        response = http.post("/v1/streams", json={"source": "0"}, headers={"Origin": origin})
        assert response.status_code == 403 and "auth.allowed_origins" in response.json()["error"]
        assert http.get("/v2/health/ready", headers={"Origin": origin}).status_code == 200  # reads pass


def test_the_servers_own_origin_and_allowed_ones_can_post(open_server: ServerThread) -> None:
    body = {"source": "file:///nonexistent.mp4", "model": "nothing"}
    with open_server.client() as http:
        for origin in (open_server.url, "https://dashboard.example:8443"):
            response = http.post("/v1/streams", json=body, headers={"Origin": origin})
            assert response.status_code == 404, (origin, response.text)  # past the check: unknown model


def test_a_utf8_api_key_is_accepted_byte_for_byte(keyed_server: ServerThread) -> None:
    raw = UTF8_KEY.encode()
    with httpx.Client(base_url=keyed_server.url, timeout=30) as http:
        assert http.get("/v2", headers={"X-API-Key": raw}).status_code == 200
        assert http.get("/v2", headers={"Authorization": b"Bearer " + raw}).status_code == 200
        assert http.get("/v2", headers={"X-API-Key": raw[:-1]}).status_code == 401
        # the web page's form: browsers send Latin-1 header values only, so it percent-encodes
        assert http.get("/v2", headers={"X-API-Key": quote(UTF8_KEY)}).status_code == 200
        assert http.get("/v2", headers={"X-API-Key": quote(UTF8_KEY[:-1])}).status_code == 401
        assert http.get("/v2").status_code == 401


def test_health_is_open_and_metrics_follow_the_setting(keyed_server: ServerThread,
                                                       open_server: ServerThread) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=30) as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2/models/nothing/ready").status_code == 404  # answered, not 401
        assert http.get("/metrics").status_code == 401                  # metrics_require_key: true
        assert http.get("/metrics", headers={"X-API-Key": UTF8_KEY.encode()}).status_code == 200
    assert httpx.get(f"{open_server.url}/metrics").status_code == 200


def test_api_keys_are_any_utf8_of_eight_characters_or_more() -> None:
    assert AuthConfig(api_key="ключ-ключ").api_key == "ключ-ключ"
    with pytest.raises(ValueError, match="at least 8 characters"):
        AuthConfig(api_key="short")


def test_the_web_page_sends_a_utf8_key(keyed_server: ServerThread, tmp_path: Path) -> None:
    from .camera_helpers import Chromium, Page, wait_for

    browser = Chromium(tmp_path / "chromium-profile")
    try:
        page = Page(browser)
        page.send("Page.navigate", {"url": f"{keyed_server.url}/"})
        wait_for(lambda: page.evaluate("typeof api === 'function'"), 20, "the page's script")
        call = "(async () => (await api('/v2')).status)()"
        assert page.evaluate(call) == 401
        page.evaluate(f"document.getElementById('apikey').value = {json.dumps(UTF8_KEY)}")
        assert page.evaluate(call) == 200
    finally:
        browser.close()
