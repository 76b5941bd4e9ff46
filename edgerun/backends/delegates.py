"""Loading LiteRT external delegates (libedgetpu, VX, Arm NN, Ethos-U) with failures sorted by cause."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .litert_backend import interpreter_module

log = logging.getLogger(__name__)

LIBRARY_MISSING = "library-missing"  # dlopen could not find or load the shared library
NOT_A_DELEGATE = "not-a-delegate"  # the library has no tflite_plugin_create_delegate
REFUSED = "refused"  # the delegate's create function returned NULL


@dataclass
class DelegateFailure(Exception):
    """Why an external delegate did not load: ``cause`` is one of the constants above."""

    library: str
    cause: str
    message: str

    def __str__(self) -> str:
        return f"{self.library}: {self.cause}: {self.message}"


@contextmanager
def _quiet_partial_delegate_cleanup() -> Iterator[None]:
    """LiteRT's Delegate.__del__ raises AttributeError when its __init__ failed half-way; CPython
    prints that as 'Exception ignored in ...'. Log it at debug level instead while we load."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if "Delegate.__del__" in repr(getattr(unraisable, "object", "")):
            log.debug("ignored error in a half-built LiteRT Delegate: %s", unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def load_external_delegate(library: str, options: Mapping[str, str]) -> Any:
    """``load_delegate(library, options)`` from the installed LiteRT, raising DelegateFailure.

    ai-edge-litert raises OSError when dlopen fails (older tflite_runtime raised ValueError
    for everything), AttributeError when the library is not a delegate, and ValueError with
    the delegate's own report when its create function refuses.
    """
    module = interpreter_module()
    log.debug("loading delegate %s with options %s", library, dict(options))
    failure: DelegateFailure | None = None
    with _quiet_partial_delegate_cleanup():
        try:
            return module.load_delegate(library, dict(options))
        except OSError as exc:
            failure = DelegateFailure(library, LIBRARY_MISSING, str(exc))
        except AttributeError as exc:
            failure = DelegateFailure(library, NOT_A_DELEGATE, str(exc))
        except ValueError as exc:
            message = " ".join(str(exc).split())
            cause = LIBRARY_MISSING if "cannot open shared object" in message else REFUSED
            failure = DelegateFailure(library, cause, message)
    raise failure
