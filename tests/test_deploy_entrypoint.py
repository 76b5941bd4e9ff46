"""Container entrypoint and health check: host-matching checks over emulated host trees, real HTTP."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO

JP6_HOST = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n"
JP5_HOST = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU architecture: 8\n"
X86_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx2\n"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docker_{name}", REPO / "docker" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = _load("entrypoint")
healthcheck = _load("healthcheck")


def _tree(root: Path, files: dict[str, str]) -> Path:
    """Write an emulated host tree: host path -> contents (device nodes are plain files here)."""
    for host_path, text in files.items():
        target = root / host_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def _jetson_runtime(l4t_line: str) -> dict[str, str]:
    return {"/run/host/nv_tegra_release": l4t_line, "/dev/nvmap": "",
            "/usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1": ""}


def _problems(root: Path, **env: str) -> list[str]:
    return entrypoint.host_problems({"EDGERUN_HOST_ROOT": str(root), **env})


JP6_IMAGE = {"EDGERUN_IMAGE_TARGET": "jetson", "EDGERUN_IMAGE_L4T": "36.4.0"}
JP5_IMAGE = {"EDGERUN_IMAGE_TARGET": "jetson", "EDGERUN_IMAGE_L4T": "35.4.1"}


@pytest.mark.parametrize(("text", "expected"), [
    (JP6_HOST, (36, 4, 3)),
    (JP5_HOST, (35, 4, 1)),
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref", (32, 7, 1)),
    ("Ubuntu 22.04", None),
    (None, None),
])
def test_parse_l4t(text: str | None, expected: tuple[int, int, int] | None) -> None:
    assert entrypoint.parse_l4t(text) == expected


@pytest.mark.parametrize(("image", "host", "ok"), [
    ((35, 4, 1), (35, 3, 1), True),     # JetPack 5.1: any r35
    ((36, 4, 0), (36, 4, 3), True),     # JetPack 6 from 36.4 on
    ((36, 4, 0), (36, 3, 0), False),    # split at 36.4
    ((36, 3, 0), (36, 2, 0), True),
    ((35, 4, 1), (36, 4, 3), False),    # wrong family
    ((32, 7, 1), (32, 7, 4), True),
    ((34, 1, 0), (34, 1, 1), False),    # otherwise exact
])
def test_l4t_compatibility(image: tuple[int, ...], host: tuple[int, ...], ok: bool) -> None:
    assert entrypoint.l4t_compatible(image, host) is ok


def test_jetson_image_on_matching_host_passes(tmp_path: Path) -> None:
    assert _problems(_tree(tmp_path, _jetson_runtime(JP6_HOST)), **JP6_IMAGE) == []
    assert _problems(_tree(tmp_path / "jp5", _jetson_runtime(JP5_HOST)), **JP5_IMAGE) == []


def test_jetson_image_on_wrong_l4t_family(tmp_path: Path) -> None:
    problems = _problems(_tree(tmp_path, _jetson_runtime(JP5_HOST)), **JP6_IMAGE)
    assert len(problems) == 1
    assert "wrong L4T family: image built for L4T r36.4.0, host runs r35.4.1" in problems[0]
    assert "jetson-jp5" in problems[0]


def test_jetson_image_without_nvidia_runtime(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"/run/host/nv_tegra_release": JP6_HOST})
    problems = _problems(root, **JP6_IMAGE)
    assert len(problems) == 1 and problems[0].startswith("no NVIDIA container runtime")
    assert "--runtime nvidia" in problems[0]


def test_jetson_image_on_a_host_that_is_not_a_jetson(tmp_path: Path) -> None:
    problems = _problems(_tree(tmp_path, {"/proc/cpuinfo": X86_CPUINFO}), **JP6_IMAGE)
    assert len(problems) == 1 and "/run/host/nv_tegra_release is missing" in problems[0]


def _usb_device(name: str, vendor: str, product: str) -> dict[str, str]:
    return {f"/sys/bus/usb/devices/{name}/idVendor": vendor + "\n",
            f"/sys/bus/usb/devices/{name}/idProduct": product + "\n"}


@pytest.mark.parametrize("ids", [("1a6e", "089a"), ("18d1", "9302")])
def test_coral_usb_found_before_and_after_firmware_load(tmp_path: Path, ids: tuple[str, str]) -> None:
    root = _tree(tmp_path, {**_usb_device("1-1", "1d6b", "0002"), **_usb_device("2-1", *ids),
                            "/dev/bus/usb/002/003": ""})
    assert _problems(root, EDGERUN_IMAGE_TARGET="coral", EDGERUN_CORAL="usb") == []
    assert _problems(root, EDGERUN_IMAGE_TARGET="coral") == []


def test_coral_usb_present_but_bus_not_mapped(tmp_path: Path) -> None:
    root = _tree(tmp_path, _usb_device("2-1", "18d1", "9302"))
    (problem,) = _problems(root, EDGERUN_IMAGE_TARGET="coral")
    assert "/dev/bus/usb is not mapped" in problem and "c 189:* rmw" in problem


def test_coral_pcie_node_found_and_permissions_checked(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"/dev/apex_0": ""})
    assert _problems(root, EDGERUN_IMAGE_TARGET="coral", EDGERUN_CORAL="pcie") == []
    if os.getuid() != 0:  # root can open anything; the permission message needs a normal user
        (root / "dev/apex_0").chmod(0o000)
        (problem,) = _problems(root, EDGERUN_IMAGE_TARGET="coral", EDGERUN_CORAL="pcie")
        assert "/dev/apex_0 is not readable and writable" in problem


def test_no_coral_present(tmp_path: Path) -> None:
    root = _tree(tmp_path, _usb_device("1-1", "1d6b", "0002"))
    (problem,) = _problems(root, EDGERUN_IMAGE_TARGET="coral", EDGERUN_CORAL="pcie")
    assert problem.startswith("no Coral Edge TPU found as /dev/apex_N")
    (problem,) = _problems(root, EDGERUN_IMAGE_TARGET="coral", EDGERUN_CORAL="tpu")
    assert "valid values are usb, pcie, any" in problem


def test_rpi_image_needs_aarch64(tmp_path: Path) -> None:
    assert _problems(_tree(tmp_path / "pi", {"/proc/cpuinfo": ARM_CPUINFO}),
                     EDGERUN_IMAGE_TARGET="rpi") == []
    (problem,) = _problems(_tree(tmp_path / "pc", {"/proc/cpuinfo": X86_CPUINFO}),
                           EDGERUN_IMAGE_TARGET="rpi")
    assert "not aarch64" in problem


def test_unknown_target_and_unwritable_cache(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, EDGERUN_IMAGE_TARGET="tpu")
    assert "valid targets are coral, cpu, jetson, rpi" in problem
    missing = tmp_path / "no-such-volume"
    (problem,) = _problems(tmp_path, EDGERUN_IMAGE_TARGET="cpu", EDGERUN_CACHE_DIR=str(missing))
    assert f"cache directory {missing} is not writable" in problem
    assert _problems(tmp_path, EDGERUN_IMAGE_TARGET="cpu", EDGERUN_CACHE_DIR=str(tmp_path)) == []


def _run_entrypoint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run([sys.executable, str(REPO / "docker" / "entrypoint.py"), *args],
                          env={**os.environ, "PATH": path, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_entrypoint_refuses_a_mismatched_host_with_exit_78(tmp_path: Path) -> None:
    result = _run_entrypoint(["models"], {"EDGERUN_HOST_ROOT": str(tmp_path), **JP6_IMAGE})
    assert result.returncode == entrypoint.EX_CONFIG
    assert "host does not match the jetson image" in result.stderr
    assert result.stdout == ""


def test_entrypoint_execs_edgerun_when_the_host_matches(tmp_path: Path) -> None:
    result = _run_entrypoint(["models", "--json"], {"EDGERUN_HOST_ROOT": str(tmp_path),
                                                    "EDGERUN_IMAGE_TARGET": "cpu"})
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v2" in {row["name"] for row in json.loads(result.stdout)}
    skipped = _run_entrypoint(["models", "--json"], {"EDGERUN_HOST_ROOT": str(tmp_path),
                                                     "EDGERUN_SKIP_HOST_CHECK": "1", **JP6_IMAGE})
    assert skipped.returncode == 0, skipped.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    seen_auth: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        type(self).seen_auth.append(self.headers.get("Authorization"))
        self.send_response(self.status if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _healthcheck(port: int, **env: str) -> int:
    result = subprocess.run([sys.executable, str(REPO / "docker" / "healthcheck.py")],
                            env={"PATH": os.environ.get("PATH", ""), "EDGERUN_PORT": str(port), **env},
                            capture_output=True, text=True, timeout=30, check=False)
    return result.returncode


def test_healthcheck_against_a_real_http_server(health_server: http.server.HTTPServer) -> None:
    port = health_server.server_address[1]
    _Health.status, _Health.seen_auth = 200, []
    assert _healthcheck(port) == 0
    assert _healthcheck(port, EDGERUN_API_KEY="s3cret") == 0
    assert _Health.seen_auth == [None, "Bearer s3cret"]
    _Health.status = 503
    assert _healthcheck(port) == 1


def test_healthcheck_fails_when_nothing_listens(health_server: http.server.HTTPServer) -> None:
    port = health_server.server_address[1]
    health_server.shutdown()
    health_server.server_close()
    assert _healthcheck(port) == 1
    assert healthcheck.ready_url({"EDGERUN_PORT": "9000"}) == "http://127.0.0.1:9000/v2/health/ready"
