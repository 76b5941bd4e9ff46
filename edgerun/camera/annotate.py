"""Annotation: draw a Predictor result (boxes and keypoints, or top classes) and the FPS on a frame."""

from __future__ import annotations

import numpy as np

from ..predictor import ClassificationResult, Result
from .capture import cv2_module

# BGR, one per class id (cycled): well apart in hue, all readable under white text
PALETTE = ((60, 180, 60), (230, 120, 40), (40, 40, 220), (200, 60, 200), (20, 160, 230), (170, 170, 20),
           (130, 60, 230), (90, 90, 90), (40, 120, 160), (220, 60, 110), (60, 200, 170), (160, 100, 60))
KEYPOINT_COLOR = (0, 200, 255)
TEXT_COLOR = (255, 255, 255)
PANEL_COLOR = (40, 40, 40)


def class_color(class_id: int) -> tuple[int, int, int]:
    """The box colour of a class: the same class is always the same colour."""
    return PALETTE[class_id % len(PALETTE)]


def _label(image: np.ndarray, text: str, x: int, y: int, scale: float,
           panel: tuple[int, int, int] = PANEL_COLOR) -> None:
    """White text on a coloured panel whose top-left corner is (x, y)."""
    cv2 = cv2_module()
    thickness = max(1, round(scale * 2))
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(0, x), max(0, image.shape[1] - width - 4))
    y = min(max(0, y), max(0, image.shape[0] - height - base - 4))
    cv2.rectangle(image, (x, y), (x + width + 4, y + height + base + 4), panel, cv2.FILLED)
    cv2.putText(image, text, (x + 2, y + height + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR,
                thickness, cv2.LINE_AA)


def _scale(image: np.ndarray) -> float:
    return max(0.4, min(1.2, image.shape[0] / 720))


def draw_result(image: np.ndarray, result: Result | None, fps: float | None = None) -> np.ndarray:
    """A copy of the BGR ``image`` with the result drawn on it (boxes in source pixels)."""
    cv2 = cv2_module()
    out = image.copy()
    scale = _scale(out)
    line = max(2, round(scale * 2.5))
    if isinstance(result, ClassificationResult):
        for rank, c in enumerate(result.classes[:3]):
            _label(out, f"{c.label} {c.score:.2f}", 6, 6 + rank * int(34 * scale), scale)
    elif result is not None:
        for d in result.detections:
            x0, y0, x1, y1 = (round(v) for v in d.box)
            color = class_color(d.class_id)
            cv2.rectangle(out, (x0, y0), (x1, y1), color, line, cv2.LINE_AA)
            for kx, ky in d.keypoints:
                cv2.circle(out, (round(kx), round(ky)), line + 1, KEYPOINT_COLOR, cv2.FILLED, cv2.LINE_AA)
            _label(out, f"{d.label} {d.score:.2f}", x0, y0 - int(30 * scale), scale, color)
    if fps is not None:
        text = f"{fps:.1f} fps"
        width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, line)[0][0]
        _label(out, text, out.shape[1] - width - 10, out.shape[0], scale)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image."""
    cv2 = cv2_module()
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
