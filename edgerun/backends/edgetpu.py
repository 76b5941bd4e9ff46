"""Coral Edge TPU backend: LiteRT + the libedgetpu.so.1 delegate; failures explained from HAL facts."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from ..errors import BackendUnavailableError, InvalidInputError
from ..hal import Accelerator, Platform
from ..hal.hostfs import ACCESS_DENIED, ACCESS_MISSING
from .base import Availability, LoadOptions
from .delegates import LIBRARY_MISSING, NOT_A_DELEGATE, DelegateFailure, load_external_delegate
from .litert_backend import (
    LITERT_MISSING,
    THREADS_HELP,
    LiteRTSession,
    installed_interpreter_package,
    open_interpreter,
)
from .options import BackendOptions

log = logging.getLogger(__name__)

LIBRARY = "libedgetpu.so.1"
DEVICE_FORMS = "'usb', 'usb:N', 'pci', 'pci:N', ':N' or none (first Edge TPU found)"
_DEVICE = re.compile(r"^(?P<type>usb|pci)?(?::(?P<index>\d+))?$")
_GROUPS = {"usb": "plugdev (udev rule from libedgetpu: 1a6e:089a and 18d1:9302)", "pci": "apex"}


def parse_device(device: str | None) -> tuple[str | None, int | None]:
    """ "usb:1" -> ("usb", 1); "pci" -> ("pci", None); ":0" -> (None, 0); None -> (None, None)."""
    match = _DEVICE.match((device or "").strip())
    if match is None:
        raise InvalidInputError(f"Edge TPU device {device!r} is not valid; use {DEVICE_FORMS}")
    index = match["index"]
    return match["type"], int(index) if index is not None else None


class EdgeTPUOptions(BackendOptions):
    """Which Edge TPU to open, through which libedgetpu."""

    backend: ClassVar[str] = "edgetpu"
    device: str | None = Field(None, description="usb, usb:N, pci, pci:N or :N (none: the first "
                               "Edge TPU found)")
    library: str = Field(LIBRARY, description="libedgetpu soname or path")
    threads: int | None = Field(None, ge=1, description=THREADS_HELP)

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str | None) -> str | None:
        if value is not None and _DEVICE.match(value.strip()) is None:
            raise ValueError(f"use {DEVICE_FORMS}")
        return value


def _candidates(platform: Platform, device_type: str | None) -> list[Accelerator]:
    return [
        a
        for a in platform.accelerator_details
        if a.kind == "edgetpu" and (device_type is None or a.id.startswith(f"edgetpu-{device_type}"))
    ]


def _bus(accelerator: Accelerator) -> str:
    return "usb" if accelerator.id.startswith("edgetpu-usb") else "pci"


def device_problem(platform: Platform, device: str | None) -> str | None:
    """Why the requested Edge TPU cannot be opened, from HAL facts; None when it looks usable."""
    device_type, index = parse_device(device)
    found = _candidates(platform, device_type)
    wanted = f"{device_type} Edge TPU" if device_type else "Edge TPU"
    if not found:
        return (
            f"no {wanted} found (no USB device 1a6e:089a or 18d1:9302, no /dev/apex_N); plug it in, or "
            "in a container pass -v /dev/bus/usb:/dev/bus/usb (USB) or --device /dev/apex_0 (PCIe)"
        )
    if index is not None and index >= len(found):
        return f"{device} requested but only {len(found)} {wanted}(s) found: {', '.join(a.id for a in found)}"
    chosen = found[index or 0]
    if chosen.access == ACCESS_DENIED:
        return (
            f"permission denied on {chosen.node} ({chosen.id}): add the user to group "
            f"{_GROUPS[_bus(chosen)]}, or run with access to the device"
        )
    if chosen.access == ACCESS_MISSING:
        return f"{chosen.id}: " + chosen.detail.get("problem", f"device node {chosen.node} is missing")
    return None


def explain_failure(failure: DelegateFailure, platform: Platform | None, device: str | None) -> str:
    """One sentence saying why the Edge TPU delegate did not load, instead of 'Failed to load delegate'."""
    if failure.cause == LIBRARY_MISSING:
        return (
            f"{LIBRARY} is not installed or cannot be loaded ({failure.message}); install libedgetpu1-std "
            "(or -max) from the Coral apt repository, or a libedgetpu build matching current TFLite"
        )
    if failure.cause == NOT_A_DELEGATE:
        return f"{failure.library} is not a TFLite delegate library ({failure.message})"
    problem = device_problem(platform, device) if platform is not None else None
    if problem is not None:
        return problem
    if platform is not None:
        return (
            "device busy: the Edge TPU is present and accessible but libedgetpu could not open it; another "
            f"process probably holds it (one process per Edge TPU) [{failure.message or 'no message'}]"
        )
    return (
        "libedgetpu refused to create the delegate: no Edge TPU found, device busy, or permission denied "
        f"[{failure.message or 'no message'}]"
    )


class EdgeTPUBackend:
    """Loads Edge-TPU-compiled ``*_edgetpu.tflite`` models through the libedgetpu delegate."""

    name = "edgetpu"
    formats = ("edgetpu",)
    options_class = EdgeTPUOptions

    def probe(self, platform: Platform) -> Availability:
        if installed_interpreter_package() is None:
            return Availability.no(LITERT_MISSING)
        if "edgetpu" not in platform.libraries:
            return Availability.no(f"{LIBRARY} not found on the library path (install libedgetpu1-std)")
        problem = device_problem(platform, None)
        if problem is not None:
            return Availability.no(problem)
        first = _candidates(platform, None)[0]
        state = first.detail.get("state")
        return Availability.yes(f"{first.describe()}" + (f"; {state}" if state else ""))

    def load(self, artifact: Path, options: LoadOptions) -> LiteRTSession:
        typed = options.typed(EdgeTPUOptions)
        device = typed.device
        if not artifact.name.endswith("_edgetpu.tflite"):
            log.warning(
                "%s is not named *_edgetpu.tflite: ops not compiled for the Edge TPU run on the CPU",
                artifact.name,
            )
        delegate_options = {"device": device} if device else {}
        try:  # a soname: the dynamic loader searches
            delegate = load_external_delegate(typed.library, delegate_options)
        except DelegateFailure as failure:
            raise BackendUnavailableError(
                "Edge TPU delegate did not load: " + explain_failure(failure, options.platform, device)
            ) from failure
        threads = options.threads_for(typed.threads)
        session = LiteRTSession(open_interpreter(artifact, threads, delegates=[delegate]), self.name)
        session.device = device or "first Edge TPU"
        session.effective_options = {**typed.effective(), "threads": threads}
        return session
