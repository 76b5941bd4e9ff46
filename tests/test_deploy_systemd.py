"""systemd unit, drop-ins, udev rules: systemd-analyze verify and security on the real files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "edgerun.service"
DROP_INS = sorted((SYSTEMD / "edgerun.service.d").glob("*.conf"))
UDEV_RULES = SYSTEMD / "udev" / "99-edgerun-coral.rules"
MAX_EXPOSURE = 3.0
EXEC_START = "/opt/edgerun/bin/edgerun"


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        message = "systemd-analyze not installed (apt-get install systemd; .ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return str(tool)


def _stage(root: Path, drop_ins: list[Path]) -> Path:
    """A root tree with the unit, the chosen drop-ins and an executable at ExecStart's path."""
    unit_dir = root / "etc/systemd/system"
    (unit_dir / "edgerun.service.d").mkdir(parents=True)
    shutil.copy(UNIT, unit_dir / UNIT.name)
    for conf in drop_ins:
        shutil.copy(conf, unit_dir / "edgerun.service.d" / conf.name)
    program = root / EXEC_START.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_systemd_analyze(), "verify", f"--root={root}", "--man=no",
                           "--recursive-errors=no", "edgerun.service"],
                          capture_output=True, text=True, timeout=60, check=False)


def _settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (keys may repeat)."""
    section, rows = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        rows.append((section, key.strip(), value.strip()))
    return rows


def _values(path: Path, key: str) -> list[str]:
    return [value for _, k, value in _settings(path) if k == key]


def test_unit_verifies_with_empty_stderr(tmp_path: Path) -> None:
    result = _verify(_stage(tmp_path, []))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@pytest.mark.parametrize("drop_in", DROP_INS, ids=[p.stem for p in DROP_INS])
def test_each_drop_in_verifies_with_empty_stderr(tmp_path: Path, drop_in: Path) -> None:
    result = _verify(_stage(tmp_path, [drop_in]))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_all_drop_ins_together_verify(tmp_path: Path) -> None:
    result = _verify(_stage(tmp_path, DROP_INS))
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_catches_a_bad_drop_in(tmp_path: Path) -> None:
    """Control: the harness really reads drop-ins and reports bad settings on stderr."""
    bad = tmp_path / "bad.conf"
    bad.write_text("[Service]\nDeviceAllow=/dev/apex_0 rwz\nWatchdogSec=thirty\n")
    result = _verify(_stage(tmp_path / "root", [bad]))
    assert "Invalid device rights 'rwz'" in result.stderr
    assert "Failed to parse sec value" in result.stderr


def test_base_unit_security_exposure(tmp_path: Path) -> None:
    alone = tmp_path / "edgerun.service"       # without the drop-ins beside the real file
    shutil.copy(UNIT, alone)
    result = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--no-pager",
                             str(alone)], capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for edgerun\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE


def test_unit_is_a_notify_service_with_watchdog_and_sandbox() -> None:
    settings = {key: value for _, key, value in _settings(UNIT)}
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert int(settings["WatchdogSec"]) > 0 and settings["Restart"] == "on-failure"
    assert settings["DynamicUser"] == "yes" and settings["DevicePolicy"] == "closed"
    for directory in ("StateDirectory", "CacheDirectory", "ConfigurationDirectory"):
        assert settings[directory] == "edgerun"
    assert settings["ExecStart"].split()[:2] == [EXEC_START, "serve"]
    assert "PrivateDevices" not in settings       # it would hide every accelerator node
    assert _values(UNIT, "DeviceAllow") == []     # devices come only from drop-ins


@pytest.mark.parametrize("drop_in", DROP_INS, ids=[p.stem for p in DROP_INS])
def test_drop_ins_allow_devices_and_groups(drop_in: Path) -> None:
    allowed = _values(drop_in, "DeviceAllow")
    assert allowed and all(re.fullmatch(r"(/dev/\S+|char-[\w*-]+) rw", a) for a in allowed)
    assert _values(drop_in, "SupplementaryGroups")


def test_expected_accelerator_drop_ins_exist() -> None:
    assert {p.stem for p in DROP_INS} >= {"jetson", "coral-usb", "coral-pcie", "rpi-camera", "rockchip"}
    assert "char-usb_device rw" in _values(SYSTEMD / "edgerun.service.d/coral-usb.conf", "DeviceAllow")


STANDARD_GROUPS = {"video", "plugdev"}   # in Debian's and Ubuntu's base-passwd


def test_every_supplementary_group_exists_or_is_created_by_sysusers() -> None:
    sysusers = SYSTEMD / "sysusers.d" / "edgerun.conf"
    created = set()
    for line in sysusers.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, name, gid = line.split()
            assert (kind, gid) == ("g", "-")
            created.add(name)
    named = {group for conf in DROP_INS for value in _values(conf, "SupplementaryGroups")
             for group in value.split()}
    assert named <= STANDARD_GROUPS | created
    assert "apex" in created                   # GROUP="apex" in the udev rules too


RULE_TERM = re.compile(r'\s*([A-Z]+(?:\{[\w.-]+\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*')


def test_udev_rules_parse_and_cover_both_coral_usb_ids_and_apex() -> None:
    rules = [line for line in UDEV_RULES.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    parsed = []
    for line in rules:
        terms = line.split(",")
        matches = [RULE_TERM.fullmatch(term) for term in terms]
        assert all(matches), f"bad udev rule term in: {line}"
        parsed.append({(m[1], m[2]): m[3] for m in matches if m})
    usb_ids = {(r[("ATTR{idVendor}", "==")], r[("ATTR{idProduct}", "==")])
               for r in parsed if ("ATTR{idVendor}", "==") in r}
    assert usb_ids == {("1a6e", "089a"), ("18d1", "9302")}
    apex = [r for r in parsed if r.get(("SUBSYSTEM", "==")) == "apex"]
    assert apex and apex[0][("GROUP", "=")] == "apex" and apex[0][("TAG", "+=")] == "systemd"
