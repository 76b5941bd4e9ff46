"""Typed manifests: wrong types are one error naming the key; paths stay inside the package; the schema."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerun.config import Settings
from edgerun.errors import ModelIntegrityError
from edgerun.manifest import ModelManifest, manifest_json_schema
from edgerun.repository import load_package
from edgerun.serving import ServeConfig, create_app

from .helpers import MODELS, REPO, copy_package, peak_rss_growth
from .serving_helpers import ServerThread

LOAD_SETUP = "from pathlib import Path\nfrom edgerun.repository import load_package"
SCHEMA_FILE = REPO / "docs" / "schema" / "manifest.schema.json"


def edited(tmp_path: Path, edit: Any, name: str = "mobilenet_v2") -> Path:
    folder = copy_package(name, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(preprocess="RGB"), r"preprocess: Input should be a valid dictionary .*got \"RGB\""),
    (lambda m: m.update(artifacts=5), r"artifacts: Input should be a valid list"),
    (lambda m: m["preprocess"].update(mean=[0.5, math.nan, 0.5]), r"preprocess\.mean\.1: Input should be a "
                                                                   r"finite number \(got NaN\)"),
    (lambda m: m["preprocess"].update(std=[0.2, 0.2, math.inf]), r"preprocess\.std\.2: .*finite"),
    (lambda m: m["postprocess"].update(top_k=2.5), r"postprocess\.top_k: Input should be a valid integer"),
    (lambda m: m["postprocess"].update(top_k="five"), r"postprocess\.top_k: .*valid integer.*\"five\""),
    (lambda m: m["preprocess"].update(input_size=224), r"preprocess\.input_size: .*valid (list|tuple)"),
    (lambda m: m["preprocess"].update(input_size=[1, 10**9]), r"preprocess\.input_size\.1: .*less than or"),
    (lambda m: m.update(labels=["a", "b"]), r"labels: Input should be a valid string"),
    (lambda m: m["artifacts"][0].update(sha256=12), r"artifacts\.0\.sha256: Input should be a valid string"),
    (lambda m: m.update(task=None), r"task: Input should be 'classification'"),
])
def test_wrong_types_are_one_error_naming_the_key(tmp_path: Path, edit: Any, message: str) -> None:
    folder = edited(tmp_path, edit)
    with pytest.raises(ModelIntegrityError, match=message) as caught:
        load_package(folder)
    assert str(caught.value).startswith(str(folder / "manifest.json") + ": ")
    assert "\n" not in str(caught.value)


def test_cli_says_edgerun_error_naming_the_key(tmp_path: Path) -> None:
    folder = edited(tmp_path, lambda m: m["postprocess"].update(top_k=2.5))
    command = [sys.executable, "-m", "edgerun", "predict", "--model", str(folder),
               str(REPO / "samples" / "chelsea.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgerun: error: ")
    assert "postprocess.top_k: Input should be a valid integer" in lines[0]


def test_repository_api_answers_422_naming_the_key(tmp_path: Path) -> None:
    edited(tmp_path, lambda m: m.update(preprocess="RGB"))
    config = ServeConfig(settings=Settings(model_path=(tmp_path,)), models=())
    with ServerThread(create_app(config)) as server, server.client() as http:
        response = http.post("/v2/repository/models/mobilenet_v2/load")
    assert response.status_code == 422, response.text
    assert "preprocess: Input should be a valid dictionary" in response.json()["error"]


@pytest.mark.parametrize("key", ["labels", "license"])
def test_every_path_a_manifest_names_stays_inside_the_package(tmp_path: Path, key: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    folder = copy_package("mobilenet_v2", tmp_path / "models")
    (folder / "innocent.txt").symlink_to(secret)  # a symlink inside the folder that leads out
    for target in ("innocent.txt", str(secret), "../../secret.txt"):
        manifest = json.loads((MODELS / "mobilenet_v2" / "manifest.json").read_text())
        manifest[key] = target
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelIntegrityError, match=rf"{key} '.*' lies outside the package"):
            load_package(folder)


def test_labels_must_be_a_regular_file(tmp_path: Path) -> None:
    folder = copy_package("mobilenet_v2", tmp_path)
    (folder / "labels.txt").unlink()
    os.mkfifo(folder / "labels.txt")  # reading it would block for ever: try it in a child, with a timeout
    try:
        _, outcome = peak_rss_growth(f"return load_package(Path({str(folder)!r}))", LOAD_SETUP, timeout=20)
    except subprocess.TimeoutExpired:
        outcome = "blocked reading the FIFO"
    assert outcome.startswith("ModelIntegrityError"), outcome
    assert "labels 'labels.txt' is not a regular file" in outcome


def test_the_published_json_schema_is_current_and_accepts_the_shipped_manifests() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == manifest_json_schema(), (
        "docs/schema/manifest.schema.json is stale; regenerate it with: "
        "python -m edgerun.manifest > docs/schema/manifest.schema.json")
    for manifest in sorted(MODELS.glob("*/manifest.json")):
        jsonschema.validate(json.loads(manifest.read_text()), manifest_json_schema())
        ModelManifest.model_validate_json(manifest.read_text())


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
KEYS = ("task", "labels", "license", "preprocess", "postprocess", "artifacts", "name", "description")
NESTED = ("preprocess.mean", "preprocess.std", "preprocess.input_size", "preprocess.resize_to",
          "preprocess.resize", "postprocess.top_k", "postprocess.strides", "postprocess.score_threshold",
          "artifacts.0.file", "artifacts.0.sha256", "artifacts.0.companions", "artifacts.0.layout")


def _put(manifest: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target: Any = manifest
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    target[parts[-1]] = value


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(KEYS + NESTED), value=JSON_VALUES)
def test_manifest_property_a_package_or_a_clear_error(tmp_path_factory: pytest.TempPathFactory,
                                                      key: str, value: Any) -> None:
    """Any JSON value under any key: a package, or one ModelIntegrityError that names that key."""
    folder = copy_package("blazeface", tmp_path_factory.mktemp("fuzz"))
    manifest = json.loads((folder / "manifest.json").read_text())
    _put(manifest, key, value)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        package = load_package(folder)
    except ModelIntegrityError as exc:
        text = str(exc)
        assert "\n" not in text and (key.split(".")[0] in text or "lies outside" in text), text
        return
    assert package.artifacts and package.task in ("classification", "detection", "raw")


def test_a_huge_manifest_is_refused_without_reading_it(tmp_path: Path) -> None:
    folder = copy_package("blazeface", tmp_path)
    (folder / "manifest.json").write_text('{"description": "' + "x" * (64 << 20) + '"}')
    growth, outcome = peak_rss_growth(f"return load_package(Path({str(folder)!r}))", LOAD_SETUP)
    assert outcome.startswith("ModelIntegrityError") and "over 1048576 bytes" in outcome, outcome
    assert growth < 16 << 20, growth


def test_optimize_carries_no_file_from_outside_the_package(tmp_path: Path) -> None:
    from edgerun.optimize.package import carry_files

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    folder = copy_package("mobilenet_v2", tmp_path / "models")
    (folder / "EXTRA_NOTICE").symlink_to(secret)
    staging = tmp_path / "staging"
    staging.mkdir()
    carried = carry_files(load_package(folder), staging)
    assert "EXTRA_NOTICE" not in carried and not (staging / "EXTRA_NOTICE").exists()
    assert {"labels.txt", "NOTICE"} <= set(carried)
