"""Settings read from EDGERUN_* environment variables, validated once and frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInputError

ENV_PREFIX = "EDGERUN_"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; every field has an EDGERUN_<FIELD> variable."""

    backend: str | None = None          # EDGERUN_BACKEND: force one backend by name
    model_path: tuple[Path, ...] = ()   # EDGERUN_MODEL_PATH: extra package folders, os.pathsep-separated
    host_root: Path = Path("/")         # EDGERUN_HOST_ROOT: HostFS root (a captured device tree)
    threads: int | None = None          # EDGERUN_THREADS: CPU threads per session

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        paths = get("MODEL_PATH")
        return cls(
            backend=get("BACKEND"),
            model_path=tuple(Path(p) for p in paths.split(os.pathsep) if p) if paths else (),
            host_root=Path(get("HOST_ROOT") or "/"),
            threads=_positive_int(ENV_PREFIX + "THREADS", get("THREADS")),
        )


def _positive_int(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {text!r}")
    return value
