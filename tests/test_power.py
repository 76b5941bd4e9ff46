"""Power sensor discovery and reading over emulated device trees (Jetson, hwmon, RAPL, Pi 5 PMIC)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgerun.hal import HostFS
from edgerun.hal.power import (
    JetsonIna3221Sensor,
    NvmlSensor,
    PowerReading,
    RaplSensor,
    RaspberryPiPmicSensor,
    SensorReadError,
    captured_runner,
    discover_power_sensors,
    host_runner,
    parse_pmic_read_adc,
    survey_power_sensors,
    unavailable_reason,
)

from .helpers import ORIN_NANO_HWMON, REPO, orin_nano_power_files, write_tree

# Real `vcgencmd pmic_read_adc` output of a Raspberry Pi 5 (right-aligned names, 8 decimals).
PI5_PMIC_READ_ADC = """\
 3V7_WL_SW_A current(0)=0.05855580A
   3V3_SYS_A current(1)=0.06148359A
   1V8_SYS_A current(2)=0.13272650A
  DDR_VDD2_A current(3)=0.13955800A
  DDR_VDDQ_A current(4)=0.00980400A
   1V1_SYS_A current(5)=0.19811380A
    0V8_SW_A current(6)=0.34157550A
  VDD_CORE_A current(7)=5.03652000A
   3V3_DAC_A current(17)=0.00006105A
   3V3_ADC_A current(18)=0.00054945A
   0V8_AON_A current(16)=0.00531135A
      HDMI_A current(22)=0.02161170A
 3V7_WL_SW_V volt(8)=3.61069200V
   3V3_SYS_V volt(9)=3.29982600V
   1V8_SYS_V volt(10)=1.81684800V
  DDR_VDD2_V volt(11)=1.10109800V
  DDR_VDDQ_V volt(12)=0.60366240V
   1V1_SYS_V volt(13)=1.10292900V
    0V8_SW_V volt(14)=0.80292960V
  VDD_CORE_V volt(15)=0.89369880V
   3V3_DAC_V volt(20)=3.29944700V
   3V3_ADC_V volt(21)=3.30402600V
   0V8_AON_V volt(19)=0.79618980V
      HDMI_V volt(23)=4.92450000V
     EXT5V_V volt(24)=4.92450000V
      BATT_V volt(25)=0.00341880V
"""


def test_orin_nano_hwmon_rails_total_is_vdd_in(tmp_path: Path) -> None:
    write_tree(tmp_path, orin_nano_power_files(5.0, cpu_gpu_cv_w=1.0, soc_w=1.5))
    sensors = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))
    assert len(sensors) == 1
    sensor = sensors[0]
    assert isinstance(sensor, JetsonIna3221Sensor)
    assert sensor.name == "jetson-ina3221"
    assert sensor.simulated  # read from an emulated tree: every report must say so
    assert sensor.rails == ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")  # in7 "sum of shunt voltages" skipped
    assert sensor.total_from.startswith("rail VDD_IN")
    reading = sensor.read()
    assert reading.unit == "W"
    assert reading.total == pytest.approx(5.0)
    assert reading.rails == pytest.approx({"VDD_IN": 5.0, "VDD_CPU_GPU_CV": 1.0, "VDD_SOC": 1.5})


def test_paths_resolved_at_discovery_follow_new_values(tmp_path: Path) -> None:
    write_tree(tmp_path, orin_nano_power_files(5.0))
    sensor = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))[0]
    write_tree(tmp_path, {f"{ORIN_NANO_HWMON}/curr1_input": "1400"})
    assert sensor.read().total == pytest.approx(7.0)


def test_class_hwmon_symlink_to_the_same_chip_is_counted_once(tmp_path: Path) -> None:
    write_tree(tmp_path, orin_nano_power_files(5.0))
    (tmp_path / "sys/class/hwmon").mkdir(parents=True)
    os.symlink(ORIN_NANO_HWMON, tmp_path / "sys/class/hwmon/hwmon1")  # absolute, as on a device
    sensors = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))
    assert [s.name for s in sensors] == ["jetson-ina3221"]
    assert sensors[0].rails == ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")


def _agx_orin_files() -> dict[str, str]:
    chip0 = "/sys/bus/i2c/devices/1-0040/hwmon/hwmon2"
    chip1 = "/sys/bus/i2c/devices/1-0041/hwmon/hwmon3"
    files = {"/sys/bus/i2c/devices/1-0040/name": "ina3221", "/sys/bus/i2c/devices/1-0041/name": "ina3221"}
    rails = {chip0: [("VDD_GPU_SOC", 2000), ("VDD_CPU_CV", 800), ("VIN_SYS_5V0", 700)],
             chip1: [("NC", 0), ("VDDQ_VDD2_1V8AO", 60), ("NC", 0)]}
    for chip, channels in rails.items():
        for index, (label, milliamps) in enumerate(channels, 1):
            files.update({f"{chip}/in{index}_label": label, f"{chip}/in{index}_input": "5000",
                          f"{chip}/curr{index}_input": str(milliamps)})
    return files


def test_agx_orin_without_vdd_in_sums_rails_but_not_the_fed_vddq(tmp_path: Path) -> None:
    write_tree(tmp_path, _agx_orin_files())
    sensor = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))[0]
    assert sensor.rails == ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO")  # NC skipped
    reading = sensor.read()
    assert reading.total == pytest.approx(10.0 + 4.0 + 3.5)  # VDDQ (0.3 W) is fed from VIN_SYS_5V0
    assert "VDDQ_VDD2_1V8AO" not in sensor.total_from and "module rails only" in sensor.total_from


def test_jetpack4_nano_iio_power_in_milliwatts(tmp_path: Path) -> None:
    iio = "/sys/bus/i2c/devices/6-0040/iio:device0"
    write_tree(tmp_path, {
        "/sys/bus/i2c/devices/6-0040/name": "ina3221x",
        f"{iio}/rail_name_0": "POM_5V_IN", f"{iio}/in_power0_input": "3250",
        f"{iio}/rail_name_1": "POM_5V_GPU", f"{iio}/in_power1_input": "410",
        f"{iio}/rail_name_2": "POM_5V_CPU", f"{iio}/in_power2_input": "980",
    })
    sensor = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))[0]
    assert isinstance(sensor, JetsonIna3221Sensor) and sensor.layout == "iio (JetPack 4)"
    assert sensor.read().total == pytest.approx(3.25)
    assert sensor.total_from.startswith("rail POM_5V_IN")


def test_generic_hwmon_power1_input_is_microwatts(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "/sys/class/hwmon/hwmon4/name": "ina219", "/sys/class/hwmon/hwmon4/power1_input": "3200000",
        "/sys/class/hwmon/hwmon4/power1_label": "board",
        "/sys/class/hwmon/hwmon2/name": "cooling_fan", "/sys/class/hwmon/hwmon2/fan1_input": "2300",
    })
    sensors = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))
    assert [s.name for s in sensors] == ["hwmon-ina219"]
    reading = sensors[0].read()
    assert reading.total == pytest.approx(3.2) and reading.rails == pytest.approx({"board": 3.2})


def _rapl_files(energy_uj: int, max_uj: int = 1_000_000) -> dict[str, str]:
    zone = "/sys/class/powercap/intel-rapl:0"
    return {f"{zone}/name": "package-0", f"{zone}/energy_uj": str(energy_uj),
            f"{zone}/max_energy_range_uj": str(max_uj),
            "/sys/class/powercap/intel-rapl:0:0/name": "core",
            "/sys/class/powercap/intel-rapl:0:0/energy_uj": "5"}


def test_rapl_energy_counter_wraps_around(tmp_path: Path) -> None:
    write_tree(tmp_path, _rapl_files(900_000))
    sensor = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))[0]
    assert isinstance(sensor, RaplSensor) and sensor.kind == "energy"
    assert sensor.rails == ("package-0",)  # the core sub-zone is inside the package
    assert sensor.read().total == pytest.approx(0.9)
    write_tree(tmp_path, _rapl_files(100_000))  # passed max_energy_range_uj (1 J) and restarted
    reading = sensor.read()
    assert reading.unit == "J" and reading.total == pytest.approx(1.1)
    write_tree(tmp_path, _rapl_files(600_000))
    assert sensor.read().total == pytest.approx(1.6)


def test_rapl_unreadable_energy_is_a_reason_not_a_sensor(tmp_path: Path) -> None:
    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    (zone / "energy_uj").mkdir(parents=True)  # reading it fails like a root-only file does
    (zone / "name").write_text("package-0\n")
    sensors, findings = survey_power_sensors(HostFS(tmp_path), captured_runner({}))
    assert sensors == []
    assert "unreadable" in findings["RAPL"] and "root-only" in findings["RAPL"]


def test_raspberry_pi5_pmic_rails_through_captured_vcgencmd() -> None:
    runner = captured_runner({"vcgencmd pmic_read_adc": PI5_PMIC_READ_ADC})
    sensors = discover_power_sensors(HostFS("/nonexistent-root"), runner=runner)
    assert len(sensors) == 1 and isinstance(sensors[0], RaspberryPiPmicSensor)
    sensor = sensors[0]
    assert len(sensor.rails) == 12 and "EXT5V" not in sensor.rails and "BATT" not in sensor.rails
    reading = sensor.read()
    assert reading.rails["VDD_CORE"] == pytest.approx(5.03652 * 0.8936988)
    assert reading.total == pytest.approx(sum(reading.rails.values()))
    assert 5.0 < reading.total < 6.0
    assert "under-counts the board input" in sensor.note


def test_pmic_parser_ignores_nan_and_voltage_only_rails() -> None:
    rails = parse_pmic_read_adc(" VDD_CORE_A current(7)=2.0A\n VDD_CORE_V volt(15)=0.5V\n"
                                " BATT_V volt(25)=nanV\n X_A current(1)=nanA\n X_V volt(2)=1.0V\n")
    assert rails == {"VDD_CORE": pytest.approx(1.0)}


def test_pi4_without_pmic_adc_gives_the_firmware_reason() -> None:
    runner = captured_runner({"vcgencmd pmic_read_adc": 'error=1 error_msg="Command not registered"\n'})
    sensors, findings = survey_power_sensors(HostFS("/nonexistent-root"), runner)
    assert sensors == []
    assert "Command not registered" in findings["Raspberry Pi 5 PMIC"]


def test_empty_tree_reports_every_family_and_no_number(tmp_path: Path) -> None:
    sensors, findings = survey_power_sensors(HostFS(tmp_path))
    assert sensors == []
    assert set(findings) == {"Jetson INA3221", "hwmon power meter", "Raspberry Pi 5 PMIC", "RAPL", "NVML"}
    assert findings["Raspberry Pi 5 PMIC"] == "vcgencmd not available"
    assert findings["NVML"] == "reads the live host only"
    reason = unavailable_reason(findings)
    assert reason.startswith("no power sensor found: Jetson INA3221: no INA3221")


def test_host_runner_on_a_captured_tree_never_runs_host_commands(tmp_path: Path) -> None:
    assert host_runner(HostFS(tmp_path))(("true",)) is None
    assert host_runner(HostFS(tmp_path))(("vcgencmd", "get_throttled")) is None


def test_host_runner_replays_commands_captured_in_the_snapshot_manifest(tmp_path: Path) -> None:
    (tmp_path / "edgerun-snapshot.json").write_text(
        '{"commands": {"vcgencmd get_throttled": "throttled=0x50005\\n"}}')
    runner = host_runner(HostFS(tmp_path))
    assert runner(("vcgencmd", "get_throttled")) == "throttled=0x50005\n"
    assert runner(("vcgencmd", "pmic_read_adc")) is None


@pytest.mark.parametrize("content, message", [(None, "disappeared"), ("garbage", "holds 'garbage'")])
def test_a_sensor_file_that_vanishes_or_holds_garbage_raises_read_error(
        tmp_path: Path, content: str | None, message: str) -> None:
    write_tree(tmp_path, orin_nano_power_files(5.0))
    sensor = discover_power_sensors(HostFS(tmp_path), runner=captured_runner({}))[0]
    write_tree(tmp_path, {f"{ORIN_NANO_HWMON}/curr1_input": content})
    with pytest.raises(SensorReadError, match=message):
        sensor.read()


def test_survey_of_this_host_names_every_family() -> None:
    sensors, findings = survey_power_sensors(HostFS("/"))
    assert len(findings) == 5 and all(isinstance(why, str) and why for why in findings.values())
    for sensor in sensors:  # on this VM usually none; on a real device each must read
        assert sensor.name and sensor.rails


BOARD_PROFILES = sorted((REPO / "devices").glob("*/profile.json"))


@pytest.mark.parametrize("profile", BOARD_PROFILES, ids=[p.parent.name for p in BOARD_PROFILES])
def test_every_emulated_board_yields_the_sensor_its_profile_names(profile: Path) -> None:
    expected = json.loads(profile.read_text()).get("power") or {}
    fs = HostFS(profile.parent / "rootfs")
    sensors = discover_power_sensors(fs)
    if not expected.get("sensor"):
        assert sensors == []
        return
    assert sensors[0].name == expected["sensor"]
    assert list(sensors[0].rails) == expected["rails"]
    reading = sensors[0].read()
    assert reading.total >= 0 and sensors[0].simulated


def test_nvml_on_this_host_reports_why_not_or_finds_gpus() -> None:
    pytest.importorskip("pynvml")
    sensors, findings = survey_power_sensors(HostFS("/"), captured_runner({}))
    if not any(s.name == "nvml" for s in sensors):        # this VM: no driver library
        assert findings["NVML"].startswith("NVML unavailable: ") or findings["NVML"] == "NVML sees no GPU"


def test_nvml_sensor_units_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    pynvml = pytest.importorskip("pynvml")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda handle: 123_456)  # mJ
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda handle: 71_250)               # mW
    energy = NvmlSensor(pynvml, ["gpu-a", "gpu-b"], energy=True)
    assert energy.kind == "energy" and energy.rails == ("gpu0", "gpu1")
    assert energy.read() == PowerReading(246.912, "J", {"gpu0": 123.456, "gpu1": 123.456})
    power = NvmlSensor(pynvml, ["gpu-a"], energy=False).read()
    assert power.unit == "W" and power.total == pytest.approx(71.25)

    def lost(handle: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lost)
    with pytest.raises(SensorReadError, match="NVML read failed"):
        energy.read()
