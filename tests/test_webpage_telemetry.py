"""The page's live telemetry panel in headless Chromium, against an emulated Orin Nano whose power and
temperature files a writer thread changes: charts drawn, models listed, throttling shown; screenshot
saved as test-artifacts/webpage-telemetry.png."""

from __future__ import annotations

from pathlib import Path

from edgerun.config import Settings
from edgerun.serving import ModelConfig, ServeConfig, create_app

from .camera_helpers import ARTIFACTS, Page, wait_for
from .helpers import ORIN_NANO_HWMON, SensorDriver, copy_device_tree, write_tree
from .serving_helpers import ServerThread, classify_sample

CURR1 = f"{ORIN_NANO_HWMON}/curr1_input"
CPU_ZONE = "/sys/class/thermal/thermal_zone0/temp"
TJ_ZONE = "/sys/class/thermal/thermal_zone6/temp"      # passive trip at 99 °C


def _pixels(page: Page, canvas: str, rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    return int(page.evaluate(f"""(() => {{ const c = document.getElementById('{canvas}');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4)
          if (Math.abs(d[i] - {r}) < 40 && Math.abs(d[i + 1] - {g}) < 40
              && Math.abs(d[i + 2] - {b}) < 40) n++;
        return n; }})()"""))


def test_live_panel_charts_power_and_temperature_and_shows_throttling(page: Page, tmp_path: Path) -> None:
    root = copy_device_tree("jetson-orin-nano", tmp_path)
    write_tree(root, {f"{ORIN_NANO_HWMON}/in1_input": "5000", CURR1: "800"})
    steps = [(0.5 * k, {CURR1: str(800 + 600 * (k % 2) + 40 * k),          # 4 W / 7 W, creeping up
                        CPU_ZONE: str(50000 + 900 * k)}) for k in range(24)]
    steps.insert(14, (7.0, {TJ_ZONE: "99500"}))                          # past its trip point
    model = ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1)
    with ServerThread(create_app(ServeConfig(settings=Settings(host_root=root), models=(model,)))) as server:
        server.wait_ready()
        driver = SensorDriver(root, steps)
        driver.start()
        try:
            with server.client() as http:
                classify_sample(http, 6)
            page.send("Page.navigate", {"url": f"{server.url}/"})
            points = "Number(document.getElementById('power-chart')?.dataset.points || 0)"
            wait_for(lambda: page.evaluate(points) >= 8, 30, "power points on the chart")
            wait_for(lambda: "thermal_trip" in str(page.evaluate(
                "document.getElementById('throttle').textContent")), 30, "throttling shown")
            assert "pill bad" in str(page.evaluate("document.getElementById('throttle').className"))
            table = str(page.evaluate("document.getElementById('model-telemetry').innerText"))
            assert "mobilenet_v2" in table and " ms" in table
            power_legend = str(page.evaluate("document.getElementById('power-legend').innerText"))
            assert "jetson-ina3221" in power_legend and "VDD_CPU_GPU_CV" in power_legend
            temps = str(page.evaluate("document.getElementById('temp-legend').innerText"))
            assert "cpu-thermal" in temps and "tj-thermal 99.5 °C" in temps
            assert _pixels(page, "power-chart", (0x29, 0x58, 0xD6)) > 100      # the total's line
            assert _pixels(page, "temp-chart", (0x29, 0x58, 0xD6)) > 30
            now = str(page.evaluate("document.getElementById('power-now').textContent"))
            assert "W now (jetson-ina3221)" in now
            page.evaluate("document.getElementById('telemetry').scrollIntoView()")
            shot = page.screenshot(ARTIFACTS / "webpage-telemetry.png")
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 20_000
            assert page.errors() == []
        finally:
            driver.stop()
