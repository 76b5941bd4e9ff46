"""`edgerun top`: --once --json on every shipped board, and the live curses view under tmux against an
emulated Orin Nano (sensor files changed by a writer thread) next to a running service."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgerun.cli import main
from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app

from .camera_helpers import wait_for
from .helpers import (
    BOARDS,
    DEVICES,
    ORIN_NANO_HWMON,
    REPO,
    SensorDriver,
    copy_device_tree,
    device_tree,
)
from .serving_helpers import ServerThread, classify_sample


@pytest.mark.parametrize("board", BOARDS)
def test_once_json_on_every_board(board: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--root", str(device_tree(board)), "--once", "--json", "--no-service"]) == 0
    profile = json.loads((DEVICES / board / "profile.json").read_text())
    view = json.loads(capsys.readouterr().out)
    assert view["board"]["board"] == profile["expected"]["board"] and view["board"]["emulated"] is True
    if profile["power"]["sensor"]:
        sensor = view["power"][0]
        assert sensor["name"] == profile["power"]["sensor"] and sensor["error"] is None
        assert list(sensor["rail_watts"]) == profile["power"]["rails"]
        assert sensor["watts"] >= 0.0    # a static RAPL counter in the tree reads as 0 W
    else:
        assert view["power"] == [] and view["missing"]["power"].startswith("no power sensor found: ")
    assert view["temperatures_c"] or "temperature" in view["missing"]
    assert view["service"] is None


def test_once_text_says_when_no_service_answers(capsys: pytest.CaptureFixture[str]) -> None:
    root = str(device_tree("rpi5"))
    assert main(["top", "--root", root, "--once", "--url", "http://127.0.0.1:9"]) == 0
    text = capsys.readouterr().out
    assert "POWER rpi5-pmic [emulated]" in text and "VDD_CORE" in text
    assert "SERVE http://127.0.0.1:9: no edgerun serve answering" in text
    assert "THROTTLE none" in text                     # the captured get_throttled says 0x0


class Tmux:
    """A private tmux server (its own socket) running one command in a fixed-size window."""

    def __init__(self, command: str, width: int = 170, height: int = 40) -> None:
        self.socket = f"edgerun-top-{uuid.uuid4().hex[:8]}"
        self.tmux = shutil.which("tmux")
        assert self.tmux, "tmux must be installed (apt-get install tmux; .ci/run does)"
        self._run("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), command)
        self._run("resize-window", "-t", "top", "-x", str(width), "-y", str(height))  # no client: not 80x24

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.tmux), "-L", self.socket, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "top").stdout

    def keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", "top", *keys)

    def alive(self) -> bool:
        return self._run("has-session", "-t", "top").returncode == 0

    def close(self) -> None:
        self._run("kill-server")


@pytest.fixture
def orin_service(tmp_path: Path) -> Iterator[tuple[Path, ServerThread]]:
    root = copy_device_tree("jetson-orin-nano", tmp_path)
    model = ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1)
    with ServerThread(create_app(ServeConfig(settings=Settings(host_root=root), models=(model,)))) as server:
        server.wait_ready()
        yield root, server


def test_live_view_under_tmux(orin_service: tuple[Path, ServerThread]) -> None:
    root, server = orin_service
    command = (f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(str(REPO))} "
               f"{shlex.quote(sys.executable)} -m edgerun top --root {shlex.quote(str(root))} "
               f"--url {server.url} --interval 0.5")
    oc3 = "/sys/class/hwmon/hwmon3/oc3_event_cnt"
    driver = SensorDriver(root, [(0.4 * k, {oc3: str(k), f"{ORIN_NANO_HWMON}/curr1_input": str(1400 + k)})
                                 for k in range(1, 40)])
    tmux = Tmux(command)
    driver.start()
    try:
        with server.client() as http:
            classify_sample(http, 5)
        row = re.compile(r"mobilenet_v2\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d")
        wait_for(lambda: row.search(tmux.screen()), 30, "the model's rate and latency in the view")
        screen = tmux.screen()
        assert "edgerun top — jetson-orin-nano" in screen and "[emulated device tree]" in screen
        assert re.search(r"VDD_IN\s+7\.\d\d W", screen), screen        # 5.072 V x ~1.4 A
        assert "cpu-thermal 46.5 °C" in screen and "cpu5 1.73 GHz" in screen
        wait_for(lambda: "THROTTLED: over_current_instant" in tmux.screen(), 15, "the throttle flag")
        tmux.keys("q")
        wait_for(lambda: not tmux.alive(), 10, "top to quit on q")
    finally:
        driver.stop()
        tmux.close()


def test_a_root_that_is_not_a_directory_is_one_line_error(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    assert main(["top", "--root", str(tmp_path / "nowhere"), "--once"]) == 1
    assert capsys.readouterr().err == f"edgerun: error: --root {tmp_path / 'nowhere'} is not a directory\n"
