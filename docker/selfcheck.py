"""Build-time self-check of an accelerator image: its real software on an emulated board.

The board tree (devices/<board>/rootfs) supplies the hardware; its placeholder vendor libraries
are replaced by the names of the libraries this image really has (found on / by edgerun's HAL),
so ``edgerun backends --json --root TREE`` answers for the image's own stack. The build fails
(exit 1) unless every ``--expect`` backend is available there, every ``--module`` imports,
every ``--provider`` is in onnxruntime's build and, with ``--gstreamer``, cv2 has GStreamer.

    python3 selfcheck.py --board /tmp/board --expect tensorrt [--module picamera2] [--gstreamer]
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgerun.hal import HostFS
from edgerun.hal.libraries import KNOWN_LIBRARIES, LIBRARY_DIRS, find_libraries


def graft_image_libraries(tree: Path, image: HostFS) -> dict[str, str]:
    """Drop the tree's vendor library placeholders; add the image's own (empty files, same names)."""
    patterns = [p for group in KNOWN_LIBRARIES.values() for p in group]
    for directory in LIBRARY_DIRS:
        folder = tree / directory.lstrip("/")
        for entry in folder.iterdir() if folder.is_dir() else ():
            if any(fnmatch.fnmatch(entry.name, p) for p in patterns):
                entry.unlink()
    found = find_libraries(image)
    for host_path in found.values():
        target = tree / host_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    return found


def backend_problems(tree: Path, expected: list[str]) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "edgerun", "backends", "--json", "--root", str(tree)],
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        return [f"edgerun backends failed: {result.stderr.strip()[-500:]}"]
    rows = {row["name"]: row for row in json.loads(result.stdout)["backends"]}
    problems = []
    for name in expected:
        row = rows.get(name)
        if row is None or not row["available"]:
            problems.append(f"backend {name}: {row['reason'] if row else 'not registered'}")
        else:
            print(f"selfcheck: backend {name} available: {row['reason']}")
    return problems


def module_problems(modules: list[str], providers: list[str], gstreamer: bool) -> list[str]:
    problems = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import failure (ABI, missing .so) fails the build
            problems.append(f"python module {name}: {type(exc).__name__}: {exc}")
    if providers:
        import onnxruntime

        missing = [p for p in providers if p not in onnxruntime.get_available_providers()]
        if missing:
            problems.append(f"onnxruntime {onnxruntime.__version__} lacks {missing}")
    if gstreamer:
        import cv2

        info = cv2.getBuildInformation()
        if not any("GStreamer:" in line and "YES" in line for line in info.splitlines()):
            problems.append(f"cv2 {cv2.__version__} from {cv2.__file__} has no GStreamer (csi:// needs it)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", type=Path, required=True, help="an emulated board tree (rootfs)")
    parser.add_argument("--expect", action="append", default=[], help="a backend that must be available")
    parser.add_argument("--module", action="append", default=[], help="a Python module that must import")
    parser.add_argument("--provider", action="append", default=[], help="an onnxruntime provider")
    parser.add_argument("--gstreamer", action="store_true", help="cv2 must have GStreamer")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgerun-selfcheck-") as scratch:
        tree = Path(scratch) / "rootfs"
        shutil.copytree(args.board, tree, symlinks=True)
        libraries = graft_image_libraries(tree, HostFS("/"))
        print(f"selfcheck: image libraries {libraries or 'none'}")
        problems = backend_problems(tree, args.expect)
    problems += module_problems(args.module, args.provider, args.gstreamer)
    for problem in problems:
        print(f"selfcheck: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
