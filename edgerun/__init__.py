"""edgerun: run a model on an edge device as fast as the device allows, behind one API."""

from .backends import Availability, Backend, LoadOptions, Registry, Selection, Session
from .errors import (
                     BackendNotFoundError,
                     BackendUnavailableError,
                     DependencyMissingError,
                     EdgerunError,
                     ImageDecodeError,
                     InferenceError,
                     InvalidInputError,
                     ModelIntegrityError,
                     ModelLoadError,
                     ModelNotFoundError,
                     SessionClosedError,
                     TensorSpecError,
)
from .hal import HostFS, Platform, detect
from .predictor import ClassificationResult, DetectionResult, Predictor, open_session
from .repository import ModelPackage, ModelRepository
from .types import Quantization, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "Availability",
    "Backend",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ClassificationResult",
    "DependencyMissingError",
    "DetectionResult",
    "EdgerunError",
    "HostFS",
    "ImageDecodeError",
    "InferenceError",
    "InvalidInputError",
    "LoadOptions",
    "ModelIntegrityError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelPackage",
    "ModelRepository",
    "Platform",
    "Predictor",
    "Quantization",
    "Registry",
    "Selection",
    "Session",
    "SessionClosedError",
    "TensorSpec",
    "TensorSpecError",
    "__version__",
    "detect",
    "open_session",
]
