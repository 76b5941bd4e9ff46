"""Image budgets: pixels checked from the header, bounded pre-processing, every Pillow mode, files only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgerun.config import DEFAULT_MAX_IMAGE_PIXELS, Settings
from edgerun.errors import ImageDecodeError, ImageTooLargeError
from edgerun.predictor import Predictor
from edgerun.processing import image as img

from .helpers import REPO, SAMPLES, peak_rss_growth
from .serving_helpers import ServerThread

MB = 1 << 20


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classifier() -> Predictor:
    with Predictor.open("mobilenet_v2", backend="onnxruntime", settings=Settings()) as predictor:
        yield predictor


def test_pixel_budget_is_checked_from_the_header_before_decoding(tmp_path: Path) -> None:
    # 5000 x 4000 black pixels: a PNG of a few KB that would decode to 80 MB of RGB.
    path = tmp_path / "wide.png"
    path.write_bytes(encoded(Image.new("L", (5000, 4000))))
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageTooLargeError, match=r"5000x4000 = 20000000 pixels, over the limit of 16777216 "
                                                 r"\(setting max_image_pixels, EDGERUN_MAX_IMAGE_PIXELS\)"):
        img.decode_image(path)
    assert ImageTooLargeError.http_status == 413
    growth, outcome = peak_rss_growth(f"return img.decode_image({str(path)!r})",
                                      setup="from edgerun.processing import image as img")
    assert outcome.startswith("ImageTooLargeError") and growth < 10 * MB, (growth, outcome)
    # Every PNG colour type with a header at the budget or far over it, and truncated pixel data:
    # together they cost at most what one image at the budget may (16 MP x 4 bytes, twice, + slack).
    headers = [_png_header(w, h, *kind) for kind in PNG_KINDS for w, h in ((4096, 4096), (65535, 65535))]
    growth, outcome = peak_rss_growth(HEADERS_BODY, setup=f"from edgerun.processing import image as img\n"
                                                          f"headers = {headers!r}")
    assert outcome == "'all refused'" and growth < 150 * MB, (growth, outcome)
    small = img.ImageBudget.from_settings(Settings.from_env({"EDGERUN_MAX_IMAGE_PIXELS": "1000"}))
    assert img.decode_image(encoded(Image.new("RGB", (40, 25))), small).shape == (25, 40, 3)
    with pytest.raises(ImageTooLargeError, match="over the limit of 1000"):
        img.decode_image(encoded(Image.new("RGB", (40, 26))), small)
    assert Settings().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS


def test_a_thin_image_costs_no_more_than_a_normal_one(tmp_path: Path) -> None:
    # 1 x 5000: torchvision's rule makes it 256 x 1,280,000 before the crop (3.3 GB, seconds of CPU).
    thin = tmp_path / "thin.png"
    thin.write_bytes(encoded(Image.new("RGB", (1, 5000), (120, 30, 40))))
    setup = """
from edgerun.config import Settings
from edgerun.predictor import Predictor
predictor = Predictor.open("mobilenet_v2", backend="onnxruntime", settings=Settings())
predictor.predict({normal!r})
"""
    normal_growth, _ = peak_rss_growth(f"return predictor.predict({str(SAMPLES / 'chelsea.png')!r}).model",
                                       setup=setup.format(normal=str(SAMPLES / "chelsea.png")))
    thin_growth, outcome = peak_rss_growth(f"return predictor.predict({str(thin)!r}).model",
                                           setup=setup.format(normal=str(SAMPLES / "chelsea.png")))
    assert outcome == "'mobilenet_v2'"
    assert thin_growth < normal_growth + 20 * MB, (thin_growth, normal_growth)


def test_crops_match_torchvision_and_extreme_ones_are_resampled_in_source_coordinates() -> None:
    # A Pillow image goes through resize_crop whole (no full-size array). Normal aspect ratios give
    # exactly torchvision's order (resize the whole image, then crop); extreme ones resample only the
    # crop, from source coordinates, which equals that order to within one grey level.
    rng = np.random.default_rng(3)
    for height, width in ((300, 451), (480, 640), (257, 256), (1000, 333), (40, 2000), (3000, 90)):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cropped, geometry = img.resize_crop(Image.fromarray(array), 256, 224, 224)
        full = img.resize(array, round(width * geometry.scale_x), round(height * geometry.scale_y))
        left, top = int(-geometry.offset_x), int(-geometry.offset_y)
        expected = full[top:top + 224, left:left + 224]
        assert cropped.shape == (224, 224, 3)
        extreme = full.shape[0] * full.shape[1] > img.INTERMEDIATE_FACTOR * 224 * 224
        assert np.abs(cropped.astype(int) - expected.astype(int)).max() <= (1 if extreme else 0)


def _deep_copies(grey: Image.Image) -> dict[str, bytes | Image.Image]:
    values = np.asarray(grey).astype(np.uint16) * 257
    return {
        "I;16 png": encoded(Image.fromarray(values)),
        "I tiff": encoded(Image.fromarray(values.astype(np.int32)), "TIFF"),
        "F tiff 0..1": encoded(Image.fromarray(np.asarray(grey).astype(np.float32) / 255), "TIFF"),
        "F tiff 0..255": encoded(Image.fromarray(np.asarray(grey).astype(np.float32)), "TIFF"),
    }


def _alpha_and_colour_copies(photo: Image.Image) -> dict[str, tuple[bytes | Image.Image, Image.Image]]:
    """name -> (the image in that mode, its 8-bit RGB copy)."""
    alpha = Image.new("L", photo.size, 255)
    palette = photo.quantize(256)
    palette.info["transparency"] = 0
    rotated = photo.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says turn it back
    exif = Image.Exif()
    exif[0x0112] = 8
    return {
        "LA png": (encoded(Image.merge("LA", (photo.convert("L"), alpha))), photo.convert("L")),
        "PA": (Image.merge("PA", (palette, alpha)), palette.convert("RGB")),
        "P + transparency png": (encoded(palette), palette.convert("RGB")),
        "CMYK jpeg": (encoded(photo.convert("CMYK"), "JPEG", quality=95), photo),
        "YCbCr jpeg": (encoded(photo, "JPEG", quality=95, subsampling=0), photo),
        "EXIF-rotated jpeg": (encoded(rotated, "JPEG", quality=95, exif=exif), photo),
    }


def _top1(classifier: Predictor, image: bytes | Image.Image) -> str:
    if isinstance(image, Image.Image):  # a mode no encoder writes: through the same mapping
        image = np.asarray(img.to_rgb(Image, image))
    return classifier.predict(image, top_k=1).classes[0].label


def test_every_pillow_mode_maps_to_rgb_like_its_8_bit_copy(classifier: Predictor) -> None:
    photo = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    grey = photo.convert("L")
    grey_label = _top1(classifier, np.asarray(grey.convert("RGB")))
    cases = {name: (data, grey_label) for name, data in _deep_copies(grey).items()}
    cases |= {name: (data, _top1(classifier, np.asarray(copy.convert("RGB"))))
              for name, (data, copy) in _alpha_and_colour_copies(photo).items()}
    wrong = {name: (_top1(classifier, data), want) for name, (data, want) in cases.items()
             if _top1(classifier, data) != want}
    assert not wrong, f"top-1 differs from the 8-bit copy (got, want): {wrong}"


def test_a_16_bit_image_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    decoded = img.decode_image(encoded(Image.fromarray(values)))
    assert decoded[0, :, 0].tolist() == [0, 100, 255]


def _read_in_child(path: str) -> str:
    """decode_image(path) in a child with 1 GB of address space and 20 s: (outcome, or the failure)."""
    code = ("import sys, resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from edgerun.processing import image as img\n"
            "try:\n    img.decode_image(sys.argv[1])\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                              timeout=20, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return "timed out (blocked reading)"
    return (done.stdout + done.stderr).strip()


def test_files_that_are_not_regular_files_are_refused_before_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        outcome = _read_in_child(path)
        assert outcome.startswith("ImageDecodeError") and "not a regular file" in outcome, (path, outcome)
    big = tmp_path / "big.png"
    big.write_bytes(encoded(Image.new("RGB", (8, 8))) + bytes(33 << 20))
    with pytest.raises(ImageTooLargeError, match=r"over the limit of 33554432 \(setting max_image_bytes"):
        img.decode_image(big)


def test_over_budget_upload_is_413_naming_the_limit(served: ServerThread) -> None:
    data = encoded(Image.new("L", (5000, 4000)))
    with served.client() as http:
        response = http.post("/v1/models/mobilenet_v2/predict", content=data,
                             headers={"Content-Type": "image/png"})
    assert response.status_code == 413, response.text
    assert "over the limit of 16777216" in response.json()["error"]
    assert "max_image_pixels" in response.json()["error"]


def test_over_budget_image_on_the_cli_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    path.write_bytes(encoded(Image.new("L", (300, 300))))
    done = subprocess.run([sys.executable, "-m", "edgerun", "predict", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "EDGERUN_MAX_IMAGE_PIXELS": "50000"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "edgerun: error: image is 300x300 = 90000 pixels, over the limit of 50000 "
        "(setting max_image_pixels, EDGERUN_MAX_IMAGE_PIXELS)"]


MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "I", "I;16", "F", "LAB", "HSV", "PA", "La",
         "RGBa", "RGBX", "I;16B")
FORMATS = ("PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP", "PPM")


def _grey_in_mode(grey: np.ndarray, mode: str) -> Image.Image:
    """The grey picture as Pillow stores it in ``mode`` at that mode's nominal range."""
    if mode in ("I;16", "I;16B"):
        wide = grey.astype(np.uint16) * 257
        order = ">u2" if mode == "I;16B" else "<u2"
        return Image.frombytes(mode, grey.shape[::-1], wide.astype(order).tobytes())
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255.0)
    return Image.fromarray(grey, "L").convert(mode)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS), width=st.integers(1, 48),
       height=st.integers(1, 48), seed=st.integers(0, 2**16))
def test_decoder_property_right_pixels_or_a_clear_error(mode: str, fmt: str, width: int, height: int,
                                                        seed: int) -> None:
    """A grey picture stored in any mode and format decodes to its grey values (lossless formats), or
    the decoder says clearly why not; random bytes in any mode give an HxWx3 array or ImageDecodeError."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    try:
        stored = _grey_in_mode(grey, mode)
        data = encoded(stored, fmt)
        noise = Image.frombytes(mode, (width, height), rng.bytes(width * height * 8))
    except (OSError, ValueError, KeyError, TypeError):
        return  # Pillow cannot hold or write that mode in that format: nothing to decode
    try:
        decoded = img.decode_image(data)
    except ImageDecodeError as exc:
        assert str(exc) and mode in ("LAB", "HSV"), (mode, fmt, exc)
    else:
        assert decoded.dtype == np.uint8 and decoded.shape == (height, width, 3)
        if fmt in ("PNG", "TIFF", "PPM") and mode in ("L", "LA", "I", "I;16", "I;16B", "F", "RGB", "RGBA"):
            assert np.abs(decoded[:, :, 0].astype(int) - grey).max() <= 1, (mode, fmt)
    try:
        assert np.asarray(img.to_rgb(Image, noise)).shape == (height, width, 3)
    except ImageDecodeError as exc:
        assert str(exc)


PNG_KINDS = [(8, 0), (16, 0), (8, 2), (16, 2), (8, 4), (8, 6), (8, 3), (1, 0)]  # (bit depth, colour type)
HEADERS_BODY = """
for header in headers:
    try:
        img.decode_image(header)
        return "decoded a truncated image"
    except img.ImageDecodeError:
        pass
return "all refused"
"""


def _png_header(width: int, height: int, depth: int, colour: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@settings(max_examples=150, deadline=None)
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1),
       kind=st.sampled_from(PNG_KINDS),
       data=st.binary(max_size=64))
def test_decoder_property_hostile_headers_stay_bounded(width: int, height: int, kind: tuple[int, int],
                                                        data: bytes) -> None:
    """A header may claim any size: over the budget it is refused as too large (naming the limit) before
    decoding; otherwise the decoder answers or says why not (memory: see the header test above)."""
    try:
        decoded = img.decode_image(_png_header(width, height, *kind))  # pixel data for small sizes only
        assert decoded.shape == (height, width, 3)
    except ImageDecodeError as exc:
        assert str(exc)
        over = width * height > DEFAULT_MAX_IMAGE_PIXELS
        assert not over or (isinstance(exc, ImageTooLargeError) and "max_image_pixels" in str(exc))
    else:
        assert width * height <= DEFAULT_MAX_IMAGE_PIXELS
    try:
        assert img.decode_image(data).ndim == 3
    except ImageDecodeError as exc:
        assert str(exc)
