"""Check that every extra of the edgerun wheel resolves to binary wheels on the Pythons boards run.

Builds the wheel from this checkout, then asks pip's resolver (``pip install --dry-run --report``,
metadata only where the index serves PEP 658 metadata, so no full downloads) for each target:
JetPack 6 (3.10 aarch64, glibc 2.35), Pi OS bookworm (3.11 aarch64, 2.36), 3.12 aarch64 (2.39),
3.13 aarch64 (2.41), 3.10 and 3.12 x86_64, and the litert extra alone on 32-bit Pi OS (3.11 armv7l).

pip evaluates environment markers against the interpreter running it, not the --platform target,
so edgerun's own markers are evaluated here for each target and pip gets the resulting plain
requirements (its view of its dependencies' markers stays the host's). Needs the package index;
exits 1 when a target cannot install an extra, or when ``all`` misses an extra that installs there.

    python scripts/check_install_matrix.py [--jobs N] [--wheel dist/edgerun-*.whl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# Extras that are profiles, not features: `all` need not contain them.
PROFILES = {"all", "test", "jetson"}
# Extras pip cannot resolve from wheels alone: reported, not resolved (and not in `all`).
NOT_FROM_WHEELS = {
    "tensorrt": "x86_64 tensorrt-cu12 on PyPI is an sdist that fetches NVIDIA's wheels at install time",
}
# Packages whose chosen version is printed per target.
SHOWN = ("onnxruntime", "ai-edge-litert", "tflite-runtime", "numpy", "opencv-python-headless", "pydantic")


@dataclass(frozen=True)
class Target:
    """A board's Python: version, machine and glibc (manylinux tags 2_17 .. 2_<glibc>)."""

    name: str
    python: str
    machine: str
    glibc: int
    extras: tuple[str, ...] = ()  # empty: every extra
    with_dependencies: bool = True
    elsewhere: tuple[str, ...] = ()  # requirements served by another index there (piwheels), not PyPI

    def platforms(self) -> list[str]:
        if self.machine == "armv7l":
            tags = [f"manylinux_2_{minor}_armv7l" for minor in range(self.glibc, 16, -1)]
            return [*tags, "manylinux2014_armv7l", "linux_armv7l"]
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(self.glibc, 16, -1)]
        return [*tags, f"manylinux2014_{self.machine}"]  # pip does not widen one tag to older glibc

    def environment(self) -> dict[str, str]:
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "platform_machine": self.machine,
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }


TARGETS = (
    Target("jetpack6", "3.10", "aarch64", 35),
    Target("pi-os-bookworm", "3.11", "aarch64", 36),
    Target("ubuntu-24.04-arm64", "3.12", "aarch64", 39),
    Target("debian-trixie-arm64", "3.13", "aarch64", 41),
    Target("x86_64-py3.10", "3.10", "x86_64", 35),
    Target("x86_64-py3.12", "3.12", "x86_64", 39),
    # 32-bit Pi OS: only LiteRT (tflite-runtime) is claimed; numpy comes from piwheels there.
    Target("pi-os-32bit", "3.11", "armv7l", 36, extras=("litert",), with_dependencies=False,
           elsewhere=("numpy",)),
)


def build_wheel(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(directory), str(REPO)],
                   check=True)
    return next(directory.glob("edgerun-*.whl"))


def wheel_metadata(wheel: Path) -> tuple[str, list[str], list[Requirement]]:
    """(name, extras, Requires-Dist) from the wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode())
    requirements = [Requirement(text) for text in message.get_all("Requires-Dist") or []]
    return message["Name"], message.get_all("Provides-Extra") or [], requirements


def flatten(project: str, extras: Iterable[str], requirements: list[Requirement],
            environment: dict[str, str], seen: set[str] | None = None) -> set[str]:
    """The plain requirements ``extras`` stand for on ``environment`` (self-references expanded)."""
    seen = set() if seen is None else seen
    flat: set[str] = set()
    for extra in extras:
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in requirements:
            marker = requirement.marker
            if marker is None or not marker.evaluate({**environment, "extra": extra}):
                continue
            if requirement.name == project:
                flat |= flatten(project, requirement.extras, requirements, environment, seen)
            else:
                plain = Requirement(str(requirement))
                plain.marker = None
                flat.add(str(plain))
    return flat


def base_requirements(requirements: list[Requirement], environment: dict[str, str]) -> set[str]:
    return {f"{r.name}{r.specifier}" for r in requirements
            if r.marker is None or r.marker.evaluate({**environment, "extra": ""})}


def resolve(target: Target, requirements: set[str], scratch: Path) -> tuple[bool, str]:
    """pip's dry-run resolution for ``target``: (ok, chosen versions or the error)."""
    scratch.mkdir(parents=True, exist_ok=True)
    report = scratch / f"{target.name}-{abs(hash(frozenset(requirements)))}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary=:all:", "--python-version", target.python, "--implementation", "cp",
               "--target", str(scratch / "target"), "--report", str(report)]
    command += [argument for tag in target.platforms() for argument in ("--platform", tag)]
    command += [] if target.with_dependencies else ["--no-deps"]
    result = subprocess.run([*command, *sorted(requirements)], capture_output=True, text=True, timeout=600,
                            check=False)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        return False, " | ".join(errors[:2]) or result.stderr.strip()[-300:]
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    return True, ", ".join(f"{name} {chosen[name]}" for name in SHOWN if name in chosen)


def check_target(target: Target, wheel_info: tuple[str, list[str], list[Requirement]],
                 scratch: Path) -> list[str]:
    """Lines of the report for one target; a line starting with FAIL marks a failure."""
    requirements = wheel_info[2]
    environment = target.environment()
    wanted = list(target.extras or wheel_info[1])
    base = base_requirements(requirements, environment) if target.with_dependencies else set()
    sets = extra_sets(wheel_info, target)
    lines, resolved = [], []  # resolved: requirement sets that resolved (a subset of one resolves too)
    for extra in sorted(wanted, key=lambda e: -len(sets[e])):
        covering = next((name for name, done in resolved if sets[extra] <= done), None)
        if not sets[extra]:
            lines.append(f"ok    {target.name:<20} {extra:<9} (nothing to install here)")
        elif extra in NOT_FROM_WHEELS:
            lines.append(f"skip  {target.name:<20} {extra:<9} not checked: {NOT_FROM_WHEELS[extra]}")
        elif covering is not None:
            lines.append(f"ok    {target.name:<20} {extra:<9} (within {covering})")
        else:
            ok, detail = resolve(target, base | sets[extra], scratch)
            lines.append(f"{'ok  ' if ok else 'FAIL'}  {target.name:<20} {extra:<9} {detail}")
            if ok:
                resolved.append((extra, sets[extra]))
    if "all" in sets:
        installable = {line.split()[2] for line in lines if line.startswith("ok")}
        missing = missing_from_all(sets, installable)
        if missing:
            lines.append(f"FAIL  {target.name:<20} all       lacks installable extras: {', '.join(missing)}")
    return lines


def extra_sets(wheel_info: tuple[str, list[str], list[Requirement]], target: Target) -> dict[str, set[str]]:
    """extra -> the plain requirements it stands for on ``target`` (those from other indexes dropped)."""
    project, extras, requirements = wheel_info
    environment = target.environment()
    return {extra: {r for r in flatten(project, [extra], requirements, environment)
                    if Requirement(r).name not in target.elsewhere} for extra in target.extras or extras}


def missing_from_all(sets: dict[str, set[str]], installable: Iterable[str]) -> list[str]:
    """Feature extras that install on the target but whose requirements `all` does not include."""
    return sorted(e for e in set(installable) - PROFILES - set(NOT_FROM_WHEELS) if not sets[e] <= sets["all"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="an already built edgerun wheel")
    parser.add_argument("--jobs", type=int, default=len(TARGETS), help="targets resolved in parallel")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgerun-matrix-") as scratch_name:
        scratch = Path(scratch_name)
        wheel = args.wheel or build_wheel(scratch / "dist")
        info = wheel_metadata(wheel)
        print(f"{wheel.name}: extras {', '.join(info[1])}")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            reports = list(pool.map(lambda t: check_target(t, info, scratch / t.name), TARGETS))
    lines = [line for report in reports for line in report]
    print("\n".join(lines))
    failures = [line for line in lines if line.startswith("FAIL")]
    print(f"{len(failures)} failure(s) over {len(TARGETS)} targets")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
