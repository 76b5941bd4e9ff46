"""Model packages: manifests, checksums, lookup by name and path, hostile names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgerun.errors import ModelIntegrityError, ModelNotFoundError
from edgerun.repository import ModelRepository, load_package, sha256_of, verify_artifact

from .helpers import MODELS, copy_package, flip_last_byte

SHIPPED = ("blazeface", "mobilenet_v2", "mobilenet_v2_int8")


def test_builtin_packages_are_listed_and_their_checksums_hold() -> None:
    repository = ModelRepository()
    assert set(SHIPPED) <= set(repository.names())
    for package in repository.packages():
        assert package.artifacts, package.name
        for artifact in package.artifacts:
            verify_artifact(artifact)
            assert artifact.layout in ("NCHW", "NHWC")
        assert (package.root / "NOTICE").is_file()


def test_classifier_manifest_values() -> None:
    package = ModelRepository().get("mobilenet_v2")
    assert package.task == "classification" and len(package.labels) == 1000
    assert package.labels[285] == "Egyptian cat"
    assert set(package.formats) == {"onnx", "tflite", "ncnn"}
    assert package.preprocess is not None and package.preprocess.resize == "crop"


def test_lookup_by_path_and_by_bare_model_file() -> None:
    repository = ModelRepository(roots=())
    by_path = repository.get(str(MODELS / "blazeface"))
    assert by_path.name == "blazeface" and by_path.task == "detection"
    raw = repository.get(MODELS / "blazeface" / "blazeface.onnx")
    assert raw.task == "raw" and raw.formats == ("onnx",)


def test_unknown_names_list_known_models_and_never_escape_the_repository(tmp_path: Path) -> None:
    repository = ModelRepository()
    with pytest.raises(ModelNotFoundError, match="known models: .*mobilenet_v2"):
        repository.get("resnet9000")
    with pytest.raises(ModelNotFoundError):
        repository.get("../models/mobilenet_v2/../../etc")
    with pytest.raises(ModelNotFoundError, match="unknown model file type"):
        (tmp_path / "notes.txt").write_text("x")
        repository.get(tmp_path / "notes.txt")


def test_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    folder = copy_package("blazeface", tmp_path)
    flip_last_byte(folder / "blazeface.onnx")
    package = load_package(folder)
    artifact = package.artifact_for(["onnx"])
    assert artifact is not None
    with pytest.raises(ModelIntegrityError, match="checksum mismatch for blazeface.onnx"):
        verify_artifact(artifact)
    (folder / "blazeface.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        verify_artifact(artifact)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("artifacts"), "missing key 'artifacts'"),
    (lambda m: m.update(task="segmentation"), "task: Input should be 'classification', .*segmentation"),
    (lambda m: m["preprocess"].update(resize="zoom"), "preprocess.resize: .*'crop'.*zoom"),
    (lambda m: m["preprocess"].update(std=[1, 0, 1]), "preprocess: std values must be non-zero"),
    (lambda m: m["artifacts"][0].update(file="../../outside.onnx"), "outside the package"),
    (lambda m: m["artifacts"][0].update(layout="CHWN"), "artifacts.0.layout: .*CHWN"),
    (lambda m: m.update(artifacts=[]), "artifacts: List should have at least 1 item"),
])
def test_malformed_manifests_say_what_is_wrong(tmp_path: Path, edit, message: str) -> None:
    folder = copy_package("blazeface", tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match=message):
        load_package(folder)


def test_unreadable_manifest_and_extra_roots(tmp_path: Path) -> None:
    folder = copy_package("blazeface", tmp_path)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="unreadable manifest"):
        load_package(folder)
    assert ModelRepository(roots=(tmp_path,)).names() == ["blazeface"]
    assert len(sha256_of(MODELS / "blazeface" / "labels.txt")) == 64
