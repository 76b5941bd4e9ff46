"""Serving benchmark: edgerun serve vs KServe's ModelServer under perf_analyzer, side by side in one run.

Both servers serve ``edgerun/models/mobilenet_v2/mobilenet_v2.onnx`` on 127.0.0.1 with the same
onnxruntime settings: the KServe model's ``InferenceSession`` is built by edgerun's own
onnxruntime backend with the thread count ``edgerun serve`` uses by default, so providers, graph
optimisation, threads and memory settings are identical by construction; the KServe model then
calls the raw ``InferenceSession.run``. perf_analyzer (V2 over HTTP, binary tensors, batch 1)
drives each server at concurrency 1, 4 and 8, interleaving the two servers run by run so that
machine noise hits both. Printed: throughput and p50/p99 latency of each, the ratios (target:
edgerun >= 1.5x KServe's throughput at concurrency 4, with a lower p99), the HTTP overhead (p50
of a V2 binary infer to ``edgerun serve`` minus p50 of the in-process ``session.infer`` on the
same input, interleaved) and the RSS of ``edgerun serve`` with its default models after 1,000
requests (target <= 150 MB).

Preparation (this script installs nothing):
    # edgerun's venv, with perf_analyzer from the tritonclient 2.51.0 wheel (the test extra):
    python3 -m venv .venv && .venv/bin/pip install -e '.[test]'
    apt-get install -y libb64-0d                     # perf_analyzer's libb64.so.0d
    # KServe in a venv of its own (it pins its own fastapi/uvicorn), with the same onnxruntime:
    python3 -m venv /tmp/kserve-venv
    /tmp/kserve-venv/bin/pip install kserve "onnxruntime==$(.venv/bin/python -c \
        'import onnxruntime; print(onnxruntime.__version__)')"

Run (about 4 minutes with the defaults; the KServe server runs from this file under its venv):
    .venv/bin/python benchmarks/serving.py --kserve-python /tmp/kserve-venv/bin/python [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "mobilenet_v2"
MODEL_FILE = REPO / "edgerun" / "models" / MODEL / f"{MODEL}.onnx"
DEFAULT_MODELS = ("mobilenet_v2", "blazeface")
SHAPES = {"mobilenet_v2": (1, 3, 224, 224), "blazeface": (1, 3, 128, 128)}
START_TIMEOUT_S = 120.0


# ---- the KServe peer (runs under the KServe venv: python serving.py --serve-kserve ...) ---------

def triton_config(max_batch_size: int = 8) -> dict[str, Any]:
    """The model configuration perf_analyzer needs (KServe has no config route; edgerun sends the same)."""
    return {"name": MODEL, "platform": "onnxruntime_onnx", "max_batch_size": max_batch_size,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}],
            "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [1000]}]}


def serve_kserve(port: int, options: dict[str, Any], mode: str) -> None:
    """KServe's ModelServer on 127.0.0.1:port serving MODEL_FILE (REST only), its onnxruntime session
    loaded with ``options`` (LoadOptions fields) by edgerun's onnxruntime backend."""
    import uvicorn

    class LoopbackConfig(uvicorn.Config):  # kserve hard-codes host="0.0.0.0"; keep it on loopback
        def __init__(self, app: Any, **kwargs: Any) -> None:
            super().__init__(app, **{**kwargs, "host": "127.0.0.1"})

    uvicorn.Config = LoopbackConfig  # type: ignore[misc, assignment]
    import kserve
    from kserve.model_server import app

    sys.path.insert(0, str(REPO))
    from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend

    session = OnnxRuntimeBackend().load(MODEL_FILE, load_options_from(options))
    model = _kserve_model(kserve, session._session, mode)
    app.add_api_route("/v2/models/{model_name}/config", lambda model_name: triton_config(), methods=["GET"])
    kserve.ModelServer(http_port=port, enable_grpc=False).start([model])


def _kserve_model(kserve: Any, ort_session: Any, mode: str) -> Any:
    """A kserve.Model running the raw onnxruntime session: sync predict (KServe's documented
    custom-model form) or, with mode "thread", an async predict that runs it in a worker thread."""
    from uuid import uuid4

    from kserve import InferOutput, InferResponse

    output_names = [o.name for o in ort_session.get_outputs()]

    def run(payload: Any) -> Any:
        feeds = {item.name: item.as_numpy() for item in payload.inputs}
        outputs = []
        for name, array in zip(output_names, ort_session.run(output_names, feeds), strict=True):
            out = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            out.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(out)
        return InferResponse(response_id=payload.id or str(uuid4()), model_name=MODEL, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)

    class OnnxModel(kserve.Model):
        def load(self) -> bool:
            self.ready = True
            return True

        def get_input_types(self) -> list[dict[str, Any]]:
            return [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]

        def get_output_types(self) -> list[dict[str, Any]]:
            return [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]

    class SyncModel(OnnxModel):
        def predict(self, payload: Any, headers: Any = None) -> Any:
            return run(payload)

    class ThreadModel(OnnxModel):
        async def predict(self, payload: Any, headers: Any = None) -> Any:
            import asyncio

            return await asyncio.get_running_loop().run_in_executor(None, run, payload)

    model = (ThreadModel if mode == "thread" else SyncModel)(MODEL)
    model.load()
    return model


# ---- processes -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def wait_ready(server: Server, models: tuple[str, ...]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited with status {server.process.returncode}")
        if all(get_status(server.port, f"/v2/models/{m}/ready") == 200 for m in models):
            return
        time.sleep(0.2)
    raise SystemExit(f"{server.name} not ready within {START_TIMEOUT_S:.0f} s")


def get_status(port: int, path: str) -> int:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return 0


@contextmanager
def running(name: str, command: list[str], port: int, log: Path, models: tuple[str, ...],
            env: dict[str, str] | None = None) -> Iterator[Server]:
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    server = Server(name, process, port)
    try:
        wait_ready(server, models)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def edgerun_command(port: int, config: Path | None) -> list[str]:
    command = [sys.executable, "-m", "edgerun", "serve", "--port", str(port)]
    return command + (["--config", str(config)] if config else [])


def kserve_command(python: str, port: int, options: dict[str, Any], mode: str) -> list[str]:
    return [python, str(Path(__file__).resolve()), "--serve-kserve", "--port", str(port),
            "--kserve-mode", mode, "--load-options", json.dumps(options)]


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process this script started, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# ---- V2 binary requests (http.client: the lightest client Python has) ----------------------

def binary_request(model: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": "input", "shape": list(array.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": array.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + array.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


class V2Client:
    """A keep-alive connection posting V2 binary infer requests."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def infer(self, model: str, body: bytes, headers: dict[str, str]) -> bytes:
        self.connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"infer {model}: HTTP {response.status}: {data[:200]!r}")
        return data

    def close(self) -> None:
        self.connection.close()


def send_requests(port: int, count: int, concurrency: int) -> None:
    """``count`` binary infer requests spread over the default models, ``concurrency`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    bodies = {m: binary_request(m, rng.standard_normal(SHAPES[m]).astype(np.float32)) for m in DEFAULT_MODELS}

    def worker(index: int) -> None:
        client = V2Client(port)
        for i in range(index, count, concurrency):
            model = DEFAULT_MODELS[i % len(DEFAULT_MODELS)]
            client.infer(model, *bodies[model])
        client.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))


# ---- perf_analyzer ---------------------------------------------------------------------------

@dataclass
class Measurement:
    throughput: float   # infer/s
    p50_ms: float
    p99_ms: float


def perf_analyzer_path() -> Path:
    return Path(sysconfig.get_path("scripts")) / "perf_analyzer"


def perf_analyzer_env() -> dict[str, str]:
    """LD_LIBRARY_PATH with the nvidia-cuda-runtime-cu12 wheel's libcudart (no GPU is needed)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    folders = [str(Path(p) / "lib") for p in (spec.submodule_search_locations or [])] if spec else []
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*folders, env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    return env


def perf_analyzer(server: Server, concurrency: int, args: argparse.Namespace, workdir: Path) -> Measurement:
    report = workdir / f"{server.name}-c{concurrency}.csv"
    command = [str(perf_analyzer_path()), "-m", MODEL, "-u", server.address, "-i", "http",
               "--concurrency-range", f"{concurrency}:{concurrency}",
               "--measurement-interval", str(args.window_ms), "-s", str(args.stability), "-r", "10",
               "-f", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=perf_analyzer_env())
    if done.returncode != 0 or not report.exists():
        raise SystemExit(f"perf_analyzer against {server.name} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    with report.open() as handle:
        row = next(csv.DictReader(handle))
    return Measurement(float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000,
                       float(row["p99 latency"]) / 1000)


# ---- HTTP overhead ---------------------------------------------------------------------------

def http_overhead(port: int, options: dict[str, Any], runs: int) -> tuple[float, float]:
    """(p50 V2 binary infer over HTTP, p50 in-process session.infer) in ms, interleaved."""
    from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend

    x = np.random.default_rng(1).standard_normal(SHAPES[MODEL]).astype(np.float32)
    body, headers = binary_request(MODEL, x)
    session = OnnxRuntimeBackend().load(MODEL_FILE, load_options_from(options))
    client = V2Client(port)
    calls: dict[str, Callable[[], object]] = {
        "http": lambda: client.infer(MODEL, body, headers), "in-process": lambda: session.infer({"input": x})}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(runs + 10):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= 10:
                times[name].append((time.perf_counter() - start) * 1000)
    client.close()
    session.close()
    return statistics.median(times["http"]), statistics.median(times["in-process"])


# ---- report ---------------------------------------------------------------------------------

def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def print_table(results: dict[tuple[str, int], list[Measurement]], concurrencies: list[int]) -> None:
    print("\nmedian [min-max] over repeats; throughput in infer/s, latency in ms")
    print(f"{'c':>2} {'server':<8} {'throughput':>22} {'p50':>22} {'p99':>22}")
    for c in concurrencies:
        for name in ("edgerun", "kserve"):
            runs = results[(name, c)]
            print(f"{c:>2} {name:<8} {spread([r.throughput for r in runs]):>22} "
                  f"{spread([r.p50_ms for r in runs]):>22} {spread([r.p99_ms for r in runs]):>22}")
        mine, peer = results[("edgerun", c)], results[("kserve", c)]
        ratios = [a.throughput / b.throughput for a, b in zip(mine, peer, strict=True)]
        p99 = [a.p99_ms / b.p99_ms for a, b in zip(mine, peer, strict=True)]
        print(f"{c:>2} {'ratio':<8} throughput edgerun/kserve {spread(ratios)}   "
              f"p99 edgerun/kserve {spread(p99)}")


def edgerun_load_options(config_file: Path | None) -> dict[str, Any]:
    """The runtime options `edgerun serve` (with ``config_file``, if any) loads MODEL with."""
    from edgerun.serving import load_config
    from edgerun.serving.execution import load_options

    config = load_config(config_file)
    options = load_options(config.model_config(MODEL), config)
    typed = options.options.effective() if options.options is not None else {}
    return {"threads": options.threads, "options": typed}


def load_options_from(options: dict[str, Any]) -> Any:
    """LoadOptions from edgerun_load_options' JSON-able dict (it crosses to the KServe process)."""
    from edgerun.backends.base import LoadOptions
    from edgerun.backends.options import parse_options

    return LoadOptions(threads=options.get("threads"),
                       options=parse_options("onnxruntime", options.get("options") or {}))


def benchmark(args: argparse.Namespace) -> None:
    options = edgerun_load_options(args.edgerun_config)
    workdir = Path(tempfile.mkdtemp(prefix="edgerun-serving-bench-"))
    mine_port, peer_port = free_port(), free_port()
    print(f"model {MODEL_FILE.relative_to(REPO)}; onnxruntime options on both: {options}; "
          f"KServe predict mode {args.kserve_mode}; perf_analyzer window {args.window_ms} ms, "
          f"stability {args.stability}%; {args.repeats} repeat(s); logs in {workdir}")
    with running("edgerun", edgerun_command(mine_port, args.edgerun_config), mine_port,
                 workdir / "edgerun.log", DEFAULT_MODELS) as mine, \
            running("kserve", kserve_command(args.kserve_python, peer_port, options, args.kserve_mode),
                    peer_port, workdir / "kserve.log", (MODEL,)) as peer:
        send_requests(mine.port, args.requests, 4)
        rss, peak = rss_mb(mine.process.pid)
        print(f"edgerun serve RSS after {args.requests} requests (models {', '.join(DEFAULT_MODELS)}): "
              f"{rss:.1f} MB (peak {peak:.1f} MB; target <= 150 MB)")
        over_http, in_process = http_overhead(mine.port, options, args.overhead_runs)
        print(f"HTTP overhead: V2 binary infer p50 {over_http:.2f} ms - in-process p50 {in_process:.2f} ms "
              f"= {over_http - in_process:.2f} ms")
        results = measure(mine, peer, args, workdir)
        print(f"edgerun serve RSS after the perf_analyzer runs: {rss_mb(mine.process.pid)[0]:.1f} MB")
    print_table(results, args.concurrency)


def measure(mine: Server, peer: Server, args: argparse.Namespace,
            workdir: Path) -> dict[tuple[str, int], list[Measurement]]:
    results: dict[tuple[str, int], list[Measurement]] = {}
    for repeat in range(args.repeats):
        for c in args.concurrency:
            order = (mine, peer) if (repeat + c) % 2 == 0 else (peer, mine)
            for server in order:
                m = perf_analyzer(server, c, args, workdir)
                results.setdefault((server.name, c), []).append(m)
                print(f"repeat {repeat + 1} c={c} {server.name:<8} {m.throughput:7.1f} infer/s  "
                      f"p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve-python", default="/tmp/kserve-venv/bin/python",
                        help="python of a venv with kserve and onnxruntime (see the preparation above)")
    parser.add_argument("--kserve-mode", choices=("sync", "thread"), default="sync",
                        help="KServe predict: sync (documented custom-model form) or in a worker thread")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer measurement interval")
    parser.add_argument("--stability", type=int, default=25, help="perf_analyzer stability percentage")
    parser.add_argument("--requests", type=int, default=1000, help="requests before the RSS reading")
    parser.add_argument("--overhead-runs", type=int, default=200)
    parser.add_argument("--edgerun-config", type=Path, default=None,
                        help="config file for edgerun serve (default: none, i.e. its defaults)")
    parser.add_argument("--serve-kserve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--load-options", type=json.loads, default={}, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_kserve:
        sys.argv = sys.argv[:1]  # kserve parses sys.argv at import time
        serve_kserve(args.port, args.load_options, args.kserve_mode)
        return
    if not perf_analyzer_path().exists():
        raise SystemExit(f"no perf_analyzer at {perf_analyzer_path()}: "
                         "pip install 'tritonclient[http]==2.51.0'")
    benchmark(args)


if __name__ == "__main__":
    main()
