"""Container entrypoint: stop with a clear message when the host does not fit the image, else exec edgerun.

The image says what it needs through environment variables baked in by its Dockerfile:
``EDGERUN_IMAGE_TARGET`` (cpu, rpi, coral, jetson) and, for Jetson, ``EDGERUN_IMAGE_L4T`` (the L4T
release of its base image). Host files are read through edgerun's HostFS, rooted at
``EDGERUN_HOST_ROOT`` (``/`` normally; a captured tree in tests). ``EDGERUN_SKIP_HOST_CHECK=1``
skips the checks. Exit status 78 (EX_CONFIG) means the host does not match.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence

from edgerun.hal import HostFS
from edgerun.hal.buses import usb_devices
from edgerun.hal.coral import USB_BOOTLOADER_ID, USB_RUNTIME_ID
from edgerun.hal.hostfs import ACCESS_OK
from edgerun.hal.jetson import parse_l4t_release

EX_CONFIG = 78
HOST_L4T_FILE = "/run/host/nv_tegra_release"     # the host's /etc/nv_tegra_release, bind-mounted
TEGRA_DRIVER_DIRS = ("/usr/lib/aarch64-linux-gnu/tegra", "/usr/lib/aarch64-linux-gnu/nvidia")

Check = Callable[[HostFS, Mapping[str, str]], list[str]]


def parse_l4t(text: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) from nv_tegra_release's first line (``# R35 (release), REVISION: 4.1``)."""
    release = parse_l4t_release(text or "")
    return parse_release(release) if release else None


def parse_release(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from a release string such as ``36.4.0`` or ``r35.4.1``."""
    match = re.fullmatch(r"r?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def l4t_compatible(image: tuple[int, ...], host: tuple[int, ...]) -> bool:
    """Whether a container built on L4T ``image`` runs with CUDA on an L4T ``host``.

    JetPack 4 (r32.7+) and 5 (r35) run any release of the same major; JetPack 6 (r36) splits at
    36.4 (before / from); JetPack 7 (r38, r39) runs JetPack 7 containers; otherwise exact.
    """
    if image[0] == 32 and host[0] == 32:
        return image[:2] >= (32, 7) and host[:2] >= (32, 7) or image == host
    if image[0] == 35 and host[0] == 35:
        return True
    if image[0] == 36 and host[0] == 36:
        return (image[:2] >= (36, 4)) == (host[:2] >= (36, 4))
    if image[0] in (38, 39) and host[0] in (38, 39):
        return True
    return image == host


def _version(parts: Sequence[int]) -> str:
    return ".".join(str(p) for p in parts)


def check_jetson(fs: HostFS, env: Mapping[str, str]) -> list[str]:
    """Host is a Jetson of the image's L4T family, and the NVIDIA runtime injected the GPU."""
    image = parse_release(env.get("EDGERUN_IMAGE_L4T", ""))
    host = parse_l4t(fs.read_text(HOST_L4T_FILE))
    if image is None:
        return ["image is missing EDGERUN_IMAGE_L4T (build it with docker/Dockerfile.jetson-jp5 or -jp6)"]
    if host is None:
        return [f"this image is for NVIDIA Jetson (L4T r{_version(image)}), but {HOST_L4T_FILE} "
                "is missing: bind-mount the host's /etc/nv_tegra_release there (the compose file "
                "does); a host without that file is not a Jetson"]
    problems = []
    if not l4t_compatible(image, host):
        problems.append(f"wrong L4T family: image built for L4T r{_version(image)}, host runs "
                        f"r{_version(host)}; use the edgerun image for the host's JetPack "
                        "(jetson-jp5 for r35, jetson-jp6 for r36.4+)")
    has_driver = any(fs.listdir(d) for d in TEGRA_DRIVER_DIRS)
    if not fs.exists("/dev/nvmap") or not has_driver:
        problems.append("no NVIDIA container runtime: /dev/nvmap and the Tegra driver libraries "
                        f"({' or '.join(TEGRA_DRIVER_DIRS)}) are absent; start the container with "
                        "--runtime nvidia (compose: runtime: nvidia; Kubernetes: "
                        "runtimeClassName: nvidia)")
    return problems


def coral_usb_present(fs: HostFS) -> bool:
    """A Coral USB Accelerator is on the host's USB bus (either enumeration)."""
    return any(d.usb_id in (USB_BOOTLOADER_ID, USB_RUNTIME_ID) for d in usb_devices(fs))


def apex_nodes(fs: HostFS) -> list[str]:
    """Coral PCIe / M.2 device nodes visible in the container."""
    return [f"/dev/{n}" for n in fs.listdir("/dev") if re.fullmatch(r"apex_\d+", n)]


def check_coral(fs: HostFS, env: Mapping[str, str]) -> list[str]:
    """An Edge TPU (USB or PCIe, per EDGERUN_CORAL=usb|pcie|any) is present and usable."""
    wanted = env.get("EDGERUN_CORAL", "any").strip().lower() or "any"
    if wanted not in ("usb", "pcie", "any"):
        return [f"EDGERUN_CORAL={wanted!r}: valid values are usb, pcie, any"]
    usb = wanted in ("usb", "any") and coral_usb_present(fs)
    pcie = apex_nodes(fs) if wanted in ("pcie", "any") else []
    if usb and not fs.exists("/dev/bus/usb"):
        return ["a Coral USB Accelerator is on the host but /dev/bus/usb is not mapped: bind-mount "
                "the whole bus (-v /dev/bus/usb:/dev/bus/usb --device-cgroup-rule='c 189:* rmw'), "
                "not one node, because the stick re-enumerates after its firmware loads"]
    if usb or pcie:
        return [f"{node} is not readable and writable by uid {os.getuid()}: add its group "
                "(--group-add, apex for PCIe)" for node in pcie if not _usable(fs, node)]
    where = {"usb": "on the USB bus (ids 1a6e:089a or 18d1:9302)", "pcie": "as /dev/apex_N",
             "any": "on the USB bus or as /dev/apex_N"}[wanted]
    return [f"no Coral Edge TPU found {where}: plug it in, map it into the container "
            "(USB: -v /dev/bus/usb:/dev/bus/usb; PCIe: --device /dev/apex_0), or use the cpu image"]


def _usable(fs: HostFS, node: str) -> bool:
    return fs.access(node) == ACCESS_OK


def check_rpi(fs: HostFS, env: Mapping[str, str]) -> list[str]:
    """The Raspberry Pi image runs on aarch64 only (its picamera2 comes from the Pi's apt repository)."""
    cpuinfo = fs.read_text("/proc/cpuinfo") or ""
    if "asimd" in cpuinfo or "CPU architecture: 8" in cpuinfo.replace("\t", ""):
        return []
    return ["this image is for Raspberry Pi (arm64), but the host CPU is not aarch64; "
            "use the cpu image"]


def check_cpu(fs: HostFS, env: Mapping[str, str]) -> list[str]:
    return []


CHECKS: dict[str, Check] = {"cpu": check_cpu, "rpi": check_rpi, "coral": check_coral,
                            "jetson": check_jetson}


def check_cache(env: Mapping[str, str]) -> list[str]:
    """The engine/model cache volume exists and this user can write to it."""
    cache = env.get("EDGERUN_CACHE_DIR", "")
    if not cache or os.access(cache, os.W_OK | os.X_OK):
        return []
    return [f"cache directory {cache} is not writable by uid {os.getuid()}: mount a named volume "
            f"there, or chown the bind-mounted folder to {os.getuid()}"]


def host_problems(env: Mapping[str, str]) -> list[str]:
    """Every reason this host cannot run this image (empty when it can)."""
    target = env.get("EDGERUN_IMAGE_TARGET", "cpu")
    check = CHECKS.get(target)
    if check is None:
        return [f"EDGERUN_IMAGE_TARGET={target!r}: valid targets are {', '.join(sorted(CHECKS))}"]
    fs = HostFS(env.get("EDGERUN_HOST_ROOT") or "/")
    return check(fs, env) + check_cache(env)


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    if env.get("EDGERUN_SKIP_HOST_CHECK", "") not in ("1", "true", "yes"):
        problems = host_problems(env)
        if problems:
            target = env.get("EDGERUN_IMAGE_TARGET", "cpu")
            for problem in problems:
                print(f"edgerun-entrypoint: host does not match the {target} image: {problem}",
                      file=sys.stderr)
            return EX_CONFIG
    args = list(argv) or ["serve"]
    os.execvp("edgerun", ["edgerun", *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
