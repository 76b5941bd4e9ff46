"""ARM NPU backend: LiteRT external delegates chosen from the platform (NXP VX, Ethos-U, Arm NN)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailableError
from ..hal import Platform
from ..hal.hostfs import ACCESS_OK
from .base import Availability, LoadOptions
from .delegates import LIBRARY_MISSING, NOT_A_DELEGATE, DelegateFailure, load_external_delegate
from .litert_backend import LITERT_MISSING, LiteRTSession, installed_interpreter_package, open_interpreter

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


def _user_options(extra: Mapping[str, str]) -> dict[str, str]:
    """extra keys ``delegate.<name>`` become delegate options ``<name>``."""
    return {k.removeprefix("delegate."): v for k, v in extra.items() if k.startswith("delegate.")}


def choose_delegate(platform: Platform | None, extra: Mapping[str, str]) -> DelegateChoice | None:
    """The delegate for this platform: an explicit ``extra['delegate']`` path, else the SoC's NPU
    delegate, else the Arm NN delegate (``extra['backends']``, default GpuAcc,CpuAcc); None if none."""
    options = _user_options(extra)
    if extra.get("delegate"):
        return DelegateChoice(extra["delegate"], options, f"external delegate {extra['delegate']}")
    for accelerator in platform.accelerator_details if platform else ():
        if accelerator.kind in _NPU_DELEGATES:
            key, soname, label = _NPU_DELEGATES[accelerator.kind]
            return DelegateChoice(soname, options, label, accelerator.id)
    if platform is not None and "armnn_delegate" in platform.libraries:
        armnn = {"backends": extra.get("backends", ARMNN_DEFAULT_BACKENDS), "logging-severity": "warning"}
        soname = platform.libraries["armnn_delegate"].rsplit("/", 1)[-1]
        return DelegateChoice(soname, {**armnn, **options}, f"Arm NN delegate ({armnn['backends']})")
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
        choice = choose_delegate(options.platform, options.extra)
        if choice is None:
            raise BackendUnavailableError(
                "armnpu: no delegate for this platform; pass extra "
                "{'delegate': '/path/to/lib...delegate.so'}; " + NNAPI_NOTE
            )
        try:
            delegate = load_external_delegate(choice.library, choice.options)
        except DelegateFailure as failure:
            raise BackendUnavailableError(f"{choice.label} did not load: {_explain(failure)}") from failure
        log.info("armnpu: %s with options %s", choice.label, dict(choice.options))
        xnnpack = options.extra.get("xnnpack", "off").lower() in ("on", "true", "1")
        interpreter = open_interpreter(artifact, options.threads, delegates=[delegate], xnnpack=xnnpack)
        return LiteRTSession(interpreter, backend_name=self.name)


def _explain(failure: DelegateFailure) -> str:
    if failure.cause == LIBRARY_MISSING:
        return f"{failure.library} is not installed or cannot be loaded ({failure.message})"
    if failure.cause == NOT_A_DELEGATE:
        return f"{failure.library} is not a TFLite delegate library ({failure.message})"
    return (
        f"the delegate refused to start: NPU driver not loaded, device node not accessible, or "
        f"unsupported options [{failure.message or 'no message'}]"
    )
