"""--output never deletes what edgerun did not write; every output path is checked before the work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgerun.errors import InvalidInputError
from edgerun.outputs import check_output_file, check_replaceable_folder, is_edgerun_package

from .helpers import MODELS, REPO, copy_package


def edgerun_cli(*args: str, cwd: Path, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "edgerun", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("edgerun: error: "), done.stderr
    return lines[0]


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_optimize_output_force_deletes_only_an_edgerun_package(tmp_path: Path) -> None:
    work = tmp_path / "home" / "projects" / "work"
    (work / "notes").mkdir(parents=True)
    (work / "thesis.tex").write_text("months of work")
    (work / "notes" / "todo.txt").write_text("keep me")
    source = copy_package("mobilenet_v2", tmp_path / "models")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"not an edgerun file")
    (tmp_path / "a-file").write_text("a file")
    before = snapshot(tmp_path)
    cases = {
        ".": "it is the working folder", "..": "it contains the working folder",
        str(tmp_path / "home"): "it is your home folder",
        str(tmp_path / "models"): "it contains the source package", str(source): "it is the source package",
        str(photos): "not an edgerun model package", str(tmp_path / "a-file"): "exists and is not a folder",
    }
    for output, reason in cases.items():
        # --calibration names no images: the output is refused before anything else is looked at
        done = edgerun_cli("optimize", str(source), "--int8", "--calibration", str(tmp_path / "none"),
                           "--latency-runs", "0", "--output", output, "--force",
                           cwd=work, home=tmp_path / "home")
        assert f"--output {output}: " in one_error_line(done) and reason in done.stderr, (output, done.stderr)
    assert snapshot(tmp_path) == before


def test_an_edgerun_package_is_replaceable_and_other_folders_are_not(tmp_path: Path) -> None:
    package = copy_package("blazeface", tmp_path)
    assert is_edgerun_package(package)
    assert check_replaceable_folder(package, "--output", force=True) == package
    with pytest.raises(InvalidInputError, match="not empty .*use --force"):
        check_replaceable_folder(package, "--output", force=False)
    (package / "sub").mkdir()
    assert not is_edgerun_package(package)
    with pytest.raises(InvalidInputError, match="not an edgerun model package"):
        check_replaceable_folder(package, "--output", force=True)
    with pytest.raises(InvalidInputError, match="is the root folder"):
        check_replaceable_folder(Path("/"), "--output", force=True)
    with pytest.raises(InvalidInputError, match="contains the source package"):
        check_replaceable_folder(MODELS, "--output", force=True, sources=(MODELS / "mobilenet_v2",))


@pytest.mark.parametrize("flag, value", [
    ("--output", "{missing}/report.json"), ("--csv", "{folder}"), ("--plot", "{missing}/plot.png"),
])
def test_profile_outputs_are_checked_before_profiling(tmp_path: Path, flag: str, value: str) -> None:
    target = value.format(missing=tmp_path / "missing", folder=tmp_path)
    # --samples names no folder: profiling would fail on it only after loading and measuring the model
    done = edgerun_cli("profile", "--runs", "1", "--warmup", "0", "--idle", "0", "--no-progress",
                       "--samples", str(tmp_path / "no-samples"), flag, target, cwd=tmp_path)
    line = one_error_line(done)
    assert line.startswith(f"edgerun: error: {flag} {target}: "), line
    assert ("does not exist" in line) or ("not a regular file" in line), line


@pytest.mark.parametrize("flag, value", [("--json-lines", "{missing}/frames.jsonl"),
                                         ("--output", "{file}/clip.mp4"), ("--output", "{file}/frames")])
def test_run_outputs_are_checked_before_the_model_and_source_open(tmp_path: Path, flag: str,
                                                                  value: str) -> None:
    (tmp_path / "a-file").write_text("x")
    target = value.format(missing=tmp_path / "missing", file=tmp_path / "a-file")
    done = edgerun_cli("run", "--source", str(tmp_path / "no-such-video.mp4"), "--max-frames", "1",
                       flag, target, cwd=tmp_path)
    assert one_error_line(done).startswith(f"edgerun: error: {flag} {target}: "), done.stderr


def test_output_file_check_refuses_folders_and_special_files(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(InvalidInputError, match="not a regular file"):
            check_output_file(path, "--json")
    assert check_output_file(tmp_path / "new.json", "--json") == tmp_path / "new.json"

