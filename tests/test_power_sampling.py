"""Background power sampling against emulated trees that a driver thread writes at a known rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgerun.hal import HostFS
from edgerun.hal.power import PowerSensor, captured_runner, discover_power_sensors
from edgerun.profiler.energy import idle_watts, measure_idle, power_line, summarize_power
from edgerun.profiler.sampling import Sampler, power_series

from .helpers import ORIN_NANO_HWMON, SensorDriver, orin_nano_power_files, write_tree

CURR1 = f"{ORIN_NANO_HWMON}/curr1_input"


def orin_sensor(root: Path, watts: float = 5.0) -> PowerSensor:
    write_tree(root, orin_nano_power_files(watts))
    return discover_power_sensors(HostFS(root), runner=captured_runner({}))[0]


class LockstepDriver:
    """A driver thread that writes the next scheduled VDD_IN value and moves a fake clock one
    interval each time the sampler waits, so the sampled signal is known exactly."""

    def __init__(self, root: Path, watts: Sequence[float], interval_ns: int) -> None:
        self.root, self.watts, self.interval_ns = root, list(watts), interval_ns
        self.now = 0
        self.step = 0
        self._asked, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self.ended = threading.Event()   # set once the sampler has taken every scheduled sample
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def clock(self) -> int:
        return self.now

    def wait(self, _seconds: float) -> bool:
        """Called by the sampler thread between samples; True ends sampling."""
        if self.step >= len(self.watts):
            self.ended.set()
            return True
        self._asked.release()
        assert self._done.acquire(timeout=5)
        return False

    def _run(self) -> None:
        while self.step < len(self.watts) and self._asked.acquire(timeout=5):
            self.now += self.interval_ns
            write_tree(self.root, {CURR1: str(round(self.watts[self.step] * 200))})
            self.step += 1
            self._done.release()


def test_lockstep_driver_gives_exact_mean_power_and_energy(tmp_path: Path) -> None:
    sensor = orin_sensor(tmp_path, 5.0)                   # t = 0.0 s: 5.0 W
    driver = LockstepDriver(tmp_path, [5.0] * 4 + [7.0] * 5, interval_ns=100_000_000)
    sampler = Sampler([sensor], 0.1, clock=driver.clock, wait=driver.wait)
    sampler.start()
    assert driver.ended.wait(timeout=10)
    record = sampler.stop()
    trace = record.power[0]
    assert trace.values == [5.0] * 5 + [7.0] * 6         # the stop() sample repeats t = 0.9 s
    assert trace.times_ns[-2] == trace.times_ns[-1] == 900_000_000
    # Trapezoids: 0.4 s at 5 W, 0.1 s ramp (6 W), 0.4 s at 7 W -> 5.4 J over 0.9 s = 6.0 W.
    power = summarize_power(record, None, duration_s=0.9, inferences=90,
                            idle={sensor.name: 5.0}, subtract_idle=True, interval_s=0.1)
    assert power["status"] == "ok"
    assert power["mean_w"] == pytest.approx(6.0, abs=1e-12)
    assert power["energy_j"] == pytest.approx(5.4, abs=1e-12)
    assert power["energy_per_inference_mj"] == pytest.approx(60.0, abs=1e-9)
    assert power["above_idle_w"] == pytest.approx(1.0, abs=1e-12)
    assert power["energy_per_inference_above_idle_mj"] == pytest.approx(10.0, abs=1e-9)
    assert power["rails_mean_w"] == pytest.approx({"VDD_IN": 6.0, "VDD_CPU_GPU_CV": 1.0, "VDD_SOC": 1.5})
    assert power["sampling_rate_hz"] == pytest.approx(10 / 0.9)
    assert power["sensor"]["rails"] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    line = power_line(power, subtract_idle=True)
    assert "6.000 W mean" in line and "60.000 mJ/inference" in line and "jetson-ina3221" in line


def _true_mean_w(levels: Sequence[tuple[int, float]], start: int, end: int) -> float:
    """Mean of a step signal that takes level w from time t on, over [start, end]."""
    energy = 0.0
    for i, (t, watts) in enumerate(levels):
        t_next = levels[i + 1][0] if i + 1 < len(levels) else end
        lo, hi = max(t, start), min(t_next, end)
        energy += watts * max(0, hi - lo)
    return energy / (end - start)


def test_free_running_driver_thread_within_the_gaps_around_the_step(tmp_path: Path) -> None:
    sensor = orin_sensor(tmp_path, 5.0)
    driver = SensorDriver(tmp_path, [(0.25, {CURR1: "1400"})])   # 5.0 W, then 7.0 W from 0.25 s
    sampler = Sampler([sensor], 0.01)
    sampler.start()
    started = time.perf_counter_ns()
    driver.start()
    time.sleep(0.5)
    record = sampler.stop()
    driver.join(timeout=5)
    trace = record.power[0]
    first, last = trace.times_ns[0], trace.times_ns[-1]
    step_at = (driver.begun_ns[0] + driver.written_ns[0]) // 2
    expected = _true_mean_w([(started, 5.0), (step_at, 7.0)], first, last)
    power = summarize_power(record, None, 0.5, 50, {}, False, 0.01)
    # The trapezoid is exact except around the 2 W step: allow the sample gaps on both sides of
    # it (a stamp sits inside its read) and the time the driver took to write the step.
    k = trace.values.index(7.0)
    around = trace.times_ns[min(k + 1, len(trace.times_ns) - 1)] - trace.times_ns[max(k - 2, 0)]
    bound = 2.0 * (around + driver.written_ns[0] - driver.begun_ns[0]) / (last - first)
    assert abs(power["mean_w"] - expected) <= bound
    assert 5.0 < power["mean_w"] < 7.0 and len(trace.values) >= 10


def test_rapl_counter_written_at_a_known_rate_gives_its_power(tmp_path: Path) -> None:
    zone = "/sys/class/powercap/intel-rapl:0"
    write_tree(tmp_path, {f"{zone}/name": "package-0", f"{zone}/energy_uj": "200000",
                          f"{zone}/max_energy_range_uj": "250000"})   # wraps every 0.25 J
    sensor = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))[0]
    # 25 mJ every 10 ms (2.5 W on schedule), wrapping at the 2nd step and every 10th after it,
    # which the 3 ms sampler must not miss (RAPL's rule: poll several times per wrap period).
    steps = [(0.01 * k, {f"{zone}/energy_uj": str((200_000 + 25_000 * k) % 250_000)}) for k in range(1, 41)]
    driver = SensorDriver(tmp_path, steps)
    sampler = Sampler([sensor], 0.003)
    sampler.start()
    driver.start()
    time.sleep(0.3)
    record = sampler.stop()
    driver.stop()
    trace = record.power[0]
    first, last = trace.times_ns[0], trace.times_ns[-1]
    window = (last - first) / 1e9
    landed = sum(1 for t in driver.written_ns if first < t <= last)   # the true energy: 25 mJ each
    power = summarize_power(record, None, window, 10, {}, False, 0.003)
    assert power["mean_w"] == pytest.approx(0.025 * landed / window, abs=2 * 0.025 / window + 1e-9)
    assert power["energy_j"] == pytest.approx(0.025 * landed, abs=0.05 + 1e-9)   # +-1 step at each end
    assert trace.values[0] == pytest.approx(0.2) and trace.values[-1] > 0.25   # the wrap was counted
    times, watts = power_series(trace, first)
    assert len(times) == len(watts) == len(trace.values) - 1 and min(watts) >= 0


@pytest.mark.parametrize("content, message", [(None, "disappeared"), ("garbage", "holds 'garbage'")])
def test_a_sensor_failing_mid_run_is_reported_without_a_number(
        tmp_path: Path, content: str | None, message: str) -> None:
    sensor = orin_sensor(tmp_path, 5.0)
    driver = SensorDriver(tmp_path, [(0.06, {CURR1: content})])
    sampler = Sampler([sensor], 0.01)
    sampler.start()
    driver.start()
    time.sleep(0.15)
    record = sampler.stop()
    driver.join(timeout=5)
    power = summarize_power(record, None, 0.15, 15, {}, False, 0.01)
    assert power["status"] == "failed"
    assert message in power["reason"] and "jetson-ina3221" in power["reason"]
    assert "mean_w" not in power and "energy_per_inference_mj" not in power
    assert power_line(power).startswith("power: failed (sensor jetson-ina3221 failed: ")


def test_no_sensor_means_unavailable_with_the_reason() -> None:
    power = summarize_power(None, "no power sensor found: RAPL: none", 1.0, 10, {}, False, 0.1)
    assert power == {"status": "unavailable", "reason": "no power sensor found: RAPL: none", "sensors": []}
    assert power_line(power) == "power: unavailable (no power sensor found: RAPL: none)"


def test_idle_baseline_is_measured_before_the_run(tmp_path: Path) -> None:
    sensor = orin_sensor(tmp_path, 4.2)
    record = measure_idle([sensor], 0.05, 0.01)
    assert record is not None and len(record.power[0].values) >= 2
    assert idle_watts(record) == pytest.approx({"jetson-ina3221": 4.2})
    assert measure_idle([], 0.05, 0.01) is None and measure_idle([sensor], 0.0, 0.01) is None


def test_slow_sensors_set_the_floor_of_the_interval(tmp_path: Path) -> None:
    pmic = discover_power_sensors(HostFS(tmp_path), runner=captured_runner(
        {"vcgencmd pmic_read_adc": " VDD_CORE_A current(7)=2.0A\n VDD_CORE_V volt(15)=0.9V\n"}))[0]
    assert Sampler([pmic], 0.01).interval_s == pmic.min_interval_s == 0.25
