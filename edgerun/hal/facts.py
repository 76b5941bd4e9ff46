"""Values the HAL detectors return: one Accelerator per physical device, BoardFacts per board family."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Accelerator:
    """One physical accelerator, e.g. ``edgetpu-usb:0`` or ``nvidia-gpu:0``.

    ``node`` is the device node a runtime opens (None when the device has none of its own);
    ``access`` is "ok", "denied" or "missing" for that node, as HostFS.access reports it.
    """

    id: str
    kind: str
    name: str
    node: str | None = None
    access: str = "ok"
    detail: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "node": self.node,
            "access": self.access,
            "detail": dict(self.detail),
        }

    def describe(self) -> str:
        node = f" at {self.node}" if self.node else ""
        state = "" if self.access == "ok" else f" ({self.access})"
        return f"{self.id}: {self.name}{node}{state}"


@dataclass(frozen=True)
class BoardFacts:
    """What a board-family detector found: the board id, its model string facts, its own accelerators."""

    board: str
    facts: Mapping[str, str] = field(default_factory=dict)
    accelerators: tuple[Accelerator, ...] = ()
