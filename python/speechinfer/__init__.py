"""speechinfer: fast inference for speech language models.

The engine is Rust (``speechinfer._native``); this package is its thin, typed face.
"""

import os as _os

if "RAYON_NUM_THREADS" not in _os.environ:
    # The engine's default (every CPU it may run on), said once: candle's GEMM otherwise counts
    # the CPUs again on every call.
    _cpus = _os.sched_getaffinity(0) if hasattr(_os, "sched_getaffinity") else None
    _os.environ["RAYON_NUM_THREADS"] = str(len(_cpus) if _cpus else _os.cpu_count() or 1)

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
    num_threads,
    set_num_threads,
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
    "num_threads",
    "set_num_threads",
]
