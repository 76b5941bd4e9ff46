"""KServe V2 over gRPC (`edgerun serve --grpc-port`): tritonclient.grpc and `perf_analyzer -i grpc` against
the same data plane as HTTP; results equal the in-process session's, errors are gRPC status codes."""

from __future__ import annotations

import platform
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from edgerun.backends.base import Session
from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app
from edgerun.serving.config import AuthConfig, ServerConfig

from .serving_helpers import API_KEY, V2_SAMPLES, ServerThread, shared_config
from .test_serving_clients import PERF_ANALYZER, cuda_runtime_env
from .test_serving_ops import ServeProcess


@pytest.fixture(scope="module")
def grpc_served(echo_model: Path) -> Iterator[tuple[ServerThread, str]]:
    """The shared models with the gRPC front end on a free port; yields (server, gRPC address)."""
    config = shared_config(echo_model)
    app = create_app(ServeConfig(settings=Settings(), models=config.models, server=ServerConfig(grpc_port=0)))
    with ServerThread(app) as server:
        server.wait_ready()
        yield server, f"127.0.0.1:{app.state.grpc_port}"


def client(grpc_served: tuple[ServerThread, str]) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(grpc_served[1])


def tensor(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    item = triton.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def test_metadata_config_and_readiness_over_grpc(grpc_served: tuple[ServerThread, str],
                                                 references: dict[str, Session]) -> None:
    grpc_client = client(grpc_served)
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("mobilenet_v2")
    assert grpc_client.get_server_metadata().name == "edgerun"
    metadata = grpc_client.get_model_metadata("mobilenet_v2")
    assert [(t.name, list(t.shape)) for t in metadata.inputs] == [("input", [-1, 3, 224, 224])]
    config = grpc_client.get_model_config("mobilenet_v2").config
    assert config.max_batch_size == 8 and [list(i.dims) for i in config.input] == [[3, 224, 224]]
    assert config.instance_group[0].count == 2


def test_grpc_infer_equals_the_in_process_session(grpc_served: tuple[ServerThread, str],
                                                  references: dict[str, Session]) -> None:
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32)
    result = client(grpc_served).infer("mobilenet_v2", [tensor("input", x, "FP32")])
    expected = references["mobilenet_v2"].infer({"input": x})["logits"]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    top = client(grpc_served).infer("mobilenet_v2", [tensor("input", x[:1], "FP32")],
                                    outputs=[triton.InferRequestedOutput("logits", class_count=2)])
    best = int(np.argmax(expected[0]))
    assert top.as_numpy("logits")[0][0].decode().split(":")[1] == str(best)


def test_every_v2_datatype_through_grpc_raw_contents(grpc_served: tuple[ServerThread, str]) -> None:
    inputs = [tensor(f"in_{t}", array, t) for t, array in V2_SAMPLES.items()]
    result = client(grpc_served).infer("echo", inputs)
    for datatype, array in V2_SAMPLES.items():
        got = result.as_numpy(f"out_{datatype}")
        assert got.shape == array.shape and got.tolist() == array.tolist(), datatype


def test_typed_contents_decode_like_raw_contents(grpc_served: tuple[ServerThread, str]) -> None:
    """Clients that send InferTensorContents (not raw bytes) get the same answer."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_served[1]))
    request = service_pb2.ModelInferRequest(model_name="echo")
    for datatype, array in V2_SAMPLES.items():
        if datatype == "FP16":
            continue  # FP16 has no typed field: raw only
        item = request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=list(array.shape))
        field = {"BOOL": "bool", "FP32": "fp32", "FP64": "fp64", "BYTES": "bytes", "INT64": "int64",
                 "UINT64": "uint64"}.get(datatype, "int" if datatype.startswith("INT") else "uint")
        getattr(item.contents, f"{field}_contents").extend(array.reshape(-1).tolist())
    request.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 2])
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 data must travel in raw_input_contents" in refused.value.details()
    request.inputs.pop()
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelInfer(request)
    assert "missing input(s) ['in_FP16']" in missing.value.details()


def test_grpc_errors_are_status_codes_with_the_http_messages(grpc_served: tuple[ServerThread, str]) -> None:
    grpc_client = client(grpc_served)
    x = np.zeros((1, 3, 224, 224), dtype=np.float32)
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.infer("no_such_model", [tensor("input", x, "FP32")])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as shape:
        grpc_client.infer("mobilenet_v2", [tensor("input", x[:, :, :100], "FP32")])
    assert shape.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "has shape [1, 3, 100, 224]" in shape.value.message()
    with pytest.raises(InferenceServerException) as wrong_type:
        grpc_client.infer("mobilenet_v2", [tensor("input", x.astype(np.float64), "FP64")])
    assert "must be FP32" in wrong_type.value.message()
    stats = grpc_client.get_inference_statistics("mobilenet_v2").model_stats[0]
    assert stats.inference_stats.fail.count >= 2


def test_grpc_checks_the_api_key(echo_model: Path) -> None:
    config = ServeConfig(settings=Settings(), auth=AuthConfig(api_key=API_KEY),
                         server=ServerConfig(grpc_port=0),
                         models=(ModelConfig("blazeface", backend="onnxruntime", threads=1),))
    app = create_app(config)
    with ServerThread(app, headers={"Authorization": f"Bearer {API_KEY}"}) as server:
        server.wait_ready()
        grpc_client = triton.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        with pytest.raises(InferenceServerException) as refused:
            grpc_client.get_model_metadata("blazeface")
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        metadata = grpc_client.get_model_metadata("blazeface", headers={"authorization": f"Bearer {API_KEY}"})
        assert metadata.name == "blazeface"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(platform.machine() != "x86_64",
                    reason="perf_analyzer ships only in tritonclient's x86_64 manylinux wheel")
def test_perf_analyzer_over_grpc_against_edgerun_serve() -> None:
    grpc_port = free_port()
    server = ServeProcess("--model", "mobilenet_v2", "--grpc-port", str(grpc_port))
    try:
        server.port()
        deadline = time.monotonic() + 60
        while not triton.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_server_ready():
            assert time.monotonic() < deadline and server.process.poll() is None, "".join(server.log)
            time.sleep(0.1)
        command = [str(PERF_ANALYZER), "-m", "mobilenet_v2", "-u", f"127.0.0.1:{grpc_port}", "-i", "grpc",
                   "--measurement-mode", "count_windows", "--measurement-request-count", "20",
                   "--stability-percentage", "100", "--max-trials", "5"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=cuda_runtime_env())
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        served = re.search(r"Server:\s+Inference count: (\d+)", output)
        assert served and int(served.group(1)) > 0, output
    finally:
        server.stop()


def test_grpc_port_from_the_config_file_and_the_command_line(tmp_path: Path) -> None:
    from edgerun.cli import build_parser
    from edgerun.cli.serve import build_config
    from edgerun.errors import InvalidInputError
    from edgerun.serving import load_config

    config = tmp_path / "serve.json"
    config.write_text('{"server": {"grpc_port": 8001}}')
    assert load_config(config).grpc_port == 8001
    assert load_config(None).grpc_port is None  # off unless asked for
    args = build_parser().parse_args(["serve", "--config", str(config), "--grpc-port", "9001"])
    assert build_config(args).grpc_port == 9001
    config.write_text('{"server": {"grpc_port": 70000}}')
    with pytest.raises(InvalidInputError, match="server.grpc_port"):
        load_config(config)


def _infer_request(raw: list[bytes], **fields: object) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="echo", id="r-1", **fields)
    request.parameters["priority"].int64_param = 3
    for index, blob in enumerate(raw):
        request.inputs.add(name=f"in_{index}", datatype="UINT8", shape=[1, len(blob)])
        request.raw_input_contents.append(blob)
    request.outputs.add(name="out_FP32")
    return request


def test_raw_contents_are_split_off_without_changing_the_rest() -> None:
    from edgerun.serving.grpc_v2 import split_raw_contents

    blobs = [b"\x00" * 300, bytes(range(256)) * 700, b""]
    message = _infer_request(blobs).SerializeToString()
    split = split_raw_contents(message)
    assert split is not None
    rest, raw = split
    assert [bytes(view) for view in raw] == blobs
    assert all(view.obj is message for view in raw)  # views of the message: no copy
    expected = _infer_request(blobs)
    del expected.raw_input_contents[:]
    assert service_pb2.ModelInferRequest.FromString(rest) == expected


def test_malformed_infer_messages_are_invalid_argument_and_the_server_stays_up(
        grpc_served: tuple[ServerThread, str]) -> None:
    from google.protobuf.message import DecodeError

    from edgerun.errors import InvalidInputError
    from edgerun.serving.grpc_v2 import split_raw_contents

    message = _infer_request([b"\x01" * 1000]).SerializeToString()
    cut_at = [1, 5, 20, len(message) - 500, len(message) - 1]
    not_utf8 = message[:3] + b"\xff" + message[4:]  # in the model name
    broken = [message[:cut] for cut in cut_at] + [b"\xff" * 12, not_utf8]
    for data in broken:
        with pytest.raises((InvalidInputError, DecodeError)):
            split = split_raw_contents(data)
            assert split is not None
            service_pb2.ModelInferRequest.FromString(split[0])
    with grpc.insecure_channel(grpc_served[1]) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for data in broken:
            with pytest.raises(grpc.RpcError) as error:
                infer(data, timeout=10)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, data[:40]
        # a million two-byte fields: the scan gives up after MAX_SPLIT_FIELDS and protobuf parses them
        many = _infer_request([V2_SAMPLES["UINT8"].tobytes()]).SerializeToString() + b"\x18\x01" * 1_000_000
        assert split_raw_contents(many) is None
        with pytest.raises(grpc.RpcError) as error:
            infer(many, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client(grpc_served).is_server_live()
