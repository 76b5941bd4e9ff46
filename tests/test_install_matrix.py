"""pyproject's extras per board Python, offline: the markers scripts/check_install_matrix.py hands to
pip (which .ci/run runs against the index) give each target what it can install, and `all` holds
every feature extra. The resolution itself needs the index and runs in .ci/run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from .helpers import REPO

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def _script() -> ModuleType:
    path = REPO / "scripts" / "check_install_matrix.py"
    spec = importlib.util.spec_from_file_location("check_install_matrix", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


MATRIX = _script()
TARGETS = {t.name: t for t in MATRIX.TARGETS}


def _project(path: Path = REPO / "pyproject.toml") -> tuple[str, list[str], list[Requirement]]:
    """What the wheel's METADATA says (Provides-Extra, Requires-Dist), read from pyproject.toml."""
    project = tomllib.loads(path.read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for extra, items in project["optional-dependencies"].items():
        for text in items:
            requirement = Requirement(text)
            marker = f"({requirement.marker}) and " if requirement.marker else ""
            requirement.marker = None
            requirements.append(Requirement(f"{requirement}; {marker}extra == '{extra}'"))
    return project["name"], list(project["optional-dependencies"]), requirements


def _sets(target: str) -> dict[str, set[str]]:
    return MATRIX.extra_sets(_project(), TARGETS[target])


def test_the_matrix_covers_the_board_pythons_with_every_glibc_tag() -> None:
    seen = {(t.python, t.machine) for t in MATRIX.TARGETS}
    assert {("3.10", "aarch64"), ("3.11", "aarch64"), ("3.12", "aarch64"), ("3.13", "aarch64"),
            ("3.10", "x86_64"), ("3.12", "x86_64"), ("3.11", "armv7l")} <= seen
    jetpack = TARGETS["jetpack6"]
    assert (jetpack.python, jetpack.glibc) == ("3.10", 35)
    tags = jetpack.platforms()
    assert tags[0] == "manylinux_2_35_aarch64" and "manylinux_2_17_aarch64" in tags
    assert len(tags) == 35 - 17 + 2 and tags[-1] == "manylinux2014_aarch64"  # pip does not widen


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_all_holds_every_feature_extra(target: str) -> None:
    sets = _sets(target)
    if "all" in sets:
        assert MATRIX.missing_from_all(sets, sets) == []


def test_the_optimize_floor_admits_the_newest_cp310_onnxruntime() -> None:
    (onnxruntime,) = [Requirement(r) for r in _sets("jetpack6")["optimize"] if r.startswith("onnxruntime")]
    assert Version("1.23.2") in onnxruntime.specifier  # the last onnxruntime with cp310 wheels
    assert any(r.startswith("pydantic>=2") for r in _sets("x86_64-py3.12")["serve"])


def test_litert_on_32_bit_pi_os_is_tflite_runtime() -> None:
    assert _sets("pi-os-32bit")["litert"] == {"tflite-runtime>=2.14"}  # numpy<2 comes from piwheels
    armv7l = MATRIX.Target("pi-os-32bit", "3.11", "armv7l", 36)
    assert MATRIX.extra_sets(_project(), armv7l)["litert"] == {"tflite-runtime>=2.14", "numpy<2"}
    assert _sets("pi-os-bookworm")["litert"] == {"ai-edge-litert>=1.0"}
    newer = MATRIX.Target("py3.12-armv7l", "3.12", "armv7l", 36)
    assert MATRIX.extra_sets(_project(), newer)["litert"] == {"numpy<2"}  # no LiteRT wheel on 3.12+


def test_the_jetson_extra_brings_no_cpu_onnxruntime_and_no_pip_opencv() -> None:
    jetson = {Requirement(r).name for r in _sets("jetpack6")["jetson"]}
    assert "ai-edge-litert" in jetson and "fastapi" in jetson
    assert not jetson & {"onnxruntime", "opencv-python-headless", "opencv-python"}


def test_rknn_is_claimed_only_where_rockchip_publishes_wheels() -> None:
    assert _sets("jetpack6")["rknn"] and not _sets("debian-trixie-arm64")["rknn"]
    assert not _sets("x86_64-py3.12")["rknn"]
