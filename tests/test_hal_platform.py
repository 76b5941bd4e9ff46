"""HAL detection over every shipped device tree, compared with its profile; HostFS and parser units."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgerun.hal import HostFS, detect
from edgerun.hal.boards import backend_preference, profile_for, simulated_target
from edgerun.hal.jetson import expected_tensorrt, jetpack_for, parse_l4t_release
from edgerun.hal.raspberrypi import decode_revision
from edgerun.hal.rockchip import rockchip_soc

from .helpers import BOARDS, DEVICES, copy_device_tree, device_tree

REQUIRED_TREES = {
    "jetson-nano",
    "jetson-xavier-nx",
    "jetson-orin-nano",
    "rpi4",
    "rpi5",
    "rpi5-coral-usb",
    "coral-devboard",
    "rk3588",
    "imx8mp",
    "x86-desktop",
}


def _profile(board: str) -> dict:
    return json.loads((DEVICES / board / "profile.json").read_text())


def test_every_required_board_ships_a_tree_and_profile() -> None:
    assert set(BOARDS) >= REQUIRED_TREES
    for board in BOARDS:
        assert (device_tree(board) / "edgerun-snapshot.json").is_file(), board


@pytest.mark.parametrize("board", BOARDS)
def test_detection_matches_the_profile(board: str) -> None:
    expected = _profile(board)["expected"]
    platform = detect(HostFS(device_tree(board)))
    assert platform.emulated is True
    assert (platform.board, platform.arch, platform.cpu_count) == (
        expected["board"],
        expected["arch"],
        expected["cpu_count"],
    )
    assert list(platform.accelerators) == expected["accelerators"]
    for key, value in expected["facts"].items():
        assert platform.facts.get(key) == value, (board, key)


@pytest.mark.parametrize("board", BOARDS)
def test_backend_preference_and_camera_follow_the_profile(board: str) -> None:
    profile = _profile(board)
    platform = detect(HostFS(device_tree(board)))
    accelerated = bool(platform.accelerators)
    assert backend_preference(platform) == (["simulated"] if accelerated else []) + profile["backends"]
    assert simulated_target(platform) == (profile["backends"][0] if accelerated else None)
    assert profile_for(platform).family == profile["family"] and profile_for(platform).camera


@pytest.mark.parametrize("board", BOARDS)
def test_power_sensors_in_each_tree_match_the_profile(board: str) -> None:
    power = pytest.importorskip("edgerun.hal.power", reason="power sensors are issue 5's module")
    fs = HostFS(device_tree(board))
    runner = power.captured_runner(fs.manifest.get("commands", {}))
    sensors = power.discover_power_sensors(fs, runner)
    expected = _profile(board)["power"]
    if expected["sensor"] is None:
        assert sensors == []
    else:
        assert sensors[0].name == expected["sensor"] and list(sensors[0].rails) == expected["rails"]
        assert sensors[0].read().total > 0


def test_the_live_host_is_not_emulated() -> None:
    platform = detect(HostFS("/"))
    assert platform.emulated is False and platform.cpu_count >= 1
    assert "simulated" not in backend_preference(platform)


def test_device_node_access_comes_from_the_tree_manifest(tmp_path: Path) -> None:
    root = copy_device_tree("rpi5-coral-usb", tmp_path, access={"/dev/bus/usb/002/002": "denied"})
    platform = detect(HostFS(root))
    coral = platform.accelerator("edgetpu")
    assert coral is not None and coral.access == "denied"
    (root / "dev/bus/usb/002/002").unlink()
    assert detect(HostFS(root)).accelerator("edgetpu").access == "missing"


def test_coral_usb_after_firmware_load_and_a_pcie_card_without_driver(tmp_path: Path) -> None:
    root = copy_device_tree("rpi5-coral-usb", tmp_path)
    (
        root / "sys/devices/platform/axi/1000120000.pcie/1f00300000.usb/xhci-hcd.1/usb2/2-1/idVendor"
    ).write_text("18d1\n")
    (
        root / "sys/devices/platform/axi/1000120000.pcie/1f00300000.usb/xhci-hcd.1/usb2/2-1/idProduct"
    ).write_text("9302\n")
    pci = root / "sys/bus/pci/devices/0000:01:00.0"
    pci.mkdir(parents=True)
    for name, value in {"vendor": "0x1ac1", "device": "0x089a", "class": "0x0000ff"}.items():
        (pci / name).write_text(value + "\n")
    platform = detect(HostFS(root))
    assert platform.accelerators == ("edgetpu-pci:0", "edgetpu-usb:0")
    pcie, usb = platform.accelerator_details
    assert pcie.access == "missing" and "gasket-dkms" in pcie.detail["problem"]
    assert usb.detail["state"] == "firmware loaded" and usb.detail["usb_id"] == "18d1:9302"


def test_hostfs_resolves_links_inside_the_root_and_globs(tmp_path: Path) -> None:
    (tmp_path / "sys/devices/x").mkdir(parents=True)
    (tmp_path / "sys/devices/x/name").write_text("chip\n")
    (tmp_path / "sys/class").mkdir(parents=True)
    os.symlink("/sys/devices/x", tmp_path / "sys/class/abs")  # absolute target: stays in the root
    os.symlink("../devices/x", tmp_path / "sys/class/rel")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/compatible").write_bytes(b"vendor,board\x00vendor,soc\x00")
    fs = HostFS(tmp_path)
    assert fs.realpath("/sys/class/abs/name") == "/sys/devices/x/name"
    assert fs.read_text("/sys/class/abs/name") == "chip" and fs.read_text("/sys/class/rel/name") == "chip"
    assert fs.glob("/sys/class/*/name") == ["/sys/class/abs/name", "/sys/class/rel/name"]
    assert fs.read_strings("/proc/compatible") == ["vendor,board", "vendor,soc"]
    assert fs.access("/dev/nothing") == "missing" and not fs.is_emulated


@pytest.mark.parametrize(
    "text, l4t, jetpack, trt",
    [
        ("# R32 (release), REVISION: 7.4, GCID: 1, BOARD: t210ref", "32.7.4", "4.6.4", "8.2"),
        ("# R35 (release), REVISION: 3.1, GCID: 2, BOARD: t186ref", "35.3.1", "5.1.1", "8.5"),
        ("# R36 (release), REVISION: 3.0, GCID: 3", "36.3.0", "6.0", "8.6"),
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic", "36.4.3", "6.2", "10.3"),
    ],
)
def test_l4t_release_parsing(text: str, l4t: str, jetpack: str, trt: str) -> None:
    assert parse_l4t_release(text) == l4t
    assert jetpack_for(l4t) == jetpack and expected_tensorrt(l4t) == trt
    assert jetpack_for("99.1.0").startswith("unknown")
    assert parse_l4t_release("garbage") is None


def test_raspberry_pi_revision_codes() -> None:
    assert decode_revision("d04170") == {
        "revision": "d04170",
        "type": "5",
        "soc": "bcm2712",
        "memory": "8GB",
        "board_revision": "1.0",
    }
    assert decode_revision("c03114")["type"] == "4B" and decode_revision("c03114")["memory"] == "4GB"
    assert decode_revision("a02082") == {
        "revision": "a02082",
        "type": "3B",
        "soc": "bcm2837",
        "memory": "1GB",
        "board_revision": "1.2",
    }
    assert decode_revision("xyz") == {}


def test_rockchip_soc_is_the_last_compatible_entry() -> None:
    assert rockchip_soc(["rockchip,rk3588-orangepi-5-plus", "rockchip,rk3588"]) == "rk3588"
    assert rockchip_soc(["radxa,zero3", "rockchip,rk3566"]) == "rk3566"
    assert rockchip_soc(["brcm,bcm2712"]) is None
