"""Image pre-processing: decode, crop/letterbox/stretch with the geometry to map back, normalise, quantise."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DependencyMissingError, ImageDecodeError
from ..types import Quantization

ImageInput = bytes | bytearray | memoryview | np.ndarray | str | os.PathLike[str]


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


def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise DependencyMissingError(
            "image decoding needs Pillow; install it with: pip install 'edgerun[vision]'"
        ) from exc
    return Image, ImageOps


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageDecodeError(f"image arrays must be uint8, got {array.dtype.name}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4) and min(array.shape[:2]) > 0:
        return np.ascontiguousarray(array[:, :, :3])
    raise ImageDecodeError(f"image arrays must be HxW, HxWx3 (RGB) or HxWx4, got shape {array.shape}")


def decode_image(image: ImageInput) -> np.ndarray:
    """Decode PNG/JPEG/... bytes, a file path, or an array into an HxWx3 uint8 RGB array."""
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ImageDecodeError(f"cannot read image file {image}: {exc.strerror or exc}") from exc
    else:
        data = bytes(image)
    if not data:
        raise ImageDecodeError("image is empty (0 bytes)")
    pil_image, pil_ops = _pil()
    try:
        with pil_image.open(io.BytesIO(data)) as opened:
            opened.load()
            upright = pil_ops.exif_transpose(opened)
            return np.asarray(upright.convert("RGB"))
    except (OSError, SyntaxError, ValueError, pil_image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize with antialiasing (Pillow), the same filter torchvision uses on PIL images."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    pil_image, _ = _pil()
    resized = pil_image.fromarray(image).resize((width, height), pil_image.Resampling.BILINEAR)
    return np.asarray(resized)


def resize_crop(image: np.ndarray, shorter_side: int, height: int, width: int
                ) -> tuple[np.ndarray, Geometry]:
    """Resize so the shorter side is ``shorter_side``, then centre-crop height x width."""
    src_h, src_w = image.shape[:2]
    # torchvision's rule: the shorter side becomes exactly shorter_side, the longer one truncates.
    if src_w <= src_h:
        new_w, new_h = shorter_side, int(shorter_side * src_h / src_w)
    else:
        new_w, new_h = int(shorter_side * src_w / src_h), shorter_side
    new_w, new_h = max(width, new_w), max(height, new_h)
    resized = resize(image, new_w, new_h)
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    cropped = resized[top:top + height, left:left + width]
    return cropped, Geometry(new_w / src_w, new_h / src_h, -left, -top)


def letterbox(image: np.ndarray, height: int, width: int, fill: int = 0) -> tuple[np.ndarray, Geometry]:
    """Resize keeping the aspect ratio, then pad evenly to height x width."""
    src_h, src_w = image.shape[:2]
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    resized = resize(image, new_w, new_h)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), fill, dtype=np.uint8)
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas, Geometry(new_w / src_w, new_h / src_h, left, top)


def stretch(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Geometry]:
    """Resize to height x width ignoring the aspect ratio."""
    src_h, src_w = image.shape[:2]
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
