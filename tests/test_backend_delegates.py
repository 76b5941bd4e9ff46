"""Edge TPU and ARM NPU backends through LiteRT's real load_delegate, with a stand-in delegate library.

tests/data/standin_delegate.c is compiled here into a shared library with the TFLite external
delegate ABI; it refuses (as libedgetpu does without a device) or accepts (claiming no node, so
the model runs on the CPU kernels). Everything from LoadOptions to LiteRT is the real code path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgerun.backends.armnpu import ArmNpuBackend, ArmNpuOptions, choose_delegate
from edgerun.backends.base import LoadOptions
from edgerun.backends.edgetpu import EdgeTPUBackend, parse_device
from edgerun.backends.litert_backend import LiteRTBackend
from edgerun.backends.options import parse_options
from edgerun.errors import BackendUnavailableError, InvalidInputError
from edgerun.hal import HostFS, detect
from edgerun.repository import ModelRepository

from .helpers import build_standin_delegate, copy_device_tree, device_tree

INT8_MODEL = ModelRepository().get("mobilenet_v2_int8").artifact_for(["tflite"]).path


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_standin_delegate(tmp_path_factory.mktemp("delegate"))


def _edgetpu_error(library: str, platform=None, device: str | None = None) -> str:
    typed = parse_options("edgetpu", {"library": library, "device": device})
    options = LoadOptions(options=typed, platform=platform)
    with pytest.raises(BackendUnavailableError) as caught:
        EdgeTPUBackend().load(INT8_MODEL, options)
    return str(caught.value)


def test_missing_libedgetpu_is_named_with_the_fix() -> None:
    message = _edgetpu_error("libedgetpu.so.1")
    assert "libedgetpu.so.1 is not installed" in message and "libedgetpu1-std" in message
    assert "Failed to load delegate" not in message.split("(")[0]


def test_a_library_that_is_not_a_delegate(tmp_path: Path) -> None:
    import ctypes.util

    libc = ctypes.util.find_library("c") or "libc.so.6"
    assert "is not a TFLite delegate library" in _edgetpu_error(libc)


@pytest.mark.parametrize(
    "tree, access, device, expected",
    [
        ("rpi5", None, None, "no Edge TPU found (no USB device 1a6e:089a or 18d1:9302"),
        ("rpi5-coral-usb", None, "pci", "no pci Edge TPU found"),
        ("rpi5-coral-usb", None, "usb:1", "usb:1 requested but only 1 usb Edge TPU(s) found"),
        ("rpi5-coral-usb", "denied", "usb:0", "permission denied on /dev/bus/usb/002/002"),
        ("rpi5-coral-usb", "ok", None, "device busy"),
    ],
)
def test_refusal_is_explained_from_the_platform(
    standin: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tree: str,
    access: str | None,
    device: str | None,
    expected: str,
) -> None:
    monkeypatch.setenv("STANDIN_DELEGATE_MODE", "refuse")
    root = copy_device_tree(tree, tmp_path, access={"/dev/bus/usb/002/002": access} if access else {})
    message = _edgetpu_error(str(standin), detect(HostFS(root)), device)
    assert expected in message
    assert "stand-in delegate: could not open the device" in message or expected != "device busy"


def test_device_strings_are_checked_before_any_io() -> None:
    assert parse_device("usb:1") == ("usb", 1) and parse_device(":0") == (None, 0)
    assert parse_device(None) == (None, None) and parse_device("pci") == ("pci", None)
    with pytest.raises(InvalidInputError, match="'usb', 'usb:N', 'pci', 'pci:N'"):
        parse_options("edgetpu", {"device": "gpu:0"})


def test_edgetpu_probe_on_each_tree(tmp_path: Path) -> None:
    def probe(root: Path) -> str:
        return EdgeTPUBackend().probe(detect(HostFS(root))).reason

    assert "libedgetpu.so.1 not found" in probe(device_tree("rpi5"))
    assert probe(device_tree("rpi5-coral-usb")).startswith("edgetpu-usb:0: Coral USB Accelerator")
    assert probe(device_tree("coral-devboard")).startswith(
        "edgetpu-pci:0: Coral Dev Board Edge TPU at /dev/apex_0"
    )
    denied = copy_device_tree("coral-devboard", tmp_path, access={"/dev/apex_0": "denied"})
    assert "permission denied on /dev/apex_0" in probe(denied) and "apex" in probe(denied)


def test_armnpu_picks_the_delegate_from_the_platform() -> None:
    imx = detect(HostFS(device_tree("imx8mp")))
    choice = choose_delegate(imx, ArmNpuOptions())
    assert choice is not None and choice.library == "libvx_delegate.so" and choice.accelerator == "vx-npu"
    assert (
        ArmNpuBackend().probe(imx).reason
        == "NXP VX delegate (i.MX 8M Plus NPU) at /usr/lib/libvx_delegate.so"
    )
    rpi = detect(HostFS(device_tree("rpi5")))
    assert choose_delegate(rpi, ArmNpuOptions()) is None
    assert "NNAPI exists only on Android" in ArmNpuBackend().probe(rpi).reason
    explicit = choose_delegate(rpi, parse_options(
        "armnpu", {"delegate": "/opt/libarmnnDelegate.so", "delegate_options": "backends=CpuAcc"}))
    assert explicit is not None and dict(explicit.options) == {"backends": "CpuAcc"}


def test_armnpu_runs_through_an_accepting_delegate_with_its_options(
    standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "options.log"
    monkeypatch.setenv("STANDIN_DELEGATE_MODE", "accept")
    monkeypatch.setenv("STANDIN_DELEGATE_LOG", str(log))
    npu_options = ArmNpuOptions(delegate=str(standin),
                                delegate_options={"backends": "GpuAcc,CpuAcc", "logging-severity": "info"})
    rng = np.random.default_rng(1)
    with (
        ArmNpuBackend().load(INT8_MODEL, LoadOptions(threads=1, options=npu_options)) as npu,
        LiteRTBackend().load(INT8_MODEL, LoadOptions(threads=1, options=parse_options(
            "litert", {"xnnpack": "off"}))) as cpu,
    ):
        spec = npu.input_specs[0]
        tensor = rng.integers(-128, 127, (1, 224, 224, 3), dtype=np.int8)
        assert npu.backend_name == "armnpu"
        out_npu, out_cpu = npu.infer({spec.name: tensor}), cpu.infer({spec.name: tensor})
    assert all(np.array_equal(out_npu[k], out_cpu[k]) for k in out_cpu)
    assert log.read_text().splitlines() == ["backends=GpuAcc,CpuAcc", "logging-severity=info"]


def test_armnpu_refusal_and_missing_delegate(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_DELEGATE_MODE", "refuse")
    with pytest.raises(BackendUnavailableError, match="the delegate refused to start"):
        ArmNpuBackend().load(INT8_MODEL, LoadOptions(options=ArmNpuOptions(delegate=str(standin))))
    imx = detect(HostFS(device_tree("imx8mp")))
    with pytest.raises(
        BackendUnavailableError, match="libvx_delegate.so is not installed or cannot be loaded"
    ):
        ArmNpuBackend().load(INT8_MODEL, LoadOptions(platform=imx))
