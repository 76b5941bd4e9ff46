"""`edgerun profile` end to end on the embedded model, with --root pointing at emulated boards."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from edgerun.cli import main
from edgerun.cli.profile import ProgressBar
from edgerun.hal import HostFS
from edgerun.hal.power import captured_runner, parse_pmic_read_adc
from edgerun.profiler import plot
from edgerun.profiler.runner import Host, ProfileConfig, Profiler
from edgerun.repository import BUILTIN_MODELS, ModelRepository

from .helpers import ORIN_NANO_HWMON, SAMPLES, SensorDriver, orin_nano_power_files, write_tree
from .test_power import PI5_PMIC_READ_ADC

FAST = ["--runs", "25", "--warmup", "1", "--threads", "1", "--no-progress"]


def profile(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["profile", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_orin_nano_tree_power_and_energy_in_json_and_table(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    board = write_tree(tmp_path / "orin", orin_nano_power_files(6.5))
    out = tmp_path / "report.json"
    code, stdout, _ = profile(capsys, "--root", str(board), *FAST, "--idle", "0.05", "--power-interval",
                              "0.01", "--output", str(out), "--csv", str(tmp_path / "q.csv"))
    assert code == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "edgerun.profile/1" and report["host"]["emulated"] is True
    run = report["runs"][0]
    power = run["power"]
    assert power["status"] == "ok" and power["sensor"]["name"] == "jetson-ina3221"
    assert power["sensor"]["rails"] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert power["sensor"]["simulated"] is True
    assert power["mean_w"] == pytest.approx(6.5) and power["idle_w"] == pytest.approx(6.5)
    samples, duration = run["scenario"]["samples"], run["scenario"]["duration_s"]
    assert samples == 25
    assert power["energy_per_inference_mj"] == pytest.approx(6.5 * duration / samples * 1000)
    assert power["sampling_rate_hz"] > 0 and power["samples"] >= 2
    images = len(list(SAMPLES.glob("*.*g")))
    assert run["top1_agreement"]["agree"] == run["top1_agreement"]["images"] == images
    assert "6.500 W mean" in stdout and "jetson-ina3221" in stdout
    assert "SIMULATED: read from an emulated" in stdout
    with (tmp_path / "q.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 25 and float(rows[0]["latency_ms"]) > 0


def test_sensor_file_disappearing_mid_run_is_reported_and_the_run_completes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = write_tree(tmp_path, orin_nano_power_files(5.0))
    driver = SensorDriver(board, [(0.15, {f"{ORIN_NANO_HWMON}/curr1_input": None})])
    driver.start()
    code, stdout, _ = profile(capsys, "--root", str(board), "--duration", "0.5", "--warmup", "0",
                              "--threads", "1", "--idle", "0", "--power-interval", "0.01", "--no-progress",
                              "--output", str(tmp_path / "r.json"))
    driver.join(timeout=5)
    assert code == 0
    power = json.loads((tmp_path / "r.json").read_text())["runs"][0]["power"]
    assert power["status"] == "failed" and "curr1_input disappeared" in power["reason"]
    assert "mean_w" not in power
    assert "failed (sensor jetson-ina3221 failed:" in stdout


def test_no_sensor_says_unavailable_never_a_number(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = profile(capsys, "--root", str(tmp_path), *FAST, "--json")
    assert code == 0
    run = json.loads(stdout)["runs"][0]
    assert run["power"]["status"] == "unavailable"
    assert run["power"]["reason"].startswith("no power sensor found: Jetson INA3221")
    assert "mean_w" not in run["power"] and "energy_per_inference_mj" not in run["power"]


def test_this_host_without_sensors_prints_power_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = profile(capsys, *FAST, "--idle", "0", "--backend", "litert")
    assert code == 0
    assert "latency ms" in stdout and "p99" in stdout and "cold start" in stdout
    power_row = next(line for line in stdout.splitlines() if line.strip().startswith("power"))
    if "unavailable" in power_row:       # this VM: no RAPL / hwmon meter readable
        assert "W mean" not in power_row and "mJ" not in power_row


def test_backend_all_prints_one_comparison_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = write_tree(tmp_path, orin_nano_power_files(5.0))
    code, stdout, _ = profile(capsys, "--root", str(board), "--backend", "all", *FAST, "--idle", "0",
                              "--power-interval", "0.02", "-o", str(tmp_path / "all.json"))
    assert code == 0
    header = next(line for line in stdout.splitlines() if line.startswith("backend"))
    assert header.split()[:6] == ["backend", "status", "p50", "ms", "p99", "ms"]
    assert "top-1 vs fp32" in header and "mJ/inf" in header
    onnx_row = next(line for line in stdout.splitlines() if line.startswith("onnxruntime "))
    assert onnx_row.split()[5] == "5.00*" and "* SIMULATED power: read from an emulated" in stdout
    runs = {r["backend"]: r for r in json.loads((tmp_path / "all.json").read_text())["runs"]}
    assert runs["onnxruntime"]["status"] == runs["litert"]["status"] == "ok"
    for name in ("onnxruntime", "litert"):
        assert runs[name]["top1_agreement"]["rate"] == 1.0
        assert runs[name]["power"]["mean_w"] == pytest.approx(5.0)
        assert f"{name} " in stdout
    assert all(r["status"] in ("ok", "unavailable", "failed") for r in runs.values())


def test_offline_and_server_scenarios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = profile(capsys, "--root", str(tmp_path), "--scenario", "offline", "--backend",
                              "onnxruntime", "--runs", "4", "--batch", "4", "--warmup", "0", "--idle", "0",
                              "--no-progress", "--json")
    assert code == 0
    scenario = json.loads(stdout)["runs"][0]["scenario"]
    assert scenario["samples_per_query"] == 4 and scenario["samples"] == 16
    code, stdout, _ = profile(capsys, "--root", str(tmp_path), "--scenario", "server", "--qps", "200",
                              "--latency-bound-ms", "1", *FAST, "--idle", "0")
    assert code == 0
    assert "queries over the 1 ms bound" in stdout


@pytest.mark.parametrize("args, message", [
    (["--backend", "nope"], "unknown backend 'nope'; known backends:"),
    (["no_such_model"], "no model named or at 'no_such_model'"),
    (["--scenario", "server"], "scenario server needs --qps"),
    (["--backend", "litert", "--batch", "4"], "fixed batch of 1"),
])
def test_bad_input_is_one_clear_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    code, stdout, stderr = profile(capsys, *args, "--root", str(tmp_path), *FAST, "--idle", "0")
    assert code == 1
    assert stderr.startswith("edgerun: error: ") and message in stderr and "Traceback" not in stderr


def test_nonsense_counts_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["profile", "--runs", "0"])
    assert exited.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".png", ".html"])
def test_plot_files(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = write_tree(tmp_path / "orin", orin_nano_power_files(5.0))
    target = tmp_path / f"profile{suffix}"
    code, stdout, _ = profile(capsys, "--root", str(board), *FAST, "--idle", "0.05",
                              "--power-interval", "0.01", "--plot", str(target))
    assert code == 0 and f"plot {target}" in stdout
    data = target.read_bytes()
    if suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    else:
        text = data.decode()
        assert "<svg" in text and "jetson-ina3221" in text
        assert "<script" not in text and "src=" not in text   # self-contained: nothing fetched


def test_without_matplotlib_the_cli_says_how_to_enable_plots(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plot, "has_module", lambda name: False)
    code, _, stderr = profile(capsys, *FAST, "--plot", str(tmp_path / "p.png"))
    assert code == 1 and "pip install 'edgerun[plot]'" in stderr
    assert not (tmp_path / "p.png").exists()
    code, _, stderr = profile(capsys, *FAST, "--plot", str(tmp_path / "p.svg"))
    assert code == 1 and "use a .png or .html file name" in stderr


def test_raspberry_pi5_power_and_throttling_through_the_library(tmp_path: Path) -> None:
    throttled = iter(["throttled=0x0\n", "throttled=0x50005\n"])
    outputs = {"vcgencmd pmic_read_adc": PI5_PMIC_READ_ADC}

    def runner(argv: tuple[str, ...]) -> str | None:
        return next(throttled) if argv == ("vcgencmd", "get_throttled") else captured_runner(outputs)(argv)

    write_tree(tmp_path, {"/proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0"})
    host = Host.probe(HostFS(tmp_path), runner)  # type: ignore[arg-type]
    config = ProfileConfig(runs=10, warmup=0, idle_s=0, threads=1, power_interval_s=0.01)
    report = Profiler(config, host, ModelRepository((BUILTIN_MODELS,))).run(None, "litert")
    run = report.runs[0]
    assert run.power["status"] == "ok" and run.power["sensor"]["name"] == "rpi5-pmic"
    assert "under-counts the board input" in run.power["sensor"]["note"]
    rails_w = parse_pmic_read_adc(PI5_PMIC_READ_ADC)   # a constant reading: the mean is its sum
    assert run.power["mean_w"] == pytest.approx(sum(rails_w.values()))
    assert run.power["rails_mean_w"]["VDD_CORE"] == pytest.approx(5.03652 * 0.8936988)
    assert run.thermal["warnings"] == [
        "the device throttled during the run: currently throttled, throttling has occurred, "
        "under-voltage detected, under-voltage has occurred"]


def test_progress_bar_draws_and_finishes_its_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    update = bar("onnxruntime single-stream", 4)
    for done in range(1, 5):
        update(done, 4)
    text = stream.getvalue()
    assert "[" in text and "4/4" in text and text.endswith("\n")
    timed = bar("litert server", None)
    timed(7, None)
    bar.close()
    assert "7 queries" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_int8_model_agreement_needs_and_uses_an_fp32_reference(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = profile(capsys, "mobilenet_v2_int8", "--root", str(tmp_path), *FAST, "--idle", "0",
                              "--json")
    assert code == 0
    agreement = json.loads(stdout)["runs"][0]["top1_agreement"]
    assert agreement["status"] == "unavailable" and "has no fp32 ONNX artifact" in agreement["reason"]
    code, stdout, _ = profile(capsys, "mobilenet_v2_int8", "--reference", "mobilenet_v2",
                              "--root", str(tmp_path), *FAST, "--idle", "0", "--json")
    agreement = json.loads(stdout)["runs"][0]["top1_agreement"]
    assert agreement["status"] == "ok" and agreement["reference"] == "mobilenet_v2 fp32 ONNX on onnxruntime"
    assert agreement["images"] == 4 and agreement["agree"] >= 3   # int8 may flip a hard image
