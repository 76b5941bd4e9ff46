"""Telemetry cost: throughput of `edgerun serve` with the telemetry sampler on and off, side by side.

Both servers run `edgerun serve` on 127.0.0.1 over the same emulated board (default
devices/jetson-orin-nano/rootfs, so the sampler reads INA3221 rails every 100 ms and thermal zones,
over-current counters, cpufreq and /proc/stat every second, as on a Jetson) serving mobilenet_v2 on
onnxruntime; the only difference is the config file's ``telemetry.enabled``. A closed-loop client
(keep-alive connections, V2 binary requests, batch 1, fixed concurrency) drives each server for a
fixed time, the two alternating run by run so machine noise hits both. Printed: throughput of each
run, the medians, and the ratio on/off (target >= 0.98), and the model energy the "on" server
attributed (it must be there: the sampler really ran).

Run (about 1.5 minutes with the defaults):
    python benchmarks/telemetry.py [--seconds 10] [--repeats 3] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "mobilenet_v2"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        status, body = response.status, response.read()
        connection.close()
        return status, body
    except OSError:
        return 0, b""


def write_config(folder: Path, enabled: bool) -> Path:
    path = folder / f"telemetry-{'on' if enabled else 'off'}.json"
    path.write_text(json.dumps({"models": [{"name": MODEL, "backend": "onnxruntime"}],
                                "access_log": False, "telemetry": {"enabled": enabled}}))
    return path


@contextmanager
def serving(config: Path, root: Path, log: Path) -> Iterator[int]:
    """`edgerun serve` with ``config`` over ``root``; yields its port once the model is ready."""
    port = free_port()
    command = [sys.executable, "-m", "edgerun", "serve", "--port", str(port), "--config", str(config),
               "--root", str(root)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while get(port, f"/v2/models/{MODEL}/ready")[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"edgerun serve did not become ready; see {log}:\n"
                                 f"{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def request_body() -> tuple[bytes, dict[str, str]]:
    array = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": list(array.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": array.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + array.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def throughput(port: int, seconds: float, concurrency: int) -> float:
    """Completed inferences per second of ``concurrency`` closed-loop clients over ``seconds``."""
    body, headers = request_body()
    counts = [0] * concurrency
    stop = threading.Event()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            connection.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"infer: HTTP {response.status}")
            counts[index] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)                      # warm: connections open, caches hot
    first, started = sum(counts), time.perf_counter()
    time.sleep(seconds)
    done, elapsed = sum(counts) - first, time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    return done / elapsed


def model_energy(port: int) -> str:
    status, body = get(port, "/v1/telemetry")
    if status != 200:
        return f"/v1/telemetry: HTTP {status}"
    data = json.loads(body)
    rows = [f"{m['name']} {m['energy_j']:.3f} J" for m in data["models"]]
    sensor = data["sensors"][0] if data["sensors"] else None
    power = f"{sensor['name']} {sensor['energy_j']:.1f} J" if sensor else "no sensor"
    return f"energy {power}; model energy {', '.join(rows) or 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (interleaved)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--root", type=Path, default=REPO / "devices" / "jetson-orin-nano" / "rootfs")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="edgerun-telemetry-bench-") as scratch:
        folder = Path(scratch)
        for repeat in range(args.repeats):
            order = ("off", "on") if repeat % 2 == 0 else ("on", "off")
            for setting in order:
                config = write_config(folder, setting == "on")
                with serving(config, args.root, folder / f"serve-{setting}-{repeat}.log") as port:
                    results[setting].append(throughput(port, args.seconds, args.concurrency))
                    note = model_energy(port) if setting == "on" else get(port, "/v1/telemetry")[1].decode()
                print(f"run {repeat + 1} telemetry {setting:>3}: {results[setting][-1]:8.1f} infer/s   "
                      f"[{note[:110]}]", flush=True)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    board = args.root.parent.name if args.root.name == "rootfs" else args.root.name
    print(f"\nmobilenet_v2, onnxruntime, concurrency {args.concurrency}, {args.seconds:g} s x "
          f"{args.repeats} interleaved runs, board tree {board}")
    print(f"{'telemetry':<10} {'median infer/s':>15} {'runs':>30}")
    for setting, median in (("off", off), ("on", on)):
        runs = ", ".join(f"{v:.1f}" for v in results[setting])
        print(f"{setting:<10} {median:>15.1f} {runs:>30}")
    print(f"ratio on/off: {on / off:.3f} (target >= 0.98)")


if __name__ == "__main__":
    main()
