"""Thermal zones, Coral apex temperature and Raspberry Pi throttling flags over emulated trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerun.hal import HostFS
from edgerun.hal.power import captured_runner
from edgerun.hal.thermal import (
    ThrottleState,
    discover_temp_sensors,
    parse_throttled,
    read_temperatures,
    read_throttled,
)
from edgerun.profiler.thermals import summarize_thermal

from .helpers import write_tree

ZONES = {
    "/sys/class/thermal/thermal_zone0/type": "cpu-thermal",
    "/sys/class/thermal/thermal_zone0/temp": "48312",
    "/sys/class/thermal/thermal_zone0/trip_point_0_type": "passive",
    "/sys/class/thermal/thermal_zone0/trip_point_0_temp": "85000",
    "/sys/class/thermal/thermal_zone0/trip_point_1_type": "critical",
    "/sys/class/thermal/thermal_zone0/trip_point_1_temp": "105000",
    "/sys/class/thermal/thermal_zone1/type": "gpu-thermal",
    "/sys/class/thermal/thermal_zone1/temp": "-256000",          # Jetson's offline sentinel
    "/sys/class/thermal/thermal_zone10/type": "cpu-thermal",     # a second zone of the same type
    "/sys/class/thermal/thermal_zone10/temp": "50000",
    "/sys/class/thermal/cooling_device0/type": "pwm-fan",
    "/sys/class/apex/apex_0/temp": "51250",
    "/sys/class/apex/apex_0/hw_temp_warn1": "100000",
    "/sys/class/apex/apex_0/hw_temp_warn1_en": "1",
}


def test_zones_and_apex_in_degrees_with_trips(tmp_path: Path) -> None:
    sensors = discover_temp_sensors(HostFS(write_tree(tmp_path, ZONES)))
    assert [s.name for s in sensors] == ["cpu-thermal", "gpu-thermal", "cpu-thermal#2", "apex_0"]
    assert sensors[0].trip_c == 85.0 and sensors[3].trip_c == 100.0 and sensors[1].trip_c is None
    assert read_temperatures(sensors) == {"cpu-thermal": pytest.approx(48.312), "cpu-thermal#2": 50.0,
                                          "apex_0": pytest.approx(51.25)}


def test_a_zone_file_that_vanishes_is_skipped(tmp_path: Path) -> None:
    sensors = discover_temp_sensors(HostFS(write_tree(tmp_path, ZONES)))
    write_tree(tmp_path, {"/sys/class/apex/apex_0/temp": None,
                          "/sys/class/thermal/thermal_zone0/temp": "hot"})
    assert read_temperatures(sensors) == {"cpu-thermal#2": 50.0}


def test_get_throttled_bits_decoded() -> None:
    state = parse_throttled("throttled=0x50005\n")
    assert state is not None and state.bits == 0x50005
    assert state.now == ("under-voltage detected", "currently throttled")
    assert state.since_boot == ("under-voltage has occurred", "throttling has occurred")
    assert state.throttled
    assert not ThrottleState(0).throttled
    assert parse_throttled('error=1 error_msg="Command not registered"') is None


def test_read_throttled_through_a_runner() -> None:
    assert read_throttled(captured_runner({"vcgencmd get_throttled": "throttled=0x0"})) == ThrottleState(0)
    assert read_throttled(captured_runner({})) is None


def test_throttling_that_appears_during_a_run_is_a_warning() -> None:
    before, after = ThrottleState(0x20000), ThrottleState(0x60004)  # capping old; throttling new + now
    thermal = summarize_thermal([], {}, before, after)
    assert len(thermal["warnings"]) == 1
    warning = thermal["warnings"][0]
    assert warning.startswith("the device throttled during the run")
    assert "currently throttled" in warning and "throttling has occurred" in warning
    assert "arm frequency capping" not in warning  # it was set before the run
    assert thermal["throttled_after"]["bits"] == "0x60004"


def test_no_warning_when_nothing_changed(tmp_path: Path) -> None:
    sensors = discover_temp_sensors(HostFS(write_tree(tmp_path, ZONES)))
    thermal = summarize_thermal(sensors, {"cpu-thermal": [48.0, 60.0, 55.0]},
                                ThrottleState(0x50000), ThrottleState(0x50000))
    assert thermal["warnings"] == []
    assert thermal["temperatures_c"]["cpu-thermal"] == {"start_c": 48.0, "max_c": 60.0, "end_c": 55.0}


def test_reaching_a_passive_trip_point_is_a_warning(tmp_path: Path) -> None:
    sensors = discover_temp_sensors(HostFS(write_tree(tmp_path, ZONES)))
    thermal = summarize_thermal(sensors, {"cpu-thermal": [80.0, 86.5, 84.0]}, None, None)
    assert thermal["warnings"] == ["cpu-thermal reached 86.5 °C, at or above its 85.0 °C trip point: "
                                   "the device may have throttled"]
