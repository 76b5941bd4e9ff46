"""Helpers shared by the benchmark scripts (run them as `python benchmarks/NAME.py`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgerun.backends.base import Session


def raw_call(session: Session, inputs: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The vendor call that Session.infer wraps, on the same runtime object."""
    inner: Any = session
    if session.backend_name == "onnxruntime":
        runtime, names = inner._session, [spec.name for spec in session.output_specs]
        return lambda: runtime.run(names, inputs)
    interpreter = inner._interpreter
    index = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    tensor = next(iter(inputs.values()))

    def invoke() -> list[np.ndarray]:
        interpreter.set_tensor(index, tensor)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return invoke
