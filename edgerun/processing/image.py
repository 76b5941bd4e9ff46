"""Image pre-processing: decode, crop/letterbox/stretch with the geometry to map back, normalise, quantise."""

from __future__ import annotations

import functools
import io
import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, Settings
from ..errors import DependencyMissingError, ImageDecodeError, ImageTooLargeError
from ..types import Quantization

ImageInput = bytes | bytearray | memoryview | np.ndarray | str | os.PathLike[str]
Picture = Any  # a decoded image: an HxWx3 uint8 array or a Pillow RGB/L image (kept whole until resampled)
# Formats Pillow may open: the common still-image ones (no EPS: it runs Ghostscript; JPEG covers MPO).
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA", "ICO")
# What Pillow's decoders raise on malformed data (a hostile file must not become a 500).
DECODER_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError)
INTERMEDIATE_FACTOR = 8  # a resized image may be this many times the crop before the crop is taken first
DEEP_BAND_PIXELS = 1 << 20  # deep greyscale is scaled to 8 bits this many pixels at a time
DEEP_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


@dataclass(frozen=True)
class Geometry:
    """Maps model-input pixel coordinates back to source-image pixels: src = (p - offset) / scale."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Convert an (..., 2k) array of x,y pairs from model-input to source pixels."""
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0::2] = (out[..., 0::2] - self.offset_x) / self.scale_x
        out[..., 1::2] = (out[..., 1::2] - self.offset_y) / self.scale_y
        return out


@functools.cache
def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise DependencyMissingError(
            "image decoding needs Pillow; install it with: pip install 'edgerun[vision]'"
        ) from exc
    # Our pixel budget is far below Pillow's bomb warning: a hostile header must not flood the log.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image, ImageOps


@dataclass(frozen=True)
class ImageBudget:
    """Limits on one image: encoded bytes read, decoded pixels (width x height)."""

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageBudget:
        return cls(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)

    def check_pixels(self, width: int, height: int) -> None:
        """Refuse an image whose decoded size is over the pixel budget (before it is decoded)."""
        if width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"image is {width}x{height} = {width * height} pixels, over the limit of {self.max_pixels} "
                "(setting max_image_pixels, EDGERUN_MAX_IMAGE_PIXELS)")


def _from_array(array: np.ndarray, budget: ImageBudget) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageDecodeError(f"image arrays must be uint8, got {array.dtype.name}")
    if array.ndim in (2, 3) and min(array.shape[:2]) > 0:
        budget.check_pixels(array.shape[1], array.shape[0])
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4) and min(array.shape[:2]) > 0:
        return np.ascontiguousarray(array[:, :, :3])
    raise ImageDecodeError(f"image arrays must be HxW, HxWx3 (RGB) or HxWx4, got shape {array.shape}")


def read_image_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; FIFOs, devices and folders are refused unread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ImageDecodeError(f"{path} is not a regular file (a folder, device or pipe); give an image file")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if info.st_size > max_bytes:
            raise _too_many_bytes(path, info.st_size, max_bytes)
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise ImageDecodeError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # grew while we read it
        raise _too_many_bytes(path, len(data), max_bytes)
    return data


def _too_many_bytes(what: object, size: int, max_bytes: int) -> ImageTooLargeError:
    return ImageTooLargeError(f"image {what} is {size} bytes, over the limit of {max_bytes} "
                              "(setting max_image_bytes, EDGERUN_MAX_IMAGE_BYTES)")


def _encoded_bytes(image: ImageInput, budget: ImageBudget) -> bytes:
    if isinstance(image, (str, os.PathLike)):
        data = read_image_file(image, budget.max_bytes)
    else:
        size = memoryview(image).nbytes  # type: ignore[arg-type]
        if size > budget.max_bytes:
            raise _too_many_bytes("data", size, budget.max_bytes)
        data = bytes(image)  # type: ignore[arg-type]
    if not data:
        raise ImageDecodeError("image is empty (0 bytes)")
    return data


def _deep_rows(rows: np.ndarray, float_unit: bool) -> np.ndarray:
    if rows.dtype.kind == "f":
        rows = np.nan_to_num(rows.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(rows * (255.0 if float_unit else 1.0) + 0.5, 0, 255).astype(np.uint8)
    wide = np.clip(rows, 0, 65535).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _deep_to_grey(pil_image: Any, image: Any) -> Any:
    """16/32-bit integer (16-bit range) and float (0..1, else 0..255) greyscale -> 8-bit L, a band of
    rows at a time so that the temporaries stay small whatever the image size."""
    width, height = image.size
    _, high = image.getextrema() if image.mode == "F" else (0, 0)
    float_unit = bool(high <= 1.0) if math.isfinite(high) else False
    grey = np.empty((height, width), dtype=np.uint8)
    step = max(1, DEEP_BAND_PIXELS // max(width, 1))
    for top in range(0, height, step):
        band = np.asarray(image.crop((0, top, width, min(height, top + step))))
        grey[top:top + band.shape[0]] = _deep_rows(band, float_unit)
    return pil_image.fromarray(grey, "L")


def to_rgb_or_grey(pil_image: Any, image: Any) -> Any:
    """Any Pillow mode -> RGB, or L for greyscale (expanded to RGB after resampling, where it is small):
    deep greyscale scaled to 8 bits, alpha and palette transparency dropped."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode in DEEP_MODES:
        return _deep_to_grey(pil_image, image)
    try:
        if mode in ("1", "LA"):
            return image.convert("L")
        if mode in ("La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(f"cannot convert pixel mode {mode} to RGB: {exc}") from exc


def to_rgb(pil_image: Any, image: Any) -> Any:
    """Any Pillow mode -> RGB (see to_rgb_or_grey)."""
    converted = to_rgb_or_grey(pil_image, image)
    return converted if converted.mode == "RGB" else converted.convert("RGB")


def _rgb_array(image: Any) -> np.ndarray:
    """A Pillow RGB or L image as an HxWx3 uint8 array."""
    array = np.asarray(image)
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


def open_image(image: ImageInput, budget: ImageBudget | None = None) -> Any:
    """Decode an image within ``budget``: a Pillow image (RGB or L), upright; or an HxWx3 uint8 array."""
    budget = budget or ImageBudget()
    if isinstance(image, np.ndarray):
        return _from_array(image, budget)
    data = _encoded_bytes(image, budget)
    pil_image, pil_ops = _pil()
    try:
        opened = pil_image.open(io.BytesIO(data), formats=FORMATS)
        budget.check_pixels(*opened.size)  # from the header, before any pixel is decoded
        opened.load()
        pil_ops.exif_transpose(opened, in_place=True)
        return to_rgb_or_grey(pil_image, opened)
    except pil_image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image over the limit of {budget.max_pixels} pixels "
                                 f"(setting max_image_pixels, EDGERUN_MAX_IMAGE_PIXELS): {exc}") from exc
    except DECODER_ERRORS as exc:
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc


def decode_image(image: ImageInput, budget: ImageBudget | None = None) -> np.ndarray:
    """Decode PNG/JPEG/... bytes, a file path, or an array into an HxWx3 uint8 RGB array (within budget)."""
    opened = open_image(image, budget)
    return opened if isinstance(opened, np.ndarray) else _rgb_array(opened)


def image_size(image: Picture) -> tuple[int, int]:
    """(width, height) of a decoded image: an HxWx3 array or a Pillow image."""
    if isinstance(image, np.ndarray):
        return int(image.shape[1]), int(image.shape[0])
    return image.size


def _resample(image: Picture, width: int, height: int,
              box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Bilinear resample of ``box`` (source pixels; default the whole image) to width x height."""
    if box is None and image_size(image) == (width, height) and isinstance(image, np.ndarray):
        return image
    pil_image, _ = _pil()
    source = pil_image.fromarray(image) if isinstance(image, np.ndarray) else image
    return _rgb_array(source.resize((width, height), pil_image.Resampling.BILINEAR, box=box))


def resize(image: Picture, width: int, height: int) -> np.ndarray:
    """Bilinear resize with antialiasing (Pillow), the same filter torchvision uses on PIL images."""
    return _resample(image, width, height)


def resize_crop(image: Picture, shorter_side: int, height: int, width: int) -> tuple[np.ndarray, Geometry]:
    """Resize so the shorter side is ``shorter_side``, then centre-crop height x width.

    While the resized image stays within INTERMEDIATE_FACTOR x the crop, it is made whole and cropped,
    exactly as torchvision does. Beyond that (an extreme aspect ratio) the crop is computed in source
    coordinates and only it is resampled: a 1 x 5000 image is not first made 256 x 1,280,000.
    """
    src_w, src_h = image_size(image)
    # torchvision's rule: the shorter side becomes exactly shorter_side, the longer one truncates.
    if src_w <= src_h:
        new_w, new_h = shorter_side, int(shorter_side * src_h / src_w)
    else:
        new_w, new_h = int(shorter_side * src_w / src_h), shorter_side
    new_w, new_h = max(width, new_w), max(height, new_h)
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    geometry = Geometry(new_w / src_w, new_h / src_h, -left, -top)
    if new_w * new_h <= INTERMEDIATE_FACTOR * width * height:
        resized = _resample(image, new_w, new_h)
        return np.ascontiguousarray(resized[top:top + height, left:left + width]), geometry
    box = (left / geometry.scale_x, top / geometry.scale_y,
           (left + width) / geometry.scale_x, (top + height) / geometry.scale_y)
    return _resample(image, width, height, box), geometry


def letterbox(image: Picture, height: int, width: int, fill: int = 0) -> tuple[np.ndarray, Geometry]:
    """Resize keeping the aspect ratio, then pad evenly to height x width."""
    src_w, src_h = image_size(image)
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    resized = resize(image, new_w, new_h)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), fill, dtype=np.uint8)
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas, Geometry(new_w / src_w, new_h / src_h, left, top)


def stretch(image: Picture, height: int, width: int) -> tuple[np.ndarray, Geometry]:
    """Resize to height x width ignoring the aspect ratio."""
    src_w, src_h = image_size(image)
    return resize(image, width, height), Geometry(width / src_w, height / src_h)


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 HxWx3 -> float32 ((x / 255) - mean) / std, per channel."""
    gain = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).astype(np.float32)
    bias = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).astype(np.float32)
    return image.astype(np.float32) * gain - bias


def to_layout(image: np.ndarray, layout: str) -> np.ndarray:
    """HxWxC -> a batch of one in NHWC or NCHW, contiguous."""
    if layout == "NCHW":
        return np.ascontiguousarray(image.transpose(2, 0, 1)[None])
    return np.ascontiguousarray(image[None])


def quantize(values: np.ndarray, quantization: Quantization, dtype: np.dtype) -> np.ndarray:
    """Real values -> integers of ``dtype``: round(x / scale) + zero_point, saturated."""
    info = np.iinfo(dtype)
    q = np.round(values / quantization.scale) + quantization.zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, quantization: Quantization) -> np.ndarray:
    """Integers -> float32 real values: scale * (q - zero_point)."""
    return (values.astype(np.float32) - quantization.zero_point) * np.float32(quantization.scale)
