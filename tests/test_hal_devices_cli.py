"""`edgerun devices` over the device trees, and --snapshot round trips through detection."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from edgerun.cli import main
from edgerun.cli.devices import cmd_devices, devices_report
from edgerun.config import Settings
from edgerun.hal import HostFS, detect
from edgerun.hal.snapshot import take_snapshot

from .helpers import BOARDS, REPO, copy_device_tree, device_tree


def _text(root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cmd_devices(argparse.Namespace(root=root, json=False, snapshot=None)) == 0
    return capsys.readouterr().out


def test_text_report_on_the_coral_usb_tree(capsys: pytest.CaptureFixture[str]) -> None:
    out = _text(device_tree("rpi5-coral-usb"), capsys)
    assert "platform: rpi5 (Raspberry Pi 5 Model B Rev 1.0), 4 CPUs  [emulated device tree]" in out
    assert "edgetpu-usb:0  Coral USB Accelerator at /dev/bus/usb/002/002 [ok]" in out
    assert "usb_id=1a6e:089a" in out and "firmware not loaded yet" in out
    assert "simulated    available    simulated: stands in for edgetpu on emulated rpi5" in out
    assert "tensorrt     unavailable  no NVIDIA GPU detected" in out
    assert "  model              backend    artifact" in out
    assert "  mobilenet_v2       simulated  mobilenet_v2.onnx" in out
    assert "  backend      state        reason" in out
    assert "cameras: none found (no V4L2 capture node); this board's usual camera: picamera2" in out


def test_json_report_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--root", str(device_tree("jetson-orin-nano")), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["platform"]["board"] == "jetson-orin-nano"
    assert report["board_profile"]["backend_preference"][:2] == ["simulated", "tensorrt"]
    backends = {row["name"]: row for row in report["backends"]}
    assert backends["tensorrt"]["available"] is False
    assert "TensorRT Python bindings not installed" in backends["tensorrt"]["reason"]
    assert "--system-site-packages" in backends["tensorrt"]["reason"]
    assert all(row["backend"] == "simulated" for row in report["models"])


@pytest.mark.parametrize("board", BOARDS)
def test_every_tree_reports_every_backend_with_a_reason(board: str) -> None:
    report = devices_report(Settings(host_root=device_tree(board)))
    names = [row["name"] for row in report["backends"]]
    assert {"tensorrt", "edgetpu", "armnpu", "rknn", "ncnn", "openvino", "onnxruntime", "litert"} <= set(
        names
    )
    assert all(row["reason"] for row in report["backends"])
    assert {row["model"] for row in report["models"]} >= {"mobilenet_v2", "blazeface"}


def test_permission_denied_is_reported_with_the_node(tmp_path: Path) -> None:
    root = copy_device_tree("rpi5-coral-usb", tmp_path, access={"/dev/bus/usb/002/002": "denied"})
    rows = {r["name"]: r for r in devices_report(Settings(host_root=root))["backends"]}
    assert rows["edgetpu"]["available"] is False
    assert rows["edgetpu"]["reason"].startswith("permission denied on /dev/bus/usb/002/002 (edgetpu-usb:0)")
    assert "plugdev" in rows["edgetpu"]["reason"]


@pytest.mark.parametrize("board", ["jetson-orin-nano", "rk3588", "coral-devboard", "x86-desktop"])
def test_snapshot_of_a_tree_detects_the_same_platform(board: str, tmp_path: Path) -> None:
    source = HostFS(device_tree(board))
    manifest = take_snapshot(source, tmp_path / "snap")
    copied = detect(HostFS(tmp_path / "snap"))
    original = detect(source)
    assert (copied.board, copied.model, copied.cpu_count, copied.accelerators) == (
        original.board,
        original.model,
        original.cpu_count,
        original.accelerators,
    )
    assert copied.facts == original.facts and copied.emulated
    assert all(manifest["access"][a.node] == "ok" for a in original.accelerator_details if a.node)
    # git drops empty directories: a snapshot (like every shipped tree) must have none
    assert [d for d, subdirs, files in os.walk(tmp_path / "snap") if not subdirs and not files] == []


def test_shipped_device_trees_have_no_empty_directories() -> None:
    empty = [d for d, subdirs, files in os.walk(REPO / "devices") if not subdirs and not files]
    assert empty == []


def test_snapshot_of_this_host_and_refusal_of_a_non_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices", "--snapshot", str(tmp_path / "host"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snapshot"] == str(tmp_path / "host")
    snapshot = detect(HostFS(tmp_path / "host"))
    live = detect(HostFS("/"))
    assert (snapshot.arch, snapshot.cpu_count, snapshot.cpu_flags) == (
        live.arch,
        live.cpu_count,
        live.cpu_flags,
    )
    assert (
        "Serial" not in (tmp_path / "host/proc/cpuinfo").read_text()
        or "0000000000000000" in (tmp_path / "host/proc/cpuinfo").read_text()
    )
    assert main(["devices", "--snapshot", str(tmp_path / "host")]) == 1
    assert "is not empty" in capsys.readouterr().err
