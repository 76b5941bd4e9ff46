"""Camera/stream test helpers: clips made by ffmpeg, an RTSP relay fed by an ffmpeg publisher, MJPEG and
SSE readers, Chromium driven over the DevTools protocol (pipe), and the server the stream tests share."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app
from edgerun.serving.config import LimitsConfig

from .helpers import REPO, SAMPLES
from .serving_helpers import ServerThread

ARTIFACTS = REPO / "test-artifacts"
CLIP_FPS = 15
STREAM_THREAD_PREFIX = "stream-"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {name} (.ci/run installs it)")
    return path


def make_clip(path: Path, seconds: float = 2.0, size: int = 256) -> Path:
    """An H.264 MP4 of the astronaut sample (one face) at CLIP_FPS, a keyframe every 5 frames."""
    subprocess.run([tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-loop", "1",
                    "-framerate", str(CLIP_FPS), "-i", str(SAMPLES / "astronaut.png"), "-t", str(seconds),
                    "-vf", f"scale={size}:{size}", "-c:v", "libx264", "-preset", "veryfast", "-g", "5",
                    "-bf", "0", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
    return path


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


POOL_THREADS = ("asyncio_", "edgerun-", "ThreadPoolExecutor-", "AnyIO worker")  # grow on demand


def lasting_threads() -> set[str]:
    """Threads that are not workers of a pool (pools start workers lazily and keep them)."""
    return {t.name for t in threading.enumerate() if not t.name.startswith(POOL_THREADS)}


def stream_threads(stream_id: str | None = None) -> list[str]:
    prefix = STREAM_THREAD_PREFIX + (f"{stream_id}-" if stream_id else "")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


# ---- RTSP: a relay that an ffmpeg publisher pushes to and players pull from ----------------------

class _Conn:
    """One RTSP connection with a write lock (RTP from the publisher thread, replies from its own)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.lock = threading.Lock()

    def send(self, data: bytes) -> bool:
        try:
            with self.lock:
                self.sock.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        for action in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.reader.close, self.sock.close):
            with contextlib.suppress(OSError):
                action()


class RtspRelay:
    """What an RTSP media server (mediamtx and the like) does, reduced to one path and TCP only:
    ffmpeg publishes with ANNOUNCE/SETUP/RECORD (`-f rtsp -rtsp_transport tcp`), players DESCRIBE/
    SETUP/PLAY with RTP interleaved on the RTSP connection, and every player is disconnected when the
    publisher goes away. (Debian's ffmpeg cannot serve RTSP to players itself: `-rtsp_flags listen`
    is an input option that accepts a publisher, not players.)"""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.sdp: bytes | None = None
        self.players: list[_Conn] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="rtsp-relay")
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            self._spawn(self._serve, _Conn(sock))

    @staticmethod
    def _request(conn: _Conn, first: bytes) -> tuple[str, dict[str, str], bytes]:
        lines = [first + conn.reader.readline()]
        while lines[-1] not in (b"\r\n", b"\n", b""):
            lines.append(conn.reader.readline())
        method = lines[0].decode().split(" ")[0]
        headers = {}
        for line in lines[1:-1]:
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = conn.reader.read(int(headers.get("content-length", "0")))
        return method, headers, body

    def _serve(self, conn: _Conn) -> None:
        publisher = False
        try:
            while True:
                first = conn.reader.read(1)
                if not first:
                    return
                if first == b"$":
                    head = conn.reader.read(3)
                    packet = conn.reader.read(int.from_bytes(head[1:3], "big"))
                    if publisher:
                        self._forward(first + head + packet)
                    continue
                method, headers, body = self._request(conn, first)
                publisher = self._answer(conn, method, headers, body) or publisher
        except (OSError, ValueError):
            pass
        finally:
            conn.close()
            if publisher:
                self._publisher_gone()

    def _answer(self, conn: _Conn, method: str, headers: dict[str, str], body: bytes) -> bool:
        """Reply to one request; True when this connection is the publisher."""
        extra, payload, status = "", b"", "200 OK"
        if method == "OPTIONS":
            extra = "Public: OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN, GET_PARAMETER\r\n"
        elif method == "ANNOUNCE":
            with self._lock:
                self.sdp = body
        elif method == "DESCRIBE":
            if self.sdp is None:
                status = "404 Not Found"
            else:
                payload = self.sdp
                extra = f"Content-Type: application/sdp\r\nContent-Base: {self.url}/\r\n"
        elif method == "SETUP":
            extra = f"Transport: {headers.get('transport', '')}\r\nSession: 12345678;timeout=60\r\n"
        elif method == "PLAY":
            extra = "Session: 12345678\r\nRange: npt=0.000-\r\n"
        reply = (f"RTSP/1.0 {status}\r\nCSeq: {headers.get('cseq', '0')}\r\n{extra}"
                 f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        conn.send(reply)
        if method == "PLAY" and status.startswith("200"):
            with self._lock:
                self.players.append(conn)
        if method == "TEARDOWN":
            raise OSError("teardown")
        return method in ("ANNOUNCE", "RECORD")

    def _forward(self, frame: bytes) -> None:
        with self._lock:
            players = list(self.players)
        for player in players:
            if not player.send(frame):
                with self._lock:
                    if player in self.players:
                        self.players.remove(player)

    def _publisher_gone(self) -> None:
        with self._lock:
            self.sdp = None
            players, self.players = self.players, []
        for player in players:
            player.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self._publisher_gone()
        for thread in self._threads:
            thread.join(timeout=5)


class Publisher:
    """Debian's ffmpeg pushing a clip (looped, in real time, stream copy) to the relay over TCP."""

    def __init__(self, clip: Path, url: str) -> None:
        self.clip, self.url = clip, url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, relay: RtspRelay) -> None:
        self.process = subprocess.Popen(
            [tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(self.clip), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: relay.sdp is not None or self.process.poll() is not None, 10, "the publisher")
        assert self.process.poll() is None, self.process.stderr.read().decode() if self.process.stderr else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)
            if self.process.stderr is not None:
                self.process.stderr.close()


# ---- reading the service's MJPEG and SSE feeds ---------------------------------------------------

def read_mjpeg(client: httpx.Client, path: str, count: int, timeout: float = 20.0
               ) -> tuple[str, list[tuple[dict[str, str], bytes]]]:
    """The first ``count`` parts of a multipart/x-mixed-replace response, parsed by python-multipart."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    parts: list[tuple[dict[str, str], bytes]] = []
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.update(headers={}, field=b"", value=b"", data=bytearray())

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": lambda d, s, e: current.update(field=current["field"] + d[s:e]),
        "on_header_value": lambda d, s, e: current.update(value=current["value"] + d[s:e]),
        "on_header_end": lambda: (current["headers"].__setitem__(current["field"].decode().lower(),
                                                                 current["value"].decode()),
                                  current.update(field=b"", value=b"")),
        "on_part_data": lambda d, s, e: current["data"].extend(d[s:e]),
        "on_part_end": lambda: parts.append((current["headers"], bytes(current["data"]))),
    }
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200, response.read().decode()
        content_type = response.headers["content-type"]
        kind, options = parse_options_header(content_type)
        parser = MultipartParser(options[b"boundary"], callbacks)
        for chunk in response.iter_raw():
            parser.write(chunk)
            if len(parts) >= count or time.monotonic() > deadline:
                break
    assert kind == b"multipart/x-mixed-replace"
    return content_type, parts[:count]


def read_sse(client: httpx.Client, path: str, count: int, kind: str = "result", timeout: float = 20.0
             ) -> list[dict[str, Any]]:
    """The first ``count`` events named ``kind`` of a text/event-stream, parsed line by line per the
    HTML spec (id/event/data fields, blank line ends an event, ':' lines are comments)."""
    events: list[dict[str, Any]] = []
    event: dict[str, Any] = {"data": []}
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "":
                if event["data"] and event.get("event", "message") == kind:
                    events.append({**event, "data": json.loads("\n".join(event["data"]))})
                event = {"data": []}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    event["data"].append(value)
                else:
                    event[field] = value
            if len(events) >= count or time.monotonic() > deadline:
                break
    return events


# ---- Chromium over the DevTools protocol (--remote-debugging-pipe: no extra client library) -----

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-pipe", "--window-size=1280,1100", "--hide-scrollbars")


def _above_4(fd: int) -> int:
    """The same pipe end at a descriptor >= 10 (the child's fds 3 and 4 are remapped onto them)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """Debian's chromium, headless, driven by DevTools protocol messages over fds 3/4."""

    def __init__(self, user_data_dir: Path) -> None:
        to_chrome_r, self._to_chrome = (_above_4(fd) for fd in os.pipe())
        self._from_chrome, from_chrome_w = (_above_4(fd) for fd in os.pipe())

        def remap() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.log = user_data_dir.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            [tool("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            preexec_fn=remap, close_fds=False, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name="chromium-reader")
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_chrome, 65536)
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 20.0) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            message_id = self._next_id
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        with self._cond:
            assert self._cond.wait_for(lambda: message_id in self._replies, timeout), f"{method}: no reply"
            reply = self._replies.pop(message_id)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_chrome)
        self._reader.join(timeout=5)
        os.close(self._from_chrome)
        self.log.close()


class Page:
    """One tab: evaluate JavaScript, click like a user, pick files, take screenshots."""

    def __init__(self, browser: Chromium, width: int = 1280, height: int = 1100) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page.enable", "Runtime.enable"):
            self.send(domain)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def node(self, selector: str) -> int:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        assert node, f"no element {selector}"
        return int(node)

    def click(self, selector: str) -> None:
        node = self.node(selector)
        self.send("DOM.scrollIntoViewIfNeeded", {"nodeId": node})
        quad = self.send("DOM.getBoxModel", {"nodeId": node})["model"]["content"]  # viewport pixels
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "clickCount": 1})

    def set_files(self, selector: str, *paths: Path) -> None:
        self.send("DOM.setFileInputFiles", {"nodeId": self.node(selector), "files": [str(p) for p in paths]})

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """JavaScript exceptions and console errors seen on this page."""
        found = []
        for event in list(self.browser.events):
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(json.dumps(params.get("args", []))[:500])
        return found


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A page of a headless Chromium with a profile of its own, closed after the test."""
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        yield Page(browser)
    finally:
        browser.close()


# ---- the server the stream and web page tests share -------------------------------------------

MAX_STREAMS = 3


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "astronaut.mp4")


@pytest.fixture(scope="session")
def camera_server() -> Iterator[ServerThread]:
    """A server with a detector and a classifier (onnxruntime, 1 thread) and max_streams 3."""
    config = ServeConfig(settings=Settings(), limits=LimitsConfig(max_streams=MAX_STREAMS), models=(
        ModelConfig("blazeface", backend="onnxruntime", threads=1),
        ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1)))
    with ServerThread(create_app(config)) as server:
        server.wait_ready()
        yield server
    assert not stream_threads(), f"stream threads left after shutdown: {stream_threads()}"
