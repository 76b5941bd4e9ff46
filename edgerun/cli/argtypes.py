"""argparse value types shared by every subcommand: counts, positive numbers, fractions."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def _checked(text: str, convert: Callable[[str], T], accept: Callable[[T], bool], expected: str) -> T:
    """``convert(text)`` when it parses and ``accept`` takes it, else argparse's error naming ``expected``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _checked(text, int, lambda value: value >= 1, "a positive integer")


def count(text: str) -> int:
    """An integer >= 0."""
    return _checked(text, int, lambda value: value >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _checked(text, float, lambda value: value > 0 and not math.isinf(value), "a positive number")


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _checked(text, float, lambda value: value >= 0 and not math.isinf(value), "a non-negative number")


def fraction(text: str) -> float:
    """A number between 0 and 1 inclusive."""
    return _checked(text, float, lambda value: 0.0 <= value <= 1.0, "a fraction between 0 and 1")


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: pick a free one)."""
    return _checked(text, int, lambda value: 0 <= value <= 65535, "a port number in 0..65535")


def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE (a backend option) -> (KEY, VALUE); the value may be empty or contain '='."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()
