"""Streams in the service: file, RTSP (publisher killed and restarted) and HTTP MJPEG sources; the MJPEG
and SSE feeds parsed; metrics and readiness; bad input -> clear 4xx; no threads left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgerun.camera.capture import cv2_module
from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app

from .camera_helpers import (
    MAX_STREAMS,
    Publisher,
    RtspRelay,
    lasting_threads,
    read_mjpeg,
    read_sse,
    stream_threads,
    wait_for,
)
from .helpers import REPO
from .serving_helpers import ServerThread


def metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def start(http: httpx.Client, source: str, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/streams", json={"source": source, **body})
    assert response.status_code == 201, response.text
    return response.json()


def snapshot(http: httpx.Client, stream_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/streams/{stream_id}")
    assert response.status_code == 200, response.text
    return response.json()


def stop(http: httpx.Client, stream_id: str) -> None:
    assert http.delete(f"/v1/streams/{stream_id}").json() == {"id": stream_id, "state": "stopped"}
    assert not stream_threads(stream_id), stream_threads(stream_id)
    assert http.get(f"/v1/streams/{stream_id}").status_code == 404


@pytest.fixture
def http(camera_server: ServerThread) -> Iterator[httpx.Client]:
    with camera_server.client() as client:
        yield client
        for stream in client.get("/v1/streams").json()["streams"]:  # a failed test leaves none behind
            client.delete(f"/v1/streams/{stream['id']}")


def test_file_stream_feeds_results_mjpeg_sse_and_metrics(http: httpx.Client, clip: Path) -> None:
    created = start(http, str(clip), options={"loop": True})
    stream_id = created["id"]
    assert created["model"] == "blazeface" and created["kind"] == "file" and created["state"] == "running"

    events = read_sse(http, f"/v1/streams/{stream_id}/events", 4)
    assert [int(e["id"]) for e in events] == [e["data"]["seq"] for e in events]
    assert [e["data"]["seq"] for e in events] == sorted({e["data"]["seq"] for e in events})
    for event in events:
        assert event["data"]["stream"] == stream_id and len(event["data"]["detections"]) == 1
        assert event["data"]["detections"][0]["label"] == "face"
        assert event["data"]["image_size"] == [256, 256] and event["data"]["timings_ms"]["infer"] > 0

    content_type, parts = read_mjpeg(http, f"/v1/streams/{stream_id}/mjpeg", 3)
    assert content_type == "multipart/x-mixed-replace; boundary=edgerunframe"
    cv2 = cv2_module()
    for headers, jpeg in parts:
        assert headers["content-type"] == "image/jpeg" and int(headers["content-length"]) == len(jpeg)
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert frame is not None and frame.shape == (256, 256, 3)
    sequences = [int(h["x-frame-sequence"]) for h, _ in parts]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3

    state = snapshot(http, stream_id)
    assert state["state"] == "running" and state["fps"]["processed"] > 0 and state["frames"]["processed"] >= 4
    assert {"capture", "preprocess", "infer", "postprocess", "latency"} <= set(state["stages_ms"])
    assert state["last_result"]["detections"][0]["score"] > 0.5
    text = http.get("/metrics").text
    assert metric(text, "edgerun_stream_up", stream=stream_id, model="blazeface", kind="file") == 1
    assert metric(text, "edgerun_stream_frames_total", stream=stream_id, outcome="processed") >= 4
    assert metric(text, "edgerun_stream_stage_milliseconds", stream=stream_id, stage="infer") > 0
    listed = http.get("/v1/streams").json()
    assert listed["max_streams"] == MAX_STREAMS and [s["id"] for s in listed["streams"]] == [stream_id]
    stop(http, stream_id)
    assert metric(http.get("/metrics").text, "edgerun_stream_up", stream=stream_id) == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_bad_stream_requests_get_clear_4xx(http: httpx.Client, clip: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n" * 100)
    cases = [
        ({"source": f"rtsp://127.0.0.1:{_closed_port()}/cam", "options": {"open_timeout_s": 2}}, 422,
         "cannot open rtsp://127.0.0.1"),
        ({"source": str(fake)}, 422, "not a video"),
        ({"source": str(tmp_path / "missing.mp4")}, 422, "no such video file"),
        ({"source": str(clip), "model": "no_such_model"}, 404, "no_such_model"),
        ({"source": "gopher://x"}, 400, "unknown scheme"),
        ({"source": str(clip), "options": {"fps": 3}}, 400, "options.fps"),
        ({"source": str(clip), "options": {"max_fps": -1}}, 400, "max_fps"),
        ({"model": "blazeface"}, 400, "source"),
    ]
    for body, status, message in cases:
        response = http.post("/v1/streams", json=body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], response.text
    assert http.get("/v1/streams/s999").status_code == 404
    assert http.get("/v1/streams").json()["streams"] == []


def test_stream_limit_is_429_and_disturbs_nothing(http: httpx.Client, clip: Path) -> None:
    ids = [start(http, str(clip), options={"loop": True, "max_fps": 5})["id"] for _ in range(MAX_STREAMS)]
    response = http.post("/v1/streams", json={"source": str(clip)})
    assert response.status_code == 429 and "stream limit reached" in response.json()["error"]
    first = snapshot(http, ids[0])["frames"]["processed"]
    wait_for(lambda: snapshot(http, ids[0])["frames"]["processed"] > first, 10, "the first stream to go on")
    assert http.get("/v2/health/ready").status_code == 200
    for stream_id in ids:
        stop(http, stream_id)


def test_rtsp_stream_reconnects_when_the_publisher_comes_back(http: httpx.Client, clip: Path) -> None:
    relay = RtspRelay()
    publisher = Publisher(clip, relay.url)
    threads_before = lasting_threads()
    try:
        publisher.start(relay)
        stream_id = start(http, relay.url, options={"read_timeout_s": 2, "open_timeout_s": 3})["id"]
        wait_for(lambda: snapshot(http, stream_id)["frames"]["processed"] >= 5, 20, "frames from RTSP")

        publisher.kill()
        wait_for(lambda: snapshot(http, stream_id)["state"] == "reconnecting", 10, "reconnecting state")
        health = http.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert any(stream_id in problem for problem in health.json()["problems"])
        assert http.get("/v2/health/ready").status_code == 200  # a dead camera is not a dead server
        assert metric(http.get("/metrics").text, "edgerun_stream_up", stream=stream_id) == 0
        processed = snapshot(http, stream_id)["frames"]["processed"]

        publisher.start(relay)
        wait_for(lambda: snapshot(http, stream_id)["frames"]["processed"] >= processed + 5, 30,
                 "frames after the publisher restarted")
        state = snapshot(http, stream_id)
        assert state["state"] == "running" and state["reconnects"] >= 1 and state["error"] == ""
        assert http.get("/v1/health").json()["status"] == "ok"
        stop(http, stream_id)
    finally:
        publisher.kill()
        relay.close()
    assert lasting_threads() <= threads_before  # no capture, inference, relay or reader thread left


def test_http_mjpeg_source_reads_the_service_s_own_feed(http: httpx.Client, camera_server: ServerThread,
                                                        clip: Path) -> None:
    """FFmpeg (through OpenCV) reads the annotated MJPEG feed of one stream as the source of another."""
    first = start(http, str(clip), options={"loop": True})["id"]
    second = start(http, f"{camera_server.url}/v1/streams/{first}/mjpeg", model="mobilenet_v2")["id"]
    wait_for(lambda: snapshot(http, second)["frames"]["processed"] >= 3, 20, "frames via HTTP MJPEG")
    state = snapshot(http, second)
    assert state["kind"] == "http" and len(state["last_result"]["classes"]) == 5
    stop(http, second)
    stop(http, first)


def test_configured_streams_start_with_the_service(clip: Path) -> None:
    config = ServeConfig(settings=Settings(), models=(ModelConfig("blazeface", backend="onnxruntime",
                                                                  threads=1),),
                         streams=({"source": str(clip), "options": {"loop": True, "max_fps": 5}},))
    with ServerThread(create_app(config)) as server, server.client() as client:
        server.wait_ready()
        wait_for(lambda: client.get("/v1/streams").json()["streams"], 10, "the configured stream")
        stream = client.get("/v1/streams").json()["streams"][0]
        assert stream["source"] == str(clip)
        wait_for(lambda: snapshot(client, stream["id"])["frames"]["processed"] >= 2, 10, "frames")
    assert not stream_threads(), stream_threads()  # the app's shutdown stopped the stream


def _watch(url: str, received: dict[str, int]) -> None:
    """Read a feed until the server ends it, counting bytes."""
    with httpx.Client(timeout=30) as client, client.stream("GET", url) as response:
        received[url] = 0
        for chunk in response.iter_raw():
            received[url] += len(chunk)


def test_run_serve_shows_the_stream_and_sigterm_ends_open_feeds(clip: Path) -> None:
    """`edgerun run --serve`: the stream runs in the service; SIGTERM with an MJPEG and an SSE viewer
    connected stops promptly with exit status 0 (the feeds end instead of holding the shutdown)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGERUN_")}
    process = subprocess.Popen([sys.executable, "-m", "edgerun", "run", "--source", str(clip), "--loop",
                                "--serve", "--port", "0", "--threads", "1"], cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        found = wait_for(lambda: re.search(r"running on (http://127\.0\.0\.1:\d+)", "".join(log)), 60,
                         "the server to start")
        base = found.group(1)
        with httpx.Client(base_url=base, timeout=30) as http:
            wait_for(lambda: http.get("/v1/streams/s1").json().get("frames", {}).get("processed", 0) >= 3,
                     30, "frames from the stream started with the service")
        received: dict[str, int] = {}
        watchers = [threading.Thread(target=_watch, args=(f"{base}/v1/streams/s1/{feed}", received))
                    for feed in ("mjpeg", "events")]
        for watcher in watchers:
            watcher.start()
        wait_for(lambda: len(received) == 2 and all(received.values()), 20, "both feeds flowing")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, "".join(log)
        assert time.monotonic() - started < 10
        for watcher in watchers:
            watcher.join(timeout=10)
            assert not watcher.is_alive()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
    assert "stream s1 stopped" in "".join(log)
