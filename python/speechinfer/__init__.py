"""speechinfer: fast inference for speech language models.

The engine is Rust (``speechinfer._native``); this package is its thin, typed face.
"""

from speechinfer._native import Codec, SpeechLM, StreamDecoder, StreamEncoder, __version__
from speechinfer.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    InternalError,
    SpeechInferError,
)

__all__ = [
    "CheckpointError",
    "Codec",
    "ConfigError",
    "InputError",
    "InternalError",
    "SpeechInferError",
    "SpeechLM",
    "StreamDecoder",
    "StreamEncoder",
    "__version__",
]
