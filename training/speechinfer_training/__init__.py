"""PyTorch twins of the speechinfer models, their training loops and safetensors export."""

from .codec import DEFAULT_CONFIG, Codec, CodecOutput, resolve_codec_config
from .export import load_config, load_pretrained, save_pretrained
from .lm import SpeechLM, resolve_lm_config
from .losses import MultiScaleMelLoss, ReconstructionLoss, mel_filterbank
from .registry import ExportableModel, model_class, register_model, registered_model_types
from .rvq import EmaSettings, ResidualVectorQuantizer, VectorQuantizer

__all__ = [
    "DEFAULT_CONFIG",
    "Codec",
    "CodecOutput",
    "EmaSettings",
    "ExportableModel",
    "MultiScaleMelLoss",
    "ReconstructionLoss",
    "ResidualVectorQuantizer",
    "SpeechLM",
    "VectorQuantizer",
    "load_config",
    "load_pretrained",
    "mel_filterbank",
    "model_class",
    "register_model",
    "registered_model_types",
    "resolve_codec_config",
    "resolve_lm_config",
    "save_pretrained",
]
