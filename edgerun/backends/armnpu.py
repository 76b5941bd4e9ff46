"""ARM NPU backend: LiteRT external delegates chosen from the platform (NXP VX, Ethos-U, Arm NN)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from ..errors import BackendUnavailableError
from ..hal import Platform
from ..hal.hostfs import ACCESS_OK
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

ARMNN_DEFAULT_BACKENDS = "GpuAcc,CpuAcc"
NNAPI_NOTE = "NNAPI exists only on Android (deprecated in Android 15), not on Linux boards"


@dataclass(frozen=True)
class DelegateChoice:
    """Which delegate library to load, with which options, and for which accelerator."""

    library: str
    options: Mapping[str, str]
    label: str
    accelerator: str | None = None


# Accelerator kind -> (library key in hal.libraries.KNOWN_LIBRARIES, soname, label)
_NPU_DELEGATES = {
    "vx-npu": ("vx_delegate", "libvx_delegate.so", "NXP VX delegate (i.MX 8M Plus NPU)"),
    "ethos-u": ("ethosu_delegate", "libethosu_delegate.so", "Ethos-U delegate (i.MX 93)"),
}


class ArmNpuOptions(BackendOptions):
    """Which LiteRT external delegate to load, and its options."""

    backend: ClassVar[str] = "armnpu"
    delegate: str | None = Field(None, description="delegate library path or soname (none: the SoC's "
                                 "NPU delegate, else the Arm NN delegate)")
    delegate_options: dict[str, str] = Field(
        default_factory=dict, description="options passed to the delegate, e.g. backends=CpuAcc")
    armnn_backends: str = Field(ARMNN_DEFAULT_BACKENDS,
                                description="Arm NN delegate compute backends, in order")
    xnnpack: bool = Field(False, description="also apply XNNPACK (it can claim ops before the NPU does)")
    threads: int | None = Field(None, ge=1, description=THREADS_HELP)


def choose_delegate(platform: Platform | None, options: ArmNpuOptions) -> DelegateChoice | None:
    """The delegate for this platform: an explicit ``delegate`` path, else the SoC's NPU delegate,
    else the Arm NN delegate (with ``armnn_backends``); None if none."""
    extra = dict(options.delegate_options)
    if options.delegate:
        return DelegateChoice(options.delegate, extra, f"external delegate {options.delegate}")
    for accelerator in platform.accelerator_details if platform else ():
        if accelerator.kind in _NPU_DELEGATES:
            key, soname, label = _NPU_DELEGATES[accelerator.kind]
            return DelegateChoice(soname, extra, label, accelerator.id)
    if platform is not None and "armnn_delegate" in platform.libraries:
        armnn = {"backends": options.armnn_backends, "logging-severity": "warning"}
        soname = platform.libraries["armnn_delegate"].rsplit("/", 1)[-1]
        return DelegateChoice(soname, {**armnn, **extra}, f"Arm NN delegate ({armnn['backends']})")
    return None


def _probe_npu(platform: Platform) -> Availability | None:
    for accelerator in platform.accelerator_details:
        if accelerator.kind not in _NPU_DELEGATES:
            continue
        key, soname, label = _NPU_DELEGATES[accelerator.kind]
        if key not in platform.libraries:
            return Availability.no(f"{accelerator.name} found but {soname} is not installed")
        if accelerator.access != ACCESS_OK:
            return Availability.no(
                f"{accelerator.node} {accelerator.access} ({accelerator.name}); "
                "the service user needs access to the NPU device node"
            )
        return Availability.yes(f"{label} at {platform.libraries[key]}")
    return None


class ArmNpuBackend:
    """Runs ``.tflite`` models through an ARM NPU delegate picked from the platform."""

    name = "armnpu"
    formats = ("tflite",)
    options_class = ArmNpuOptions

    def probe(self, platform: Platform) -> Availability:
        if installed_interpreter_package() is None:
            return Availability.no(LITERT_MISSING)
        npu = _probe_npu(platform)
        if npu is not None:
            return npu
        if "armnn_delegate" in platform.libraries:
            return Availability.yes(f"Arm NN delegate at {platform.libraries['armnn_delegate']}")
        return Availability.no(
            "no ARM NPU delegate: no i.MX NPU (VX / Ethos-U) and no libarmnnDelegate.so; " + NNAPI_NOTE
        )

    def load(self, artifact: Path, options: LoadOptions) -> LiteRTSession:
        typed = options.typed(ArmNpuOptions)
        choice = choose_delegate(options.platform, typed)
        if choice is None:
            raise BackendUnavailableError(
                "armnpu: no delegate for this platform; give one with "
                "--option delegate=/path/to/lib...delegate.so; " + NNAPI_NOTE
            )
        try:
            delegate = load_external_delegate(choice.library, choice.options)
        except DelegateFailure as failure:
            raise BackendUnavailableError(f"{choice.label} did not load: {_explain(failure)}") from failure
        log.info("armnpu: %s with options %s", choice.label, dict(choice.options))
        threads = options.threads_for(typed.threads)
        interpreter = open_interpreter(artifact, threads, delegates=[delegate], xnnpack=typed.xnnpack)
        session = LiteRTSession(interpreter, backend_name=self.name)
        session.device = choice.accelerator or choice.label
        session.effective_options = {**typed.effective(), "delegate": choice.library,
                                     "delegate_options": dict(choice.options), "threads": threads}
        return session


def _explain(failure: DelegateFailure) -> str:
    if failure.cause == LIBRARY_MISSING:
        return f"{failure.library} is not installed or cannot be loaded ({failure.message})"
    if failure.cause == NOT_A_DELEGATE:
        return f"{failure.library} is not a TFLite delegate library ({failure.message})"
    return (
        f"the delegate refused to start: NPU driver not loaded, device node not accessible, or "
        f"unsupported options [{failure.message or 'no message'}]"
    )
