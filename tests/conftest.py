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
    """Parametrise ``backend_name`` over every backend that really runs here: the CPU runtimes of
    the test extra, plus a module's ``EXTRA_BACKENDS`` (the contract suite adds the simulated one,
    on an emulated Jetson, and the fake one). Accelerator backends are tested in
    tests/test_backend_*.py."""
    if "backend_name" in metafunc.fixturenames:
        extra = list(getattr(metafunc.module, "EXTRA_BACKENDS", ()))
        metafunc.parametrize("backend_name", ["onnxruntime", "litert", "ncnn", "openvino", *extra])


@pytest.fixture
def backend(registry: Registry, platform: Platform, backend_name: str) -> Iterator[object]:
    from .helpers import device_tree

    instance = registry.get(backend_name)
    if backend_name == "simulated":  # it only stands in for an emulated board's accelerator
        platform = detect(HostFS(device_tree("jetson-orin-nano")))
    availability = instance.probe(platform)
    if not availability.ok:
        pytest.fail(f"{backend_name} must be installed for the test suite: {availability.reason}")
    yield instance
