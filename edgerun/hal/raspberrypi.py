"""Raspberry Pi: model string, and the board revision code from /proc/cpuinfo decoded."""

from __future__ import annotations

import re

from .facts import BoardFacts

_TYPES = {
    0x04: "2B",
    0x08: "3B",
    0x09: "Zero",
    0x0A: "CM3",
    0x0C: "Zero W",
    0x0D: "3B+",
    0x0E: "3A+",
    0x10: "CM3+",
    0x11: "4B",
    0x12: "Zero 2 W",
    0x13: "400",
    0x14: "CM4",
    0x15: "CM4S",
    0x17: "5",
    0x18: "CM5",
    0x19: "500",
    0x1A: "CM5 Lite",
}
_SOCS = {0: "bcm2835", 1: "bcm2836", 2: "bcm2837", 3: "bcm2711", 4: "bcm2712"}
_MEMORY = {0: "256MB", 1: "512MB", 2: "1GB", 3: "2GB", 4: "4GB", 5: "8GB", 6: "16GB"}
# Board ids by decoded type; anything else is "rpi".
_BOARDS = {
    "5": "rpi5",
    "4B": "rpi4",
    "400": "rpi400",
    "CM4": "rpi-cm4",
    "CM5": "rpi-cm5",
    "CM5 Lite": "rpi-cm5",
    "500": "rpi500",
    "3B": "rpi3",
    "3B+": "rpi3",
    "Zero 2 W": "rpi-zero2w",
}


def decode_revision(code: str) -> dict[str, str]:
    """Facts from a new-style revision code such as ``d04170`` (Pi 5, 8 GB)."""
    try:
        value = int(code, 16)
    except ValueError:
        return {}
    if not value & (1 << 23):
        return {"revision": code}
    return {
        "revision": code,
        "type": _TYPES.get((value >> 4) & 0xFF, f"unknown type 0x{(value >> 4) & 0xFF:02x}"),
        "soc": _SOCS.get((value >> 12) & 0xF, "unknown"),
        "memory": _MEMORY.get((value >> 20) & 0x7, "unknown"),
        "board_revision": f"1.{value & 0xF}",
    }


def _cpuinfo_field(cpuinfo: str, name: str) -> str | None:
    match = re.search(rf"^{name}\s*:\s*(\S+)", cpuinfo, re.MULTILINE)
    return match[1] if match else None


def detect_raspberrypi(model: str, cpuinfo: str) -> BoardFacts | None:
    """The Raspberry Pi board and its decoded revision, or None."""
    if not model.startswith(("Raspberry Pi", "Compute Module")):
        return None
    revision = _cpuinfo_field(cpuinfo, "Revision")
    facts = decode_revision(revision) if revision else {}
    board = _BOARDS.get(facts.get("type", ""), "rpi")
    if board == "rpi" and model.startswith("Raspberry Pi 5"):
        board = "rpi5"
    return BoardFacts(board, facts)
