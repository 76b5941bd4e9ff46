"""Fixtures shared by all tests: the available CPU backends and loaded sessions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgerun.backends.registry import Registry
from edgerun.hal import HostFS, Platform, detect

pytest_plugins = ("tests.serving_helpers", "tests.camera_helpers")  # session fixtures: servers, clips


@pytest.fixture(scope="session")
def platform() -> Platform:
    return detect(HostFS("/"))


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend_name`` over every backend that really runs here (the contract suite):
    the CPU runtimes of the test extra. Accelerator backends are tested in tests/test_backend_*.py."""
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", ["onnxruntime", "litert", "ncnn", "openvino"])


@pytest.fixture
def backend(registry: Registry, platform: Platform, backend_name: str) -> Iterator[object]:
    instance = registry.get(backend_name)
    availability = instance.probe(platform)
    if not availability.ok:
        pytest.fail(f"{backend_name} must be installed for the test suite: {availability.reason}")
    yield instance
