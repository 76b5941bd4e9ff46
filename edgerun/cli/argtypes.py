"""argparse value types shared by every subcommand: counts, positive numbers, fractions."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def count(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(text: str, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero_ok else value > 0) or math.isinf(value):
        raise argparse.ArgumentTypeError(
            f"expected a {'non-negative' if zero_ok else 'positive'} number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, zero_ok=False)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _number(text, zero_ok=True)


def fraction(text: str) -> float:
    """A number between 0 and 1 inclusive."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: pick a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 0..65535, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE (a backend option) -> (KEY, VALUE); the value may be empty or contain '='."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()
