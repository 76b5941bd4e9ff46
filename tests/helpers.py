"""Shared test helpers: paths, a tiny backend that is never available, corrupt-copy utilities."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgerun.backends.base import Availability, LoadOptions, Session
from edgerun.errors import BackendUnavailableError
from edgerun.hal import Platform
from edgerun.repository import BUILTIN_MODELS

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
MODELS = BUILTIN_MODELS


class AbsentBackend:
    """A backend whose runtime is never installed: exercises the registry's skip path."""

    name = "absent"
    formats = ("onnx", "tflite")

    def probe(self, platform: Platform) -> Availability:
        return Availability.no("runtime 'absent' not installed (test backend)")

    def load(self, artifact: Path, options: LoadOptions) -> Session:
        raise BackendUnavailableError("absent backend cannot load anything")


def copy_package(name: str, destination: Path) -> Path:
    """Copy a built-in model package into ``destination`` and return the copy's folder."""
    target = destination / name
    shutil.copytree(MODELS / name, target)
    return target


def flip_last_byte(path: Path) -> None:
    """Corrupt a file in place without changing its size."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- emulated device trees with a writer thread (power/thermal tests) ----------------------------

ORIN_NANO_HWMON = "/sys/bus/i2c/devices/1-0040/hwmon/hwmon1"


def write_tree(root: Path, files: Mapping[str, str | None]) -> Path:
    """Write host files (absolute host path -> text; None deletes) under ``root``, each atomically."""
    for host_path, text in files.items():
        target = root / host_path.lstrip("/")
        if text is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(text + "\n")
        os.replace(partial, target)  # a reader never sees a half-written value, as with sysfs
    return root


def orin_nano_power_files(vdd_in_w: float, cpu_gpu_cv_w: float = 1.0, soc_w: float = 1.5) -> dict[str, str]:
    """Jetson Orin Nano INA3221 (JetPack 5+ hwmon): rails at 5000 mV, currents in mA for the watts."""
    def milliamps(watts: float) -> str:
        return str(round(watts * 1000 / 5))

    return {
        "/sys/bus/i2c/devices/1-0040/name": "ina3221",
        f"{ORIN_NANO_HWMON}/name": "ina3221",
        f"{ORIN_NANO_HWMON}/in1_label": "VDD_IN", f"{ORIN_NANO_HWMON}/in1_input": "5000",
        f"{ORIN_NANO_HWMON}/curr1_input": milliamps(vdd_in_w),
        f"{ORIN_NANO_HWMON}/in2_label": "VDD_CPU_GPU_CV", f"{ORIN_NANO_HWMON}/in2_input": "5000",
        f"{ORIN_NANO_HWMON}/curr2_input": milliamps(cpu_gpu_cv_w),
        f"{ORIN_NANO_HWMON}/in3_label": "VDD_SOC", f"{ORIN_NANO_HWMON}/in3_input": "5000",
        f"{ORIN_NANO_HWMON}/curr3_input": milliamps(soc_w),
        f"{ORIN_NANO_HWMON}/in7_label": "sum of shunt voltages", f"{ORIN_NANO_HWMON}/in7_input": "1040",
    }


class SensorDriver(threading.Thread):
    """Writes scheduled file contents into an emulated tree from a background thread.

    ``steps`` are (seconds after start, {host path: text or None}). Each step landed between
    ``begun_ns[i]`` and ``written_ns[i]`` (perf_counter_ns), so a test knows the true signal.
    """

    def __init__(self, root: Path, steps: Sequence[tuple[float, Mapping[str, str | None]]]) -> None:
        super().__init__(name="sensor-driver", daemon=True)
        self.root = root
        self.steps = list(steps)
        self.begun_ns: list[int] = []
        self.written_ns: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        origin = time.perf_counter()
        for offset, files in self.steps:
            if self._stop_event.wait(max(0.0, origin + offset - time.perf_counter())):
                return
            self.begun_ns.append(time.perf_counter_ns())
            write_tree(self.root, files)
            self.written_ns.append(time.perf_counter_ns())

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# ---- device trees and the stand-in delegate library (HAL and accelerator-backend tests) ----------

DEVICES = REPO / "devices"
BOARDS = sorted(p.parent.name for p in DEVICES.glob("*/profile.json"))


def device_tree(board: str) -> Path:
    """The rootfs of one of the shipped device trees (devices/<board>/rootfs)."""
    return DEVICES / board / "rootfs"


def copy_device_tree(board: str, destination: Path, **manifest: object) -> Path:
    """Copy a shipped device tree (symlinks kept) and merge ``manifest`` into its edgerun-snapshot.json."""
    import json

    root = destination / board
    shutil.copytree(device_tree(board), root, symlinks=True)
    path = root / "edgerun-snapshot.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **manifest}))
    return root


def build_standin_delegate(directory: Path, name: str = "libstandin_delegate.so") -> Path:
    """Compile tests/data/standin_delegate.c (a TFLite external delegate at the real ABI) with cc."""
    import subprocess

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) to build the stand-in delegate library")
    output = directory / name
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(output),
                    str(REPO / "tests" / "data" / "standin_delegate.c")], check=True, timeout=60)
    return output


# ---- peak memory of one call (hardening tests) ---------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5) and return it in bytes: the baseline to
    subtract from peak_rss_bytes(). Where the kernel refuses the reset, the baseline is the old peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _status_kib("VmHWM") * 1024
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """VmHWM: this process's peak resident set since start or the last reset_peak_rss()."""
    return _status_kib("VmHWM") * 1024


_MEASURE = """
import json, sys
sys.path.insert(0, {repo!r})
from tests.helpers import peak_rss_bytes, reset_peak_rss
{setup}
def _call():
{body}
_base = reset_peak_rss()
try:
    _outcome = repr(_call())
except Exception as exc:
    _outcome = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"growth": peak_rss_bytes() - _base, "outcome": _outcome}}))
"""


def peak_rss_growth(body: str, setup: str = "", timeout: float = 120.0,
                    address_space: int = 3 << 30) -> tuple[int, str]:
    """Run ``setup`` then ``body`` (a function body) in a fresh Python; return (the peak RSS growth in
    bytes over the body, repr of its result or 'ErrorType: message'). The child's address space is
    capped at ``address_space`` so that a runaway allocation fails instead of swapping the machine."""
    import resource
    import subprocess
    import sys
    import textwrap

    script = _MEASURE.format(repo=str(REPO), setup=textwrap.dedent(setup),
                             body=textwrap.indent(textwrap.dedent(body), "    "))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, cwd=REPO)
    if done.returncode != 0:
        raise AssertionError(f"measured child failed ({done.returncode}): {done.stderr[-2000:]}")
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    return int(result["growth"]), str(result["outcome"])
