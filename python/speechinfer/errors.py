"""Exceptions raised by speechinfer. Catch :class:`SpeechInferError` for all of them."""


class SpeechInferError(Exception):
    """Base class of every error the engine raises."""


class ConfigError(SpeechInferError):
    """A model's ``config.json`` is missing, unparsable, or holds an invalid value."""


class CheckpointError(SpeechInferError):
    """Weights are missing, truncated, mis-shaped, non-finite, or do not match the config."""


class InputError(SpeechInferError, ValueError):
    """An argument has the wrong type, shape or value range."""


class CapacityError(SpeechInferError):
    """Every slot of a scheduler is busy and its queue is full (or it is shutting down): try
    again later; a server answers 429."""


class InternalError(SpeechInferError):
    """An engine bug (including a caught panic); please report it."""


__all__ = [
    "CapacityError",
    "CheckpointError",
    "ConfigError",
    "InputError",
    "InternalError",
    "SpeechInferError",
]
