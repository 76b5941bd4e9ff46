"""The web page in headless Chromium: devices and backends listed, an image uploaded through the page with
the result shown, a live stream with overlays; a screenshot saved under test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from .camera_helpers import ARTIFACTS, Page, wait_for
from .helpers import SAMPLES
from .serving_helpers import ServerThread


def _upload(page: Page, model: str, image: Path) -> str:
    page.evaluate(f"document.getElementById('model').value = {model!r}")
    page.set_files("#file", image)
    page.click("#run")
    done = wait_for(lambda: page.evaluate("document.getElementById('result').dataset.done || ''"), 30,
                    f"the {model} result on the page")
    text = str(page.evaluate("document.getElementById('result').innerText"))
    assert done == "1", text
    return text


def test_page_shows_devices_runs_an_upload_and_plays_a_stream(page: Page, camera_server: ServerThread,
                                                              clip: Path) -> None:
    with camera_server.client() as http:
        body = {"source": str(clip), "options": {"loop": True}}
        stream_id = http.post("/v1/streams", json=body).json()["id"]
    try:
        page.send("Page.navigate", {"url": f"{camera_server.url}/"})
        wait_for(lambda: page.evaluate("document.getElementById('model')?.options.length || 0") == 2, 30,
                 "the page to list the served models")
        backends = str(page.evaluate("document.getElementById('backends').innerText"))
        assert "onnxruntime\tavailable" in backends and "tensorrt\tunavailable" in backends
        assert "x86_64" in str(page.evaluate("document.getElementById('platform').innerText"))

        classes = _upload(page, "mobilenet_v2", SAMPLES / "chelsea.png")
        assert classes.startswith("Egyptian cat") and "mobilenet_v2 on onnxruntime" in classes
        faces = _upload(page, "blazeface", SAMPLES / "astronaut.png")
        assert "1 detection in 512×512" in faces and "face 0.9" in faces
        green = page.evaluate("""(() => { const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] < 90 && d[i + 1] > 190 && d[i + 2] < 90) n++;
            return n; })()""")
        assert green > 200, "the face box is drawn on the canvas"

        wait_for(lambda: page.evaluate(
            f"document.querySelector('#stream-{stream_id} img')?.naturalWidth || 0") == 256, 30,
            "a live MJPEG frame in the stream card")
        stats = f"document.querySelector('#stream-{stream_id} .stats').innerText"
        counted = re.compile(r"[1-9][0-9.]* fps processed .* [1-9][0-9]* frames")
        wait_for(lambda: counted.match(str(page.evaluate(stats))), 10, "stream FPS and frame counts")
        wait_for(lambda: page.evaluate("document.getElementById('health').textContent") == "ok", 10, "health")
        shot = page.screenshot(ARTIFACTS / "webpage.png")
        assert shot.stat().st_size > 20_000
        assert page.errors() == []
    finally:
        with httpx.Client(base_url=camera_server.url, timeout=30) as http:
            http.delete(f"/v1/streams/{stream_id}")


def test_page_reports_api_errors_in_place(page: Page, camera_server: ServerThread) -> None:
    page.send("Page.navigate", {"url": f"{camera_server.url}/"})
    models = "document.getElementById('model')?.options.length || 0"
    wait_for(lambda: page.evaluate(models) == 2, 30, "models")
    page.set_files("#file", SAMPLES / "ATTRIBUTION.md")
    page.click("#run")
    wait_for(lambda: page.evaluate("document.getElementById('result').dataset.done || ''") == "error", 30,
             "the error shown")
    assert "not a decodable image" in str(page.evaluate("document.getElementById('result').innerText"))
    page.evaluate("document.getElementById('source').value = 'gopher://nowhere'")
    page.click("#start")
    wait_for(lambda: "unknown scheme" in str(page.evaluate(
        "document.getElementById('stream-error').textContent")), 10, "the stream error shown")
