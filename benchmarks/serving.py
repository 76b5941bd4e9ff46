"""Serving benchmark: edgerun serve vs NVIDIA Triton (and KServe) under perf_analyzer, side by side.

Every server serves ``edgerun/models/mobilenet_v2/mobilenet_v2.onnx`` on 127.0.0.1 with the same
onnxruntime session: the peers' sessions are built by edgerun's own onnxruntime backend with the
options ``edgerun serve`` uses (one intra-op thread per instance, two instances by default), and
then called through the raw ``InferenceSession.run``. perf_analyzer (V2 binary tensors, batch 1,
every request the same real photo, ``samples/chelsea.png`` pre-processed for the model, which
the in-process ceiling and the output check use too) drives each server at concurrency 1, 4
and 8 over HTTP (and gRPC with ``--grpc``), the servers interleaved run by run so that machine
noise hits all of them. Before timing, each server's
answer to one request is checked against in-process onnxruntime (a Triton stub that picks up
another numpy answers 200 with empty tensors, which perf_analyzer does not notice).

Printed per server and concurrency: throughput, p50/p99, server CPU per inference (user+system
time of every server process over the run / inferences the server counted), and the foreign CPU
load during the run (busy time of processes that are neither the server nor perf_analyzer, and
steal); runs with more than ``--max-foreign`` of a core are dropped (kept, flagged, when every
run of a cell was busy). Then the ratios edgerun/peer, each server's RSS summed over all its
processes once ready and after the runs, its cold start (spawn to every model ready), and the
offline ceiling: the throughput of the same sessions called in-process by ``instances`` threads.

Targets (issue 18): throughput >= 1.0x Triton's at concurrency 1, 4 and 8; p99 <= Triton's at 4
and 8; ready RSS <= 0.6x Triton's and <= 150 MB; cold start <= Triton's; edgerun at concurrency
4 >= 0.9x the offline in-process throughput.

Preparation (this script installs nothing):
    # edgerun's venv, with perf_analyzer from the tritonclient 2.51.0 wheel (the test extra):
    python3 -m venv .venv && .venv/bin/pip install -e '.[test]'
    apt-get install -y libb64-0d                     # perf_analyzer's libb64.so.0d
    # Triton: the nvidia-pytriton wheel ships tritonserver 2.51 (HTTP and gRPC front ends),
    # libtriton_python.so and Python-backend stubs for CPython 3.8-3.13; it runs without a GPU.
    # Its own venv, with this venv's numpy and onnxruntime versions (the model.py imports edgerun
    # from this checkout, so it needs only those two):
    python3 -m venv /tmp/triton-venv
    /tmp/triton-venv/bin/pip install nvidia-pytriton \
        "onnxruntime==$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')" \
        "numpy==$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')"
    # optional, KServe in a venv of its own (it pins its own fastapi/uvicorn):
    python3 -m venv /tmp/kserve-venv && /tmp/kserve-venv/bin/pip install kserve onnxruntime==...

How Triton is run (done by this script): ``tritonserver --model-repository R --backend-directory
B`` where B/python holds links to the wheel's ``libtriton_python.so``, ``triton_python_backend_utils.py``
and ``python_backend_stubs/<X.Y>/triton_python_backend_stub`` for this Python, and R holds
``mobilenet_v2/config.pbtxt`` (backend python, max_batch_size 8, two KIND_CPU instances) and
``mobilenet_v2/1/model.py`` (loads the session as described, runs it per request). The stub needs
its Python's libpython on LD_LIBRARY_PATH (sysconfig LIBDIR) and the Triton venv's bin first on
PATH (the embedded interpreter finds its site-packages from the ``python3`` on PATH).

Run (about 7 minutes with the defaults, 15 with --grpc):
    .venv/bin/python benchmarks/serving.py --triton-venv /tmp/triton-venv [--grpc] [--repeats 3]
        [--kserve-python /tmp/kserve-venv/bin/python]
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
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
CEILING_CONCURRENCY = 4   # edgerun serve at this concurrency is compared with the in-process ceiling


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
    from edgerun.backends.base import LoadOptions
    from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend

    session = OnnxRuntimeBackend().load(MODEL_FILE, LoadOptions(threads=options.get("threads")))
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

# ---- the Triton peer (tritonserver from the nvidia-pytriton wheel, Python backend) -----------

TRITON_MODEL_PY = '''"""Triton Python-backend model: edgerun's onnxruntime session, run per request."""
import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        value = {key: item["string_value"] for key, item in parameters.items()}
        sys.path.insert(0, value["repo"])
        from edgerun.backends.base import LoadOptions
        from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend

        options = LoadOptions(**json.loads(value["load_options"]))
        self.session = OnnxRuntimeBackend().load(Path(value["model_file"]), options)._session
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            results = self.session.run(self.outputs, feeds)
            tensors = [pb_utils.Tensor(n, r) for n, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''


def triton_files(venv: Path) -> tuple[Path, Path]:
    """(the wheel's tritonserver folder, this Python's backend stub)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = sorted(venv.glob("lib/python*/site-packages/pytriton/tritonserver"))
    if not found:
        raise SystemExit(f"no pytriton/tritonserver under {venv}: pip install nvidia-pytriton there")
    stub = found[0] / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}")
    return found[0], stub


def prepare_triton(venv: Path, workdir: Path, options: dict[str, Any], instances: int) -> tuple[Path, Path]:
    """(model repository, backend directory) for tritonserver, written under ``workdir``."""
    server, stub = triton_files(venv)
    backends = workdir / "triton-backends" / "python"
    backends.mkdir(parents=True)
    for source in (server / "backends/python/libtriton_python.so",
                   server / "backends/python/triton_python_backend_utils.py", stub):
        (backends / source.name).symlink_to(source)
    model = workdir / "triton-models" / MODEL
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(TRITON_MODEL_PY)
    parameters = {"repo": str(REPO), "model_file": str(MODEL_FILE), "load_options": json.dumps(options)}
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 8\n'
        'input [{ name: "input", data_type: TYPE_FP32, dims: [3, 224, 224] }]\n'
        'output [{ name: "logits", data_type: TYPE_FP32, dims: [1000] }]\n'
        f'instance_group [{{ count: {instances}, kind: KIND_CPU }}]\n'
        + "".join(f'parameters {{ key: "{k}", value: {{ string_value: {json.dumps(v)} }} }}\n'
                  for k, v in parameters.items()))
    return model.parent, backends.parent


def triton_command(venv: Path, repository: Path, backends: Path, port: int, grpc_port: int) -> list[str]:
    server, _ = triton_files(venv)
    return [str(server / "bin" / "tritonserver"), "--model-repository", str(repository),
            "--backend-directory", str(backends), "--http-address", "127.0.0.1", "--http-port", str(port),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port), "--allow-metrics", "false",
            "--log-info", "false"]


def triton_env(venv: Path) -> dict[str, str]:
    """The stub's libpython on LD_LIBRARY_PATH, the Triton venv's python first on PATH."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    return env


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
    grpc_port: int | None = None
    cold_start_s: float = 0.0
    has_stats: bool = True

    def address(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.port}"

    def pids(self) -> list[int]:
        """The server and every process under it (Triton's stubs, KServe's workers)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found


def wait_ready(server: Server, models: tuple[str, ...]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited with status {server.process.returncode}")
        if all(get_status(server.port, f"/v2/models/{m}/ready") == 200 for m in models):
            return
        time.sleep(0.05)
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


@dataclass
class Spec:
    """How to start one server."""

    name: str
    command: list[str]
    port: int
    models: tuple[str, ...]
    grpc_port: int | None = None
    env: dict[str, str] | None = None
    has_stats: bool = True


@contextmanager
def running(spec: Spec, log: Path) -> Iterator[Server]:
    started = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(spec.command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
                                   env=spec.env, start_new_session=True)
    server = Server(spec.name, process, spec.port, spec.grpc_port, has_stats=spec.has_stats)
    try:
        wait_ready(server, spec.models)
        server.cold_start_s = time.perf_counter() - started
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (Triton's stubs too), SIGKILL after 30 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def edgerun_command(port: int, grpc_port: int | None, config: Path | None) -> list[str]:
    command = [sys.executable, "-m", "edgerun", "serve", "--port", str(port)]
    command += ["--grpc-port", str(grpc_port)] if grpc_port else []
    return command + (["--config", str(config)] if config else [])


def kserve_command(python: str, port: int, options: dict[str, Any], mode: str) -> list[str]:
    return [python, str(Path(__file__).resolve()), "--serve-kserve", "--port", str(port),
            "--kserve-mode", mode, "--load-options", json.dumps(options)]


def rss_mb(pids: list[int]) -> float:
    """VmRSS summed over ``pids``, in MB."""
    total = 0
    for pid in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids``."""
    ticks = 0
    for pid in pids:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    busy = sum(values[:8]) - idle - steal
    return busy / os.sysconf("SC_CLK_TCK"), steal / os.sysconf("SC_CLK_TCK")


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

    def infer(self, model: str, body: bytes, headers: dict[str, str]) -> np.ndarray:
        """The first output of a binary-output infer request."""
        self.connection.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"infer {model}: HTTP {response.status}: {data[:200]!r}")
        length = int(response.getheader("Inference-Header-Content-Length") or len(data))
        output = json.loads(data[:length])["outputs"][0]
        size = output.get("parameters", {}).get("binary_data_size", 0)
        return np.frombuffer(data[length:length + size], dtype=np.float32).reshape(output["shape"])

    def close(self) -> None:
        self.connection.close()


SAMPLE = REPO / "samples" / "chelsea.png"


@functools.cache
def sample_input() -> np.ndarray:
    """The one input every measurement uses: a real photo through the model's own pre-processing.
    (perf_analyzer's default random FP32 data is random bits: NaNs and denormals that cost
    onnxruntime 9 % more per inference here than any real image, and not what a camera sends.)
    Made once per run; callers only read it."""
    from edgerun.predictor import Predictor
    from edgerun.processing import image

    with Predictor.open(MODEL) as predictor:
        tensors, _ = predictor.preprocess(image.decode_image(SAMPLE))
    return np.ascontiguousarray(tensors["input"], dtype=np.float32)


def perf_analyzer_data(workdir: Path) -> Path:
    """perf_analyzer's --input-data file holding :func:`sample_input` (one row, no batch dim)."""
    path = workdir / "input-data.json"
    row = sample_input()[0]
    path.write_text(json.dumps({"data": [{"input": {"b64": base64.b64encode(row.tobytes()).decode(),
                                                    "shape": list(row.shape)}}]}))
    return path


def check_outputs(server: Server, options: dict[str, Any]) -> None:
    """Exit unless the server's answer equals in-process onnxruntime's (empty tensors included)."""
    x = sample_input()
    expected = load_session(options).infer({"input": x})["logits"]
    client = V2Client(server.port)
    got = client.infer(MODEL, *binary_request(MODEL, x))
    client.close()
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
        raise SystemExit(f"{server.name} answers {got.shape} {got.ravel()[:3]}, in-process onnxruntime "
                         f"{expected.shape} {expected.ravel()[:3]}: check its numpy/onnxruntime")


def load_session(options: dict[str, Any]) -> Any:
    from edgerun.backends.base import LoadOptions
    from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend().load(MODEL_FILE, LoadOptions(**options))


def inference_count(server: Server) -> int | None:
    """Inferences the server counted (statistics extension), or None without one."""
    if not server.has_stats:
        return None
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", f"/v2/models/{MODEL}/stats")
    stats = json.loads(connection.getresponse().read())
    connection.close()
    return int(stats["model_stats"][0]["inference_count"])


def offline_throughput(options: dict[str, Any], threads: int, seconds: float) -> tuple[float, float]:
    """(inferences/s, foreign cores) of the same session called in-process by ``threads`` threads:
    the ceiling, with no HTTP and no load generator."""
    from concurrent.futures import ThreadPoolExecutor

    session = load_session(options)
    x = sample_input()
    session.infer({"input": x})
    deadline = time.perf_counter() + seconds

    def loop(_: int) -> int:
        count = 0
        while time.perf_counter() < deadline:
            session.infer({"input": x})
            count += 1
        return count

    (busy, steal), mine = machine_cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(loop, range(threads)))
    wall = time.perf_counter() - started
    (busy_after, steal_after), mine_after = machine_cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    own = (mine_after.ru_utime + mine_after.ru_stime) - (mine.ru_utime + mine.ru_stime)
    return total / wall, (max(0.0, busy_after - busy - own) + steal_after - steal) / wall


# ---- perf_analyzer ---------------------------------------------------------------------------

@dataclass
class Measurement:
    throughput: float      # infer/s
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None   # server CPU per inference
    foreign: float         # cores used by other processes (and steal) during the run
    client_cores: float = 0.0  # cores perf_analyzer itself used


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


def perf_analyzer(server: Server, concurrency: int, protocol: str, args: argparse.Namespace,
                  workdir: Path) -> Measurement | None:
    """One perf_analyzer run with the server's CPU and the machine's foreign load around it."""
    report = workdir / f"{server.name}-{protocol}-c{concurrency}.csv"
    report.unlink(missing_ok=True)
    command = [str(perf_analyzer_path()), "-m", MODEL, "-u", server.address(protocol), "-i", protocol,
               "--concurrency-range", f"{concurrency}:{concurrency}",
               "--measurement-interval", str(args.window_ms), "-s", str(args.stability), "-r", "10",
               "--input-data", str(workdir / "input-data.json"), "-f", str(report)]
    pids, count = server.pids(), inference_count(server)
    cpu, (busy, steal), client = cpu_s(pids), machine_cpu_s(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=perf_analyzer_env())
    wall = time.perf_counter() - started
    cpu, count_after = cpu_s(pids) - cpu, inference_count(server)
    (busy_after, steal_after), client_after = machine_cpu_s(), resource.getrusage(resource.RUSAGE_CHILDREN)
    client_s = (client_after.ru_utime + client_after.ru_stime) - (client.ru_utime + client.ru_stime)
    foreign = max(0.0, (busy_after - busy) - cpu - client_s) / wall + (steal_after - steal) / wall
    if done.returncode != 0 or not report.exists():
        print(f"  perf_analyzer against {server.name} ({protocol}, c={concurrency}) failed "
              f"({done.returncode}): {(done.stdout + done.stderr).strip().splitlines()[-1:]}", flush=True)
        return None
    with report.open() as handle:
        row = next(csv.DictReader(handle))
    inferences = (count_after - count) if count is not None and count_after is not None else None
    return Measurement(float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000,
                       float(row["p99 latency"]) / 1000, cpu * 1000 / inferences if inferences else None,
                       foreign, client_s / wall)


# ---- report ---------------------------------------------------------------------------------

def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


Round = dict[str, Measurement]               # one run of each server, back to back
Results = dict[tuple[str, int], list[Round]]  # (protocol, concurrency) -> rounds


def usable(rounds: list[Round], max_foreign: float) -> tuple[list[Round], str]:
    """Rounds in which every server's run had a quiet machine; all rounds, flagged, when none had."""
    quiet = [r for r in rounds if all(m.foreign <= max_foreign for m in r.values())]
    return (quiet, "") if quiet else (rounds, " (busy)")


def print_table(results: Results, servers: list[str], args: argparse.Namespace) -> None:
    print("\nmedian [min-max] over the rounds kept; throughput infer/s, latency ms, CPU ms per inference")
    print(f"{'proto':<5} {'c':>2} {'server':<8} {'kept':>4} {'throughput':>22} {'p50':>22} {'p99':>22} "
          f"{'cpu/inf':>20}")
    for (protocol, c), all_rounds in results.items():
        rounds, flag = usable(all_rounds, args.max_foreign)
        for name in servers:
            runs = [r[name] for r in rounds if name in r]
            cpu = [m.cpu_ms for m in runs if m.cpu_ms is not None]
            print(f"{protocol:<5} {c:>2} {name:<8} {len(runs):>4} {spread([m.throughput for m in runs]):>22} "
                  f"{spread([m.p50_ms for m in runs]):>22} {spread([m.p99_ms for m in runs]):>22} "
                  f"{spread(cpu):>20}{flag}")
        for peer in servers[1:]:
            pairs = [(r["edgerun"], r[peer]) for r in rounds if "edgerun" in r and peer in r]
            if pairs:
                throughput = spread([a.throughput / b.throughput for a, b in pairs])
                p99 = spread([a.p99_ms / b.p99_ms for a, b in pairs])
                print(f"{protocol:<5} {c:>2} edgerun/{peer} per round: throughput {throughput}, "
                      f"p99 {p99}{flag}")


def edgerun_load_options(config_file: Path | None) -> tuple[dict[str, Any], int]:
    """The runtime options `edgerun serve` loads MODEL with (threads only: the same on every
    server), and its instance count."""
    from edgerun.serving import load_config
    from edgerun.serving.config import DEFAULT_INSTANCES
    from edgerun.serving.execution import load_options

    config = load_config(config_file)
    model = config.model_config(MODEL)
    return {"threads": load_options(model, config).threads}, model.instances or DEFAULT_INSTANCES


def specs(args: argparse.Namespace, options: dict[str, Any], instances: int, workdir: Path) -> list[Spec]:
    grpc = "grpc" in args.protocols
    port, grpc_port = free_port(), free_port() if grpc else None
    found = [Spec("edgerun", edgerun_command(port, grpc_port, args.edgerun_config), port, DEFAULT_MODELS,
                  grpc_port)]
    if args.triton_venv:
        repository, backends = prepare_triton(args.triton_venv, workdir, options, instances)
        port, grpc_port = free_port(), free_port()
        found.append(Spec("triton", triton_command(args.triton_venv, repository, backends, port, grpc_port),
                          port, (MODEL,), grpc_port, triton_env(args.triton_venv)))
    if args.kserve_python and Path(args.kserve_python).exists() and not grpc:
        port = free_port()
        found.append(Spec("kserve", kserve_command(args.kserve_python, port, options, args.kserve_mode),
                          port, (MODEL,), has_stats=False))
    return found


def benchmark(args: argparse.Namespace) -> None:
    options, instances = edgerun_load_options(args.edgerun_config)
    workdir = Path(tempfile.mkdtemp(prefix="edgerun-serving-bench-"))
    to_start = specs(args, options, instances, workdir)
    perf_analyzer_data(workdir)
    print(f"model {MODEL_FILE.relative_to(REPO)}; onnxruntime load options on every server: {options}, "
          f"{instances} instances; servers {[s.name for s in to_start]}; protocols {args.protocols}; "
          f"perf_analyzer window {args.window_ms} ms, stability {args.stability}%; {args.repeats} "
          f"repeat(s); runs with foreign load > {args.max_foreign} cores dropped; logs in {workdir}")
    with ExitStack() as stack:
        servers = []
        for spec in to_start:  # one at a time: cold starts do not compete
            server = stack.enter_context(running(spec, workdir / f"{spec.name}.log"))
            check_outputs(server, options)
            print(f"{server.name}: outputs equal in-process onnxruntime; cold start "
                  f"{server.cold_start_s:.2f} s; ready RSS {rss_mb(server.pids()):.1f} MB over "
                  f"{len(server.pids())} process(es)", flush=True)
            servers.append(server)
        ready_rss = {s.name: rss_mb(s.pids()) for s in servers}
        results = measure(servers, args, workdir, options, instances)
        after_rss = {s.name: rss_mb(s.pids()) for s in servers}
        cold = {s.name: s.cold_start_s for s in servers}
    names = [s.name for s in servers]
    print_table(results, names, args)
    print_summary(names, ready_rss, after_rss, cold, results, args)


def print_summary(names: list[str], ready_rss: dict[str, float], after_rss: dict[str, float],
                  cold: dict[str, float], results: Results, args: argparse.Namespace) -> None:
    for name in names:
        print(f"{name:<8} RSS ready {ready_rss[name]:6.1f} MB, after the runs {after_rss[name]:6.1f} MB; "
              f"cold start {cold[name]:.2f} s")
    for peer in names[1:]:
        print(f"edgerun/{peer}: ready RSS {ready_rss['edgerun'] / ready_rss[peer]:.2f}x, "
              f"cold start {cold['edgerun'] / cold[peer]:.2f}x")
    rounds, flag = usable(results.get(("http", CEILING_CONCURRENCY), []), args.max_foreign)
    pairs = [(r["edgerun"].throughput, r["in-process"].throughput) for r in rounds if "in-process" in r]
    if pairs:
        print(f"edgerun serve at c={CEILING_CONCURRENCY} (http) / in-process ceiling of the same sessions "
              f"({', '.join(f'{a:.1f}/{b:.1f}' for a, b in pairs)} infer/s): "
              f"{spread([a / b for a, b in pairs])} (target >= 0.9){flag}")


def measure(servers: list[Server], args: argparse.Namespace, workdir: Path, options: dict[str, Any],
            instances: int) -> Results:
    """Every (protocol, concurrency) cell, the servers in a rotating order each repeat; after the
    HTTP cell at CEILING_CONCURRENCY, the in-process ceiling of the same sessions."""
    results: Results = {}
    for repeat in range(args.repeats):
        for protocol in args.protocols:
            for c in args.concurrency:
                shift = (repeat + c) % len(servers)
                current: Round = {}
                for server in servers[shift:] + servers[:shift]:
                    if protocol == "grpc" and server.grpc_port is None:
                        continue
                    m = perf_analyzer(server, c, protocol, args, workdir)
                    if m is None:
                        continue
                    current[server.name] = m
                    cpu = f"{m.cpu_ms:5.2f}" if m.cpu_ms is not None else "  n/a"
                    print(f"repeat {repeat + 1} {protocol:<4} c={c} {server.name:<8} "
                          f"{m.throughput:7.1f} infer/s  p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms  "
                          f"cpu/inf {cpu} ms  foreign {m.foreign:.2f}  client {m.client_cores:.2f} cores",
                          flush=True)
                results.setdefault((protocol, c), []).append(current)
                if protocol == "http" and c == CEILING_CONCURRENCY and "edgerun" in current:
                    ceiling, foreign = offline_throughput(options, instances, args.offline_s)
                    current["in-process"] = Measurement(ceiling, 0.0, 0.0, None, foreign)
                    print(f"repeat {repeat + 1} in-process ceiling {ceiling:7.1f} infer/s  foreign "
                          f"{foreign:.2f} cores; perf_analyzer used {current['edgerun'].client_cores:.2f} "
                          "cores against edgerun", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triton-venv", type=Path, default=Path("/tmp/triton-venv"),
                        help="venv with nvidia-pytriton (see the preparation above)")
    parser.add_argument("--kserve-python", default=None,
                        help="python of a venv with kserve and onnxruntime (optional; HTTP only)")
    parser.add_argument("--kserve-mode", choices=("sync", "thread"), default="sync",
                        help="KServe predict: sync (documented custom-model form) or in a worker thread")
    parser.add_argument("--grpc", action="store_true", help="also measure over KServe V2 gRPC")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer measurement interval")
    parser.add_argument("--stability", type=int, default=50, help="perf_analyzer stability percentage")
    parser.add_argument("--max-foreign", type=float, default=0.3,
                        help="drop runs during which other processes used more cores than this")
    parser.add_argument("--offline-s", type=float, default=10.0, help="seconds of the in-process ceiling")
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
    args.protocols = ["http", "grpc"] if args.grpc else ["http"]
    if not perf_analyzer_path().exists():
        raise SystemExit(f"no perf_analyzer at {perf_analyzer_path()}: "
                         "pip install 'tritonclient[http]==2.51.0'")
    benchmark(args)


if __name__ == "__main__":
    main()
