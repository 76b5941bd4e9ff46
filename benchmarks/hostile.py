"""Hostile inputs against a real `edgerun serve`: peak RSS and time of each, next to a normal request's.

One `edgerun serve` subprocess (mobilenet_v2 on onnxruntime, 127.0.0.1, a free port) receives a
normal image upload, then the worst input of each class edgerun budgets: an image whose header
claims more pixels than the budget, the largest image the budget admits (in RGB, 16-bit grey, CMYK
and EXIF-rotated forms), a 1 x 5000 PNG, a huge non-image body, a tensor shape whose element count is
0 but whose dims overflow, a model package with a 2 MB manifest or wrong types (repository API), and,
service side, 1,000 silent TCP connections (a normal request is timed while they stay open) and a
large header line. Before each case the server's peak RSS is reset (/proc/PID/clear_refs 5); after
it, VmHWM minus the RSS before is that input's cost. Printed per case: HTTP status, milliseconds,
peak RSS growth, and the ratio of its time to the normal request's (target: no input raises peak RSS
by more than 150 MB or costs more than 10x a normal request).

Run (about a minute; Linux, as a user who may write /proc/PID/clear_refs of its own processes):
    python benchmarks/hostile.py [--header-mb 200] [--connections 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
MB = 1 << 20
PREDICT = "/v1/models/mobilenet_v2/predict"


def png(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


@dataclass
class Row:
    name: str
    status: str
    ms: float
    peak_mb: float


class Server:
    """`edgerun serve` in a subprocess on 127.0.0.1 with EDGERUN_MODEL_PATH pointing at ``models``."""

    def __init__(self, models: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO), "EDGERUN_MODEL_PATH": str(models)}
        command = [sys.executable, "-m", "edgerun", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--model", "mobilenet_v2"]
        self.process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("edgerun serve did not become ready")
            time.sleep(0.2)

    def measure(self, name: str, action: Callable[[], str]) -> Row:
        pid = self.process.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before = status_kib(pid, "VmRSS")
        started = time.perf_counter()
        try:
            status = action()
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        ms = (time.perf_counter() - started) * 1000
        return Row(name, status, ms, (status_kib(pid, "VmHWM") - before) / 1024)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def post(server: Server, path: str, **kwargs: object) -> Callable[[], str]:
    def send() -> str:
        response = httpx.post(server.url + path, timeout=120, **kwargs)
        return str(response.status_code)
    return send


def budget_images() -> dict[str, bytes]:
    """Inputs of the image class: the largest the default budget (16 MP) admits, and worse."""
    side = 4096
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1]), axis=-1)
    photo = Image.fromarray(rgb.astype(np.uint8))
    deep = Image.fromarray((ramp[None, :] * 257).astype(np.uint16).repeat(side, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "pixels over budget (20 MP header)": png(Image.new("L", (5000, 4000))),
        "thin 1 x 5000 PNG": png(Image.new("RGB", (1, 5000), (90, 40, 20))),
        "16 MP RGB PNG (at budget)": png(photo),
        "16 MP 16-bit grey PNG": png(deep),
        "16 MP CMYK JPEG": png(photo.convert("CMYK"), "JPEG", quality=80),
        "16 MP EXIF-rotated JPEG": png(photo, "JPEG", quality=80, exif=exif),
        "31 MB of noise (not an image)": os.urandom(31 * MB),
    }


def bad_packages(root: Path) -> None:
    """Two packages in the repository: one with a 2 MB manifest, one with wrong types."""
    source = json.loads((REPO / "edgerun" / "models" / "mobilenet_v2" / "manifest.json").read_text())
    huge = root / "huge"
    huge.mkdir()
    (huge / "manifest.json").write_text(json.dumps({**source, "description": "x" * (2 * MB)}))
    typed = root / "typed"
    typed.mkdir()
    (typed / "manifest.json").write_text(json.dumps({**source, "preprocess": "RGB",
                                                     "postprocess": {"top_k": 2.5}}))


def silent_connections(server: Server, count: int) -> Callable[[], str]:
    def run() -> str:
        sockets = []
        try:
            for _ in range(count):
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            data = (SAMPLES / "chelsea.png").read_bytes()
            response = httpx.post(server.url + PREDICT, content=data, timeout=60)
            return f"{response.status_code} (normal request with {len(sockets)} idle open)"
        except OSError as exc:
            return f"{type(exc).__name__} after {len(sockets)} connections"
        finally:
            for sock in sockets:
                sock.close()
    return run


def large_header(server: Server, megabytes: int) -> Callable[[], str]:
    def run() -> str:
        chunk = b"a" * MB
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            try:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(megabytes):
                    sock.sendall(chunk)
                sock.sendall(b"\r\n\r\n")
                reply = sock.recv(64)
            except OSError as exc:
                return f"{type(exc).__name__} (connection refused mid-header)"
        return reply.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
    return run


def cases(server: Server, args: argparse.Namespace) -> list[tuple[str, Callable[[], str]]]:
    found = [(name, post(server, PREDICT, content=data)) for name, data in budget_images().items()]
    shape = {"inputs": [{"name": "input", "shape": [0, 2**62, 4], "datatype": "FP32", "data": []}]}
    found += [
        ("shape [0, 2**62, 4] (V2 infer)", post(server, "/v2/models/mobilenet_v2/infer", json=shape)),
        ("2 MB manifest (repository load)", post(server, "/v2/repository/models/huge/load")),
        ("wrong-typed manifest (repository load)", post(server, "/v2/repository/models/typed/load")),
        (f"{args.connections} silent connections", silent_connections(server, args.connections)),
        (f"{args.header_mb} MB header line", large_header(server, args.header_mb)),
    ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--header-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgerun-hostile-") as scratch:
        bad_packages(Path(scratch))
        server = Server(Path(scratch))
        try:
            normal = post(server, PREDICT, content=(SAMPLES / "chelsea.png").read_bytes())
            for _ in range(3):
                normal()  # warm: allocator pools, first-request paths
            baseline = server.measure("normal request (chelsea.png)", normal)
            rows = [baseline] + [server.measure(name, action) for name, action in cases(server, args)]
            rss_mb = status_kib(server.process.pid, "VmRSS") / 1024
        finally:
            server.close()
    print(f"edgerun serve (mobilenet_v2, onnxruntime), RSS after the run {rss_mb:.0f} MB")
    print(f"{'input':<42} {'status':<40} {'ms':>9} {'x normal':>9} {'peak +MB':>9}")
    for row in rows:
        ratio = row.ms / baseline.ms if baseline.ms else float("nan")
        print(f"{row.name:<42} {row.status:<40} {row.ms:9.1f} {ratio:9.1f} {row.peak_mb:9.1f}")


if __name__ == "__main__":
    main()
