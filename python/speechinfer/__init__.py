"""speechinfer: fast inference for speech language models.

The engine is Rust (``speechinfer._native``); this package is its thin, typed face.
"""

from speechinfer._native import (
    NO_INPUT,
    SAMPLE,
    Codec,
    GenerationStream,
    Sampling,
    Session,
    SpeechLM,
    StreamDecoder,
    StreamEncoder,
    __version__,
)
from speechinfer.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    InternalError,
    SpeechInferError,
)
from speechinfer.pipeline import Pipeline

__all__ = [
    "NO_INPUT",
    "SAMPLE",
    "CheckpointError",
    "Codec",
    "ConfigError",
    "GenerationStream",
    "InputError",
    "InternalError",
    "Pipeline",
    "Sampling",
    "Session",
    "SpeechInferError",
    "SpeechLM",
    "StreamDecoder",
    "StreamEncoder",
    "__version__",
]
