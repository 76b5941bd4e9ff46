"""Camera and video inference: sources by URI, a latest-frame pump, pipelined inference, annotation.

Importing this package is cheap: OpenCV is imported on first use (the ``camera`` extra).
"""

from __future__ import annotations

from .capture import Capture, OpenOptions, SourceError, open_capture
from .pipeline import PipelineOptions, StreamPipeline
from .pump import Backoff, Frame, FramePump
from .uri import SourceSpec, parse_source

__all__ = ["Backoff", "Capture", "Frame", "FramePump", "OpenOptions", "PipelineOptions", "SourceError",
           "SourceSpec", "StreamPipeline", "open_capture", "parse_source"]
