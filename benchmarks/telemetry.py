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
import os
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
from dataclasses import dataclass
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
                                "telemetry": {"enabled": enabled}}))
    return path


@contextmanager
def serving(config: Path, root: Path, log: Path) -> Iterator[tuple[int, int]]:
    """`edgerun serve` with ``config`` over ``root``; yields (port, pid) once the model is ready."""
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
        yield port, process.pid
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process this script started (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sampler_cpu_s(port: int) -> float | None:
    """The telemetry sampler thread's CPU seconds so far (None with telemetry off)."""
    status, body = get(port, "/v1/telemetry")
    return float(json.loads(body)["sampler_cpu_s"]) if status == 200 else None


@dataclass
class Run:
    rate: float                    # inferences per second
    cpu_ms: float                  # server CPU ms per inference
    sampler_share: float | None    # sampler CPU / server CPU over the window


def throughput(port: int, pid: int, seconds: float, concurrency: int) -> Run:
    """Inferences per second of ``concurrency`` closed-loop clients over ``seconds``, the server's
    CPU milliseconds per inference and the sampler's share of the server's CPU, same window."""
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
    first, started, cpu, sampler = sum(counts), time.perf_counter(), cpu_seconds(pid), sampler_cpu_s(port)
    time.sleep(seconds)
    done, elapsed, cpu = sum(counts) - first, time.perf_counter() - started, cpu_seconds(pid) - cpu
    sampler_after = sampler_cpu_s(port)
    stop.set()
    for thread in threads:
        thread.join()
    share = (sampler_after - sampler) / cpu if sampler is not None and sampler_after is not None else None
    return Run(done / elapsed, cpu * 1000 / max(done, 1), share)


def model_energy(port: int) -> str:
    status, body = get(port, "/v1/telemetry")
    if status != 200:
        return f"/v1/telemetry: HTTP {status}"
    data = json.loads(body)
    rows = [f"{m['name']} {m['energy_j']:.3f} J" for m in data["models"]]
    sensor = data["sensors"][0] if data["sensors"] else None
    power = f"{sensor['name']} {sensor['energy_j']:.1f} J" if sensor else "no sensor"
    return (f"sampler CPU {data['sampler_cpu_s'] * 1000:.0f} ms; energy {power}; "
            f"model energy {', '.join(rows) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (interleaved)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--root", type=Path, default=REPO / "devices" / "jetson-orin-nano" / "rootfs")
    args = parser.parse_args()
    results: dict[str, list[Run]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="edgerun-telemetry-bench-") as scratch:
        folder = Path(scratch)
        for repeat in range(args.repeats):
            order = ("off", "on") if repeat % 2 == 0 else ("on", "off")
            for setting in order:
                config = write_config(folder, setting == "on")
                with serving(config, args.root, folder / f"serve-{setting}-{repeat}.log") as (port, pid):
                    results[setting].append(throughput(port, pid, args.seconds, args.concurrency))
                    note = model_energy(port) if setting == "on" else get(port, "/v1/telemetry")[1].decode()
                run = results[setting][-1]
                share = "" if run.sampler_share is None else f" sampler {run.sampler_share:.2%} of CPU"
                print(f"run {repeat + 1} telemetry {setting:>3}: {run.rate:8.1f} infer/s "
                      f"{run.cpu_ms:6.2f} CPU ms/infer{share}   [{note[:90]}]", flush=True)
    report(results, args)


def report(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    board = args.root.parent.name if args.root.name == "rootfs" else args.root.name
    print(f"\nmobilenet_v2, onnxruntime, concurrency {args.concurrency}, {args.seconds:g} s x "
          f"{args.repeats} interleaved runs, board tree {board}")
    print(f"{'telemetry':<10} {'median infer/s':>15} {'median CPU ms/infer':>20}   runs (infer/s)")
    medians = {}
    for setting in ("off", "on"):
        rates, cpu = [r.rate for r in results[setting]], [r.cpu_ms for r in results[setting]]
        medians[setting] = statistics.median(rates), statistics.median(cpu)
        print(f"{setting:<10} {medians[setting][0]:>15.1f} {medians[setting][1]:>20.2f}   "
              + ", ".join(f"{v:.1f}" for v in rates))
    print(f"throughput ratio on/off: {medians['on'][0] / medians['off'][0]:.3f} (target >= 0.98)")
    print(f"CPU per inference ratio on/off: {medians['on'][1] / medians['off'][1]:.3f}")
    shares = [r.sampler_share for r in results["on"] if r.sampler_share is not None]
    if shares:
        print(f"telemetry sampler thread: {statistics.median(shares):.2%} of the server's CPU (median), "
              "the bound on its throughput cost when the server is CPU-bound")

if __name__ == "__main__":
    main()
