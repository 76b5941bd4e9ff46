"""Service telemetry against emulated boards whose sensor files a writer thread changes: energy rate,
temperatures, throttle flags, model energy attribution, /metrics, /v1/telemetry and its events."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgerun.config import Settings
from edgerun.hal import HostFS
from edgerun.hal.power import PowerReading, captured_runner
from edgerun.hal.thermal import discover_throttle_sources
from edgerun.serving import ModelConfig, ServeConfig, create_app
from edgerun.telemetry.attribution import Execution, ExecutionRecorder, attribute
from edgerun.telemetry.energy import EnergyCounter
from edgerun.telemetry.prometheus import TelemetryCollector
from edgerun.telemetry.sampler import TelemetrySampler
from edgerun.telemetry.summary import telemetry_json

from .camera_helpers import read_sse, wait_for
from .helpers import (
    ORIN_NANO_HWMON,
    REPO,
    SensorDriver,
    copy_device_tree,
    orin_nano_power_files,
    write_tree,
)
from .serving_helpers import ServerThread, classify_sample

S = 1_000_000_000
VOLT1, CURR1 = f"{ORIN_NANO_HWMON}/in1_input", f"{ORIN_NANO_HWMON}/curr1_input"
OC = "/sys/class/hwmon/hwmon3"
CPU_ZONE = "/sys/class/thermal/thermal_zone0/temp"
TJ_ZONE = "/sys/class/thermal/thermal_zone6/temp"      # tj-thermal, passive trip at 99 °C


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    text = http.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def orin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServerThread]]:
    """An emulated Orin Nano (VDD_IN at 5.000 V, 4 W) serving mobilenet_v2 on onnxruntime."""
    root = copy_device_tree("jetson-orin-nano", tmp_path_factory.mktemp("orin"))
    write_tree(root, {VOLT1: "5000", CURR1: "800"})
    model = ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1)
    app = create_app(ServeConfig(settings=Settings(host_root=root), models=(model,)))
    with ServerThread(app) as server:
        server.wait_ready()
        yield root, server


def test_alternating_4_and_6_watts_gives_5_watts_in_the_energy_rate(orin: tuple[Path, ServerThread]) -> None:
    root, server = orin
    # 4 W and 6 W for 0.5 s each, for 10 s: any 6 s window holds six whole periods (5.0 W).
    driver = SensorDriver(root, [(0.5 * k, {CURR1: "1200" if k % 2 else "800"}) for k in range(20)])
    driver.start()
    try:
        with server.client() as http:
            time.sleep(1.0)
            first, t_first = scrape(http), time.monotonic()
            time.sleep(6.0)
            last, t_last = scrape(http), time.monotonic()
    finally:
        driver.stop()
    key = ("edgerun_energy_joules_total", (("rail", "VDD_IN"), ("sensor", "jetson-ina3221")))
    rate = (last[key] - first[key]) / (t_last - t_first)
    assert rate == pytest.approx(5.0, rel=0.05)
    total = ("edgerun_energy_joules_total", (("rail", "total"), ("sensor", "jetson-ina3221")))
    assert last[total] == pytest.approx(last[key])              # VDD_IN is the module total
    assert last[("edgerun_power_watts", (("rail", "VDD_IN"), ("sensor", "jetson-ina3221")))] in (4.0, 6.0)
    assert not any(name.endswith("_created") for name, _ in last)
    assert ("process_resident_memory_bytes", ()) in last and ("process_cpu_seconds_total", ()) in last


def test_temperatures_as_written_and_throttling_decoded(orin: tuple[Path, ServerThread]) -> None:
    root, server = orin
    oc3 = [(0.3 * k, {f"{OC}/oc3_event_cnt": str(k)}) for k in range(1, 12)]   # rising for 3.3 s
    driver = SensorDriver(root, [(0.0, {CPU_ZONE: "61500", TJ_ZONE: "99500"}), *oc3])
    driver.start()
    throttled = ("edgerun_throttled", (("reason", "over_current_instant"),))
    try:
        with server.client() as http:
            wait_for(lambda: scrape(http).get(throttled) == 1.0, 10, "over-current throttling reported")
            metrics = scrape(http)
            assert metrics[("edgerun_temperature_celsius", (("zone", "cpu-thermal"),))] == 61.5
            assert metrics[("edgerun_temperature_celsius", (("zone", "tj-thermal"),))] == 99.5
            assert metrics[("edgerun_throttled", (("reason", "thermal_trip"),))] == 1.0
            assert metrics[("edgerun_throttled", (("reason", "under_voltage"),))] == 0.0
            body = http.get("/v1/telemetry").json()
            assert body["temperatures_c"]["cpu-thermal"] == 61.5
            assert body["throttle_sources"] == ["soctherm_oc"] and body["throttled"]["thermal_trip"]
            driver.join(timeout=10)
            write_tree(root, {TJ_ZONE: "48843"})
            wait_for(lambda: scrape(http).get(throttled) == 0.0, 10, "the counter stopped rising")
            assert scrape(http)[("edgerun_throttled", (("reason", "thermal_trip"),))] == 0.0
    finally:
        driver.stop()
        write_tree(root, {CPU_ZONE: "46531", TJ_ZONE: "48843"})


def test_telemetry_json_and_one_event_per_second(orin: tuple[Path, ServerThread]) -> None:
    _, server = orin
    with server.client() as http:
        body = http.get("/v1/telemetry", params={"history": "true"}).json()
        events = read_sse(http, "/v1/telemetry/events", 2, kind="telemetry", timeout=10)
    sensor = body["sensors"][0]
    assert sensor["name"] == "jetson-ina3221" and sensor["simulated"] is True
    assert sensor["rails"] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert body["cpu_frequency_hz"] == {f"cpu{i}": 1.728e9 for i in range(6)}
    assert body["accelerator_percent"] == {"gpu0": 0.0}
    assert "power" not in body["missing"] and body["history"]
    assert [e["id"] for e in events] == ["1", "2"]
    assert events[1]["data"]["sensors"][0]["energy_j"] > events[0]["data"]["sensors"][0]["energy_j"]


def test_attribution_of_a_known_schedule() -> None:
    constant = [(0, 5.0), (1 * S, 5.0), (2 * S, 5.0)]
    overlap = attribute(constant, [Execution("a", 0, 1 * S), Execution("b", S // 2, 3 * S // 2)], 3.0)
    # 2 W above idle: a alone 0.5 s, a and b together 0.5 s (1 J split), b alone 0.5 s.
    assert overlap.model_joules == pytest.approx({"a": 1.5, "b": 1.5})
    assert (overlap.idle_seconds, overlap.idle_joules) == pytest.approx((0.5, 2.5))

    ramp = attribute([(0, 3.0), (1 * S, 5.0)], [Execution("a", S // 2, 1 * S)], 3.0)
    assert ramp.model_joules == pytest.approx({"a": 0.75})        # (4.5 W - 3 W) x 0.5 s
    assert (ramp.idle_seconds, ramp.idle_joules) == pytest.approx((0.5, 1.75))

    three = attribute([(0, 6.0), (1 * S, 6.0)], [Execution("a", 0, S), Execution("a", 0, S),
                                                 Execution("b", 0, S)], 3.0)
    assert three.model_joules == pytest.approx({"a": 2.0, "b": 1.0})
    assert attribute([(0, 2.0), (S, 2.0)], [Execution("a", 0, S)], 3.0).model_joules == {"a": 0.0}
    assert attribute(constant, [Execution("a", 0, S)], None).model_joules == {}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_sampler_attributes_an_execution_once_it_ends(tmp_path: Path) -> None:
    root = write_tree(tmp_path, orin_nano_power_files(3.0))
    clock = FakeClock()
    sampler = TelemetrySampler(root, recorder=ExecutionRecorder(clock), runner=captured_runner({}),
                               clock=clock)
    sampler.discover()

    def tick(at_s: float, watts: float) -> None:
        write_tree(root, orin_nano_power_files(watts))
        clock.now = int(at_s * S)
        sampler.power_tick()

    tick(0, 3.0)
    tick(1, 3.0)                                   # 1 s idle: baseline 3 W
    assert sampler.idle.watts == pytest.approx(3.0)
    clock.now = 1 * S
    key = sampler.recorder.begin("m")
    tick(2, 5.0)
    assert sampler.model_joules() == {}            # still running: [1 s, 2 s] waits for it
    clock.now = 3 * S
    sampler.recorder.end(key)
    tick(3, 5.0)
    # [1, 2] s ramps 3 -> 5 W (1 J above idle), [2, 3] s at 5 W (2 J above idle)
    assert sampler.model_joules() == pytest.approx({"m": 3.0})
    assert sampler.latencies_ns("m", 0) == [2 * S]


def test_no_sensor_reports_why_once_and_exports_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    sampler = TelemetrySampler(tmp_path, runner=captured_runner({}))
    with caplog.at_level(logging.WARNING, logger="edgerun.telemetry"):
        sampler.discover()
        for _ in range(3):
            sampler.power_tick()
            sampler.thermal_tick()
    assert [r.getMessage() for r in caplog.records if "no power sensor" in r.getMessage()] == [
        "telemetry: " + sampler.hardware.power_missing]  # type: ignore[union-attr]
    body = telemetry_json(sampler)
    assert body["sensors"] == [] and body["missing"]["power"].startswith("no power sensor found: ")
    assert "throttling" in body["missing"] and "temperature" in body["missing"]
    registry = CollectorRegistry()
    registry.register(TelemetryCollector(sampler))
    text = generate_latest(registry).decode()
    for name in ("edgerun_power_watts", "edgerun_energy_joules", "edgerun_model_energy", "edgerun_throttled",
                 "edgerun_temperature_celsius", "edgerun_idle_power_watts"):
        assert name not in text


def test_throttle_bits_from_the_pi_firmware_file_and_vcgencmd(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "pi", {"/sys/devices/platform/soc/soc:firmware/get_throttled": "50005"})
    sources, _ = discover_throttle_sources(HostFS(root), captured_runner({}))
    flags = sources[0].read()
    assert flags is not None
    assert {r for r, on in flags.items() if on} == {"under_voltage", "throttled", "under_voltage_since_boot",
                                                   "throttled_since_boot"}
    sources, _ = discover_throttle_sources(HostFS(write_tree(tmp_path / "vc", {"/etc/hostname": "pi"})),
                                           captured_runner({"vcgencmd get_throttled": "throttled=0x80008\n"}))
    flags = sources[0].read()
    assert flags is not None and sources[0].name == "vcgencmd get_throttled"
    assert {r for r, on in flags.items() if on} == {"soft_temperature_limit",
                                                   "soft_temperature_limit_since_boot"}
    none, why = discover_throttle_sources(HostFS(tmp_path / "vc"), captured_runner({}))
    assert none == [] and why.startswith("no throttle flags")


def _expressions(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def test_every_grafana_expression_references_an_exported_metric(orin: tuple[Path, ServerThread]) -> None:
    root, server = orin
    dashboard = json.loads((REPO / "deploy/grafana/edgerun-telemetry.json").read_text())
    with server.client() as http:
        classify_sample(http)
        write_tree(root, {"/proc/stat": "cpu  284210 320 62344 5120998 2301 0 1433 0 0 0"})
        wait_for(lambda: ("edgerun_cpu_utilization_ratio", ()) in scrape(http), 10, "CPU utilisation")
        exported = {name for name, _ in scrape(http)}
    expressions = [e for e in _expressions(dashboard) if e != "prometheus"]
    assert len(expressions) >= 15
    for expression in expressions:
        names = set(re.findall(r"\b((?:edgerun|process)_[a-z0-9_]+)\b", expression))
        names |= set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expression))
        assert names, expression
        assert names <= exported, f"{expression}: {sorted(names - exported)} not in /metrics"


def test_energy_counter_across_a_rapl_wrap_and_a_counter_reset(tmp_path: Path) -> None:
    zone = "/sys/class/powercap/intel-rapl:0"
    root = write_tree(tmp_path, {f"{zone}/name": "package-0", f"{zone}/energy_uj": "200000",
                                 f"{zone}/max_energy_range_uj": "250000"})     # wraps every 0.25 J
    clock = FakeClock()
    sampler = TelemetrySampler(root, runner=captured_runner({}), clock=clock)
    sampler.discover()
    for k in range(12):                          # +25 mJ every 10 ms (2.5 W), wrapping twice
        write_tree(root, {f"{zone}/energy_uj": str((200_000 + 25_000 * k) % 250_000)})
        clock.now = k * 10_000_000
        sampler.power_tick()
    row = sampler.sensors()[0]
    assert row["name"] == "rapl" and row["unit"] == "J"
    assert row["energy_j"] == pytest.approx(11 * 0.025)
    assert row["rail_energy_j"] == pytest.approx({"package-0": 11 * 0.025})
    assert row["watts"] == pytest.approx(2.5)

    counter = EnergyCounter()                    # a counter that restarts (driver reload) counts 0
    for t, joules in ((0, 100.0), (S, 104.0), (2 * S, 1.0), (3 * S, 3.0)):
        counter.add(t, PowerReading(joules, "J", {"gpu0": joules}))
    assert counter.total_j == pytest.approx(6.0) and counter.rails_j == pytest.approx({"gpu0": 6.0})


def test_telemetry_turned_off_answers_404_and_records_nothing() -> None:
    from fastapi import FastAPI

    from edgerun.serving.errors import install_error_handlers
    from edgerun.serving.service import Service
    from edgerun.serving.telemetry import install_telemetry
    from edgerun.telemetry.attribution import NullRecorder

    app = FastAPI()
    install_error_handlers(app)
    service = Service(ServeConfig(settings=Settings(), models=()))
    app.state.service = service  # what ServerThread configures uvicorn from, as create_app sets it
    assert install_telemetry(app, service, enabled=False) is None
    assert isinstance(service.metrics.executions, NullRecorder)
    with ServerThread(app) as server, server.client() as http:
        for path in ("/v1/telemetry", "/v1/telemetry/events"):
            answer = http.get(path)
            assert answer.status_code == 404
            assert answer.json() == {"error": "telemetry is disabled in the service config "
                                              "(telemetry.enabled)"}
    assert "edgerun_power_watts" not in service.metrics.render()[0].decode()


def test_model_energy_end_to_end_when_power_rises_during_inference(tmp_path: Path) -> None:
    root = copy_device_tree("jetson-orin-nano", tmp_path)
    write_tree(root, {VOLT1: "5000", CURR1: "800"})                                  # 4 W idle
    model = ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1)
    with ServerThread(create_app(ServeConfig(settings=Settings(host_root=root), models=(model,)))) as server:
        server.wait_ready()
        with server.client() as http:
            wait_for(lambda: abs((http.get("/v1/telemetry").json()["idle_w"] or 0) - 4.0) < 1e-9, 10,
                     "the idle baseline")
            write_tree(root, {CURR1: "1800"})                                         # 9 W while busy
            time.sleep(0.3)
            classify_sample(http, 30)
            write_tree(root, {CURR1: "800"})
            wait_for(lambda: http.get("/v1/telemetry").json()["models"][0]["executions"] == 30, 10, "30 runs")
            time.sleep(1.2)                                           # one more window point
            row = http.get("/v1/telemetry").json()["models"][0]
            metrics = scrape(http)
    joules = metrics[("edgerun_model_energy_joules_total", (("model", "mobilenet_v2"),))]
    assert metrics[("edgerun_model_inferences_total", (("model", "mobilenet_v2"),))] == 30
    assert row["name"] == "mobilenet_v2" and row["inferences"] == 30 and row["energy_j"] == joules
    # 5 W above the 4 W baseline while executions ran; the baseline drifts up with the busy
    # board's short gaps between requests (counted idle), so allow from 1 W to 5 W above it.
    p50_s = row["latency_ms"]["p50"] / 1000
    assert 30 * 1.0 * p50_s * 0.5 < joules <= 30 * 5.0 * row["latency_ms"]["p99"] / 1000 * 1.1
    assert row["energy_per_inference_j"] == pytest.approx(joules / 30)


def _brute_force(samples: list[tuple[int, float]], executions: list[Execution], idle_w: float
                 ) -> dict[str, float]:
    """The same method unit by unit of time (every schedule point is an integer)."""
    joules: dict[str, float] = {}
    for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False):
        for t in range(t0, t1):
            p0, p1 = (w0 + (w1 - w0) * (t - t0) / (t1 - t0), w0 + (w1 - w0) * (t + 1 - t0) / (t1 - t0))
            running = [e.model for e in executions if e.start_ns <= t and e.end_ns >= t + 1]
            above = max(0.0, (p0 + p1) / 2 / 1e9 - idle_w / 1e9)
            for model in running:
                joules[model] = joules.get(model, 0.0) + above / len(running)
    return joules


@pytest.mark.parametrize("seed", range(10))
def test_attribution_agrees_with_a_brute_force_sweep(seed: int) -> None:
    import random

    rng = random.Random(seed)
    times = sorted(rng.sample(range(1, 400), 6))
    samples = [(t, rng.uniform(4.5, 9.0)) for t in [0, *times, 400]]   # above idle: no clamping
    executions = []
    for _ in range(rng.randint(1, 8)):
        start = rng.randint(0, 390)
        executions.append(Execution(rng.choice("abc"), start, rng.randint(start + 1, 400)))
    got = attribute(samples, executions, 4.0).model_joules
    expected = _brute_force(samples, executions, 4.0)
    assert set(got) == {e.model for e in executions}
    for model in got:
        assert got[model] == pytest.approx(expected.get(model, 0.0), rel=1e-9, abs=1e-18)


def test_each_v2_request_and_image_prediction_counts_once(orin: tuple[Path, ServerThread]) -> None:
    _, server = orin
    key = ("edgerun_model_inferences_total", (("model", "mobilenet_v2"),))
    body = {"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                        "data": [0.0] * (3 * 224 * 224)}]}
    with server.client() as http:
        before = scrape(http).get(key, 0.0)
        for _ in range(3):
            assert http.post("/v2/models/mobilenet_v2/infer", json=body).status_code == 200
        classify_sample(http)
        assert scrape(http)[key] - before == 4
