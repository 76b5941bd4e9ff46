"""The one configuration file: formats, where it is found, environment overrides, typed errors naming the
key (property-tested with hypothesis), `edgerun config check/schema`, the published schema and example."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerun.cli import main
from edgerun.config import Settings
from edgerun.errors import InvalidInputError
from edgerun.serving.config import (
    ModelConfig,
    ServeConfig,
    StreamConfig,
    config_from_mapping,
    config_schema,
    effective_config,
    find_config_file,
    load_config,
    load_options_for,
    triton_settings,
)
from edgerun.serving.config_doc import config_reference
from edgerun.serving.service import check_models

from .helpers import REPO
from .serving_helpers import ServerThread

EXAMPLE = REPO / "deploy" / "config.example.yaml"
SCHEMA = REPO / "docs" / "schema" / "config.schema.json"
CONTENT = {"server": {"host": "0.0.0.0", "port": 9000, "graceful_timeout_s": 0.9},
           "limits": {"max_connections": 50},
           "models": [{"name": "mobilenet_v2", "backend": "litert", "threads": 2},
                      {"path": "/opt/models/yolo.onnx", "device": "usb:1", "options": {"xnnpack": True}}],
           "streams": [{"source": "rtsp://cam/1", "model": "mobilenet_v2", "fps": 5, "output": "/tmp/f"}],
           "telemetry": {"power_period_s": 0.5}}
TOML = """
[server]
host = "0.0.0.0"
port = 9000
graceful_timeout_s = 0.9
[limits]
max_connections = 50
[[models]]
name = "mobilenet_v2"
backend = "litert"
threads = 2
[[models]]
path = "/opt/models/yolo.onnx"
device = "usb:1"
options = { xnnpack = true }
[[streams]]
source = "rtsp://cam/1"
model = "mobilenet_v2"
fps = 5
output = "/tmp/f"
[telemetry]
power_period_s = 0.5
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_yaml_toml_and_json_files_give_one_configuration(tmp_path: Path) -> None:
    text = yaml.safe_dump(CONTENT)
    files = [_write(tmp_path, "c.yaml", text), _write(tmp_path, "c.toml", TOML),
             _write(tmp_path, "c.yml", text), _write(tmp_path, "c.json", json.dumps(CONTENT))]
    configs = [load_config(path, environ={}) for path in files]
    assert all(c == configs[0] for c in configs)
    config = configs[0]
    assert (config.host, config.port, config.graceful_timeout_s) == ("0.0.0.0", 9000, 0.9)
    assert config.limits.max_connections == 50 and config.telemetry.power_period_s == 0.5
    assert config.models[1] == ModelConfig("yolo", path="/opt/models/yolo.onnx", device="usb:1",
                                           options={"xnnpack": True})
    stream = StreamConfig(source="rtsp://cam/1", model="mobilenet_v2", fps=5, output="/tmp/f")
    assert config.streams == (stream,)
    assert config.streams[0].request_body()["options"] == {"max_fps": 5}


def test_the_file_is_found_by_flag_then_environment_then_etc(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert find_config_file(None, {}, root) is None
    etc = _write(root, "etc/edgerun/config.yaml", "server: {port: 7001}\n")
    assert find_config_file(None, {}, root) == etc
    assert load_config(None, {}, root).port == 7001
    from_env = _write(tmp_path, "env.json", '{"server": {"port": 7002}}')
    assert load_config(None, {"EDGERUN_CONFIG": str(from_env)}, root).port == 7002
    flag = _write(tmp_path, "flag.toml", "[server]\nport = 7003\n")
    assert load_config(flag, {"EDGERUN_CONFIG": str(from_env)}, root).port == 7003


def test_edgerun_serve_reads_the_default_file_under_root(tmp_path: Path) -> None:
    from edgerun.cli import build_parser
    from edgerun.cli.serve import build_config

    _write(tmp_path, "etc/edgerun/config.yaml", "server: {port: 7004}\nmodels: [blazeface]\n")
    config = build_config(build_parser().parse_args(["serve", "--root", str(tmp_path), "--host", "0.0.0.0"]))
    assert (config.host, config.port, [m.name for m in config.models]) == ("0.0.0.0", 7004, ["blazeface"])


def test_environment_variables_override_single_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", yaml.safe_dump(CONTENT))
    env = {"EDGERUN_LIMITS__MAX_CONNECTIONS": "200", "EDGERUN_MODELS__0__THREADS": "4",
           "EDGERUN_AUTH__ALLOWED_ORIGINS": '["https://a.example"]', "EDGERUN_SERVER__ACCESS_LOG": "false",
           "EDGERUN_API_KEY": "ключ-ключ-ключ", "EDGERUN_BACKEND": "litert"}  # the last: a process setting
    config = load_config(path, environ=env)
    assert config.limits.max_connections == 200 and config.models[0].threads == 4
    assert config.auth.allowed_origins == ("https://a.example",) and config.access_log is False
    assert config.api_key == "ключ-ключ-ключ" and config.settings.backend == "litert"
    for variable, value, message in (("EDGERUN_MODELS__7__THREADS", "1", "no item '7'"),
                                     ("EDGERUN_LIMITS__MAX_CONNECTIONS", "many", "limits.max_connections"),
                                     ("EDGERUN_SERVER__NOPE", "1", "server.nope: unknown key"),
                                     ("EDGERUN_SERVER__HOST__X", "1", "not a mapping")):
        with pytest.raises(InvalidInputError, match=message):
            load_config(path, environ={variable: value})
    with pytest.raises(InvalidInputError, match="EDGERUN_STREAMS__0__FPS: no list item 0"):
        load_config(None, environ={"EDGERUN_STREAMS__0__FPS": "1"}, root=tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    ({"server": {"graceful_timeout_s": math.inf}}, "server.graceful_timeout_s: Input should be a finite"),
    ({"server": {"graceful_timeout_s": math.nan}}, "server.graceful_timeout_s: Input should be a finite"),
    ({"server": {"graceful_timeout_s": 0}}, "server.graceful_timeout_s: Input should be greater than 0"),
    ({"server": "0.0.0.0"}, "server: Input should be a dictionary"),
    ({"models": {"name": "x"}}, "models: Input should be a valid"),
    ({"models": [{"name": "x", "threads": 1.5}]}, "models[0].threads: Input should be a valid integer"),
    ({"models": [{"name": "x", "options": [1]}]}, "models[0].options: Input should be a valid dictionary"),
    ({"models": [{"backend": "onnxruntime"}]}, "models[0].name: Field required"),
    ({"models": ["a", "a"]}, "models served twice under one name: ['a']"),
    ({"streams": [{"model": "x"}]}, "streams[0].source: Field required"),
    ({"streams": [{"source": "0", "options": {"max_fps": -1}}]}, "streams[0].options.max_fps"),
    ({"streams": [{"source": "0", "output": "out.txt"}]}, "streams[0].output: use a video file (.mp4"),
    ({"limits": {"max_header_bytes": 10}}, "limits.max_header_bytes: Input should be greater than or equal"),
    ({"settings": {}}, "settings: unknown key"),
])
def test_a_wrong_value_is_one_error_naming_its_key(content: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        config_from_mapping(content, "config.yaml")
    assert str(raised.value).startswith("config.yaml: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_1e400_in_a_yaml_or_json_file_is_refused(tmp_path: Path) -> None:
    for path in (_write(tmp_path, "c.yaml", "server:\n  graceful_timeout_s: 1e400\n"),
                 _write(tmp_path, "c.json", '{"server": {"graceful_timeout_s": 1e400}}')):
        with pytest.raises(InvalidInputError, match="graceful_timeout_s: Input should be a finite number"):
            load_config(path, environ={})


@pytest.mark.parametrize(("name", "text", "message"), [
    ("c.yaml", "server: [1, 2", "is not valid YAML"), ("c.json", "{", "is not valid JSON"),
    ("c.toml", "[server", "is not valid TOML"), ("c.yaml", "- 1\n- 2\n", "must hold a mapping"),
    ("c.ini", "[server]", "unknown type '.ini'"),
    ("c.yaml", "x: !!python/object:os.system {}", "not valid YAML"),
])
def test_unreadable_files_are_one_clear_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_config(_write(tmp_path, name, text), environ={})
    with pytest.raises(InvalidInputError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_only_a_regular_file_of_bounded_size_is_read(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "dir.yaml").mkdir()
    for name in ("fifo.yaml", "zero.yaml", "dir.yaml"):
        with pytest.raises(InvalidInputError, match="not a regular file"):
            load_config(tmp_path / name, environ={})
    big = _write(tmp_path, "big.yaml", "# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(InvalidInputError, match="larger than 1048576 bytes"):
        load_config(big, environ={})


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
KEYS = st.sampled_from(["server", "auth", "limits", "models", "streams", "telemetry", "port", "host", "name",
                        "path", "source", "options", "threads", "api_key", "max_connections", "fps", "x"])
TREES = st.recursive(JSON_VALUES, lambda children: st.dictionaries(KEYS, children, max_size=5) |
                     st.lists(children, max_size=3), max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.dictionaries(KEYS, TREES, max_size=6), environ=st.dictionaries(
    st.sampled_from(["EDGERUN_SERVER__PORT", "EDGERUN_MODELS__0__NAME", "EDGERUN_LIMITS__X",
                     "EDGERUN_AUTH__ALLOWED_ORIGINS", "EDGERUN_API_KEY", "EDGERUN_A__B__C"]),
    st.text(max_size=10), max_size=3))
def test_any_content_gives_a_configuration_or_one_clear_error(content: dict[str, Any],
                                                              environ: dict[str, str]) -> None:
    from edgerun.serving.config import apply_env_overrides

    try:
        config = config_from_mapping(apply_env_overrides(content, environ), "fuzz")
    except InvalidInputError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return
    assert isinstance(config, ServeConfig)
    json.dumps(effective_config(config))  # printable by `edgerun config check`


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_any_file_text_gives_a_configuration_or_one_clear_error(tmp_path_factory: pytest.TempPathFactory,
                                                                text: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    for suffix in (".yaml", ".json", ".toml"):
        path = folder / f"config{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            assert isinstance(load_config(path, environ={}), ServeConfig)
        except InvalidInputError as exc:
            assert "\n" not in str(exc)


def test_load_options_for_carries_backend_device_and_options() -> None:
    model = ModelConfig("m", backend="edgetpu", device="usb:1", options={"threads": 2})
    options = load_options_for(model, Settings(threads=3))
    assert options.threads == 3 and options.options is not None
    assert load_options_for(ModelConfig("m", threads=5), Settings(threads=3), 1).threads == 5
    assert load_options_for(ModelConfig("m"), Settings(), 7).threads == 7


def test_triton_settings_show_backend_device_and_options() -> None:
    effective = {"backend": "edgetpu", "device": "usb:1", "options": {"threads": 1, "library": None}}
    shown = triton_settings(effective, on_cpu=False)
    assert shown["parameters"]["backend"] == {"string_value": "edgetpu"}
    assert shown["parameters"]["device"] == {"string_value": "usb:1"}
    (accelerator,) = shown["optimization"]["execution_accelerators"]["gpu_execution_accelerator"]
    assert accelerator == {"name": "edgetpu", "parameters": {"device": "usb:1", "threads": "1"}}


def test_served_model_config_carries_the_effective_settings(served: ServerThread) -> None:
    with served.client() as http:
        config = http.get("/v2/models/mobilenet_v2/config").json()
    assert config["parameters"]["backend"] == {"string_value": "onnxruntime"}
    assert config["parameters"]["threads"] == {"string_value": "1"}
    (accelerator,) = config["optimization"]["execution_accelerators"]["cpu_execution_accelerator"]
    assert accelerator["name"] == "onnxruntime"


def test_config_check_prints_the_effective_configuration(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "c.yaml", yaml.safe_dump({**CONTENT, "auth": {"api_key": "s3cret-key"}}))
    assert main(["config", "check", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["auth"]["api_key"] == "***" and shown["server"]["port"] == 9000
    assert shown["limits"]["header_timeout_s"] == 10.0   # defaults filled in
    assert main(["config", "check", str(path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == shown


def test_config_check_reports_a_wrong_type_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", "limits:\n  max_connections: lots\n")
    done = subprocess.run([sys.executable, "-m", "edgerun", "config", "check", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"edgerun: error: {path}: limits.max_connections: Input should be a valid "
                                  "integer") and done.stderr.count("\n") == 1, done.stderr


def test_the_published_schema_and_reference_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_schema() == json.loads(SCHEMA.read_text()), \
        "regenerate: edgerun config schema > docs/schema/config.schema.json"
    reference = (REPO / "docs" / "configuration.md").read_text()
    assert config_reference() in reference, \
        "regenerate the tables of docs/configuration.md with: edgerun config schema --markdown"
    assert set(printed["properties"]) == {"server", "auth", "limits", "models", "streams", "telemetry"}


def test_the_example_file_is_valid_and_names_shipped_models() -> None:
    config = load_config(EXAMPLE, environ={})
    check_models(config)  # every model is a package that exists
    commented = yaml.safe_load(EXAMPLE.read_text())
    defaults = effective_config(ServeConfig(settings=Settings()))
    for section in ("server", "auth", "limits", "telemetry"):  # the example states the defaults
        assert commented[section] == defaults[section], section


def test_a_configured_stream_writes_annotated_frames_to_its_output(clip: Path, tmp_path: Path) -> None:
    from edgerun.serving import create_app

    from .camera_helpers import wait_for

    frames = tmp_path / "frames"
    config = config_from_mapping({
        "models": [{"name": "blazeface", "backend": "onnxruntime", "threads": 1}],
        "streams": [{"source": str(clip), "model": "blazeface", "fps": 20, "output": str(frames),
                     "options": {"realtime": False}}]}, "test", Settings())
    with ServerThread(create_app(config)) as server, server.client() as client:
        server.wait_ready()
        wait_for(lambda: len(list(frames.glob("*.jpg"))) >= 2, 20, "JPEG frames in the output folder")
        (stream,) = client.get("/v1/streams").json()["streams"]
        assert stream["model"] == "blazeface"
    first = sorted(frames.glob("*.jpg"))[0].read_bytes()
    assert first[:3] == b"\xff\xd8\xff"  # JPEG


def test_deployments_read_the_config_from_etc_edgerun() -> None:
    unit = (REPO / "systemd" / "edgerun.service").read_text()
    assert "ConfigurationDirectory=edgerun" in unit and 'EDGERUN_SERVE_ARGS="' in unit  # no --host/--port
    for compose in ("cpu", "jetson", "rpi", "coral-usb", "coral-pcie"):
        service = yaml.safe_load((REPO / f"docker/compose/{compose}.yaml").read_text())["services"]["edgerun"]
        assert "${EDGERUN_CONFIG_DIR:-/etc/edgerun}:/etc/edgerun:ro" in service["volumes"], compose
    for manifest in sorted((REPO / "deploy" / "k3s").glob("daemonset-*.yaml")):
        pod = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/etc/edgerun"]]["configMap"] == {"name": "edgerun-config", "optional": True}
