"""One exception tree for edgerun; every class knows the HTTP status it maps to."""

from __future__ import annotations


class EdgerunError(Exception):
    """Base of every error edgerun raises on purpose."""

    http_status: int = 500


class InvalidInputError(EdgerunError):
    """The caller passed something unusable: the message says what is valid."""

    http_status = 400


class ImageDecodeError(InvalidInputError):
    """Bytes or an array that are not a decodable image."""


class ImageTooLargeError(ImageDecodeError):
    """An image over a budget (encoded bytes or decoded pixels); the message names the limit."""

    http_status = 413


class TensorSpecError(InvalidInputError):
    """A tensor whose name, shape or dtype does not match the session's spec."""


class ModelNotFoundError(EdgerunError):
    """No model package by that name or path."""

    http_status = 404


class ModelIntegrityError(EdgerunError):
    """A model package that is malformed: bad manifest, missing file, checksum mismatch."""

    http_status = 422


class ModelLoadError(EdgerunError):
    """The runtime refused the model file (corrupt, unsupported operators, ...)."""

    http_status = 422


class BackendNotFoundError(InvalidInputError):
    """A backend name that no registry entry knows."""


class BackendUnavailableError(EdgerunError):
    """The backend exists but cannot run here (library, device or artifact missing)."""

    http_status = 503


class DependencyMissingError(EdgerunError):
    """An optional Python package is needed; the message names the pip extra."""

    http_status = 503


class SessionClosedError(EdgerunError):
    """infer() on a session that was closed."""

    http_status = 409


class InferenceError(EdgerunError):
    """The runtime failed while executing a model that had loaded."""

    http_status = 500
