"""Export of a TTS pipeline directory (``docs/tts.md``): ``pipeline.json``, ``codec/``, ``lm/``."""

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from speechinfer.phonemes import LEXICON_FILE

from .export import CONFIG_FILE, STORAGE_DTYPES, WEIGHTS_FILE, StorageDtype, save_pretrained
from .lm import SpeechLM
from .tts_data import MAX_FRAMES, MAX_TEXT_TOKENS

PIPELINE_FILE = "pipeline.json"
MODEL_TYPE = "speechinfer-tts"
DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.8, "top_k": 50}
"""Audio-stream ``si.Sampling`` keyword arguments written to ``pipeline.json`` by default."""


def copy_model_dir(src: str | os.PathLike[str], dst: Path, dtype: StorageDtype) -> Path:
    """Copy a model directory (``config.json``, ``model.safetensors``), floats cast to ``dtype``."""
    src = Path(src)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / WEIGHTS_FILE))
    target = STORAGE_DTYPES[dtype]
    cast = {
        name: (t.to(target) if t.is_floating_point() else t).contiguous()
        for name, t in tensors.items()
    }
    save_file(cast, str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
    shutil.copyfile(src / CONFIG_FILE, dst / CONFIG_FILE)
    return dst


def save_pipeline(
    out_dir: str | os.PathLike[str],
    lm_model: SpeechLM,
    codec_dir: str | os.PathLike[str],
    voices: Sequence[str],
    tokenizer_path: str | os.PathLike[str],
    sampling: Mapping[str, Any] | None = None,
    dtype: StorageDtype = "float16",
    max_text_tokens: int = MAX_TEXT_TOKENS,
    max_frames: int = MAX_FRAMES,
    seed: int = 0,
    layout: str = "prefix",
    lexicon: str | os.PathLike[str] | None = None,
    max_tail_frames: int | None = None,
) -> Path:
    """Write the pipeline directory ``out_dir`` that ``si.Pipeline.load`` reads; return it.

    ``codec/`` is a copy of ``codec_dir`` and ``lm/`` the exported ``lm_model`` with
    ``tokenizer.json``, both stored in ``dtype``; ``pipeline.json`` names them, the ``voices``
    (in the order of the LM's voice tokens), the limits and the audio streams' sampling
    (default :data:`DEFAULT_SAMPLING`) and, unless it is ``prefix``, the text ``layout``. With a
    ``lexicon`` (``speechinfer_training.lexicon``) the text stream reads phones: the lexicon is
    copied to ``lexicon.txt.gz`` and ``pipeline.json`` says ``"text_units": "phones"``;
    ``max_tail_frames`` (the ``aligned`` layout's longest tail after the text) is written when
    given. The
    LM's text stream must fit the voices and the tokenizer (``text_offset = 4 + n_voices``,
    vocabulary ``text_offset + tokenizer size``).
    """
    from tokenizers import Tokenizer

    text = lm_model.config["streams"][0]
    size = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    if text["role"] != "text" or text["text_offset"] != 4 + len(voices):
        raise ValueError(f"stream 0 must be the text stream with text_offset {4 + len(voices)}")
    if text["vocab_size"] != text["text_offset"] + size:
        raise ValueError(f"text vocab {text['vocab_size']} != text_offset + tokenizer size {size}")
    prompt = max_text_tokens + 2 if layout == "prefix" else 2
    needed = lm_model.layout(prompt + max_frames).num_steps - 1
    if needed > lm_model.config["max_context"]:
        raise ValueError(
            f"max_text_tokens {max_text_tokens} + max_frames {max_frames} need {needed} steps, "
            f"over the LM's max_context {lm_model.config['max_context']}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy_model_dir(codec_dir, out / "codec", dtype)
    save_pretrained(lm_model, out / "lm", dtype=dtype, tokenizer=tokenizer_path)
    pipeline = {
        "model_type": MODEL_TYPE,
        "codec": "codec",
        "lm": "lm",
        "voices": list(voices),
        "max_text_tokens": max_text_tokens,
        "max_frames": max_frames,
        "sampling": dict(DEFAULT_SAMPLING if sampling is None else sampling),
        "seed": seed,
    }
    if layout != "prefix":
        pipeline["layout"] = layout
    if max_tail_frames is not None:
        pipeline["max_tail_frames"] = max_tail_frames
    if lexicon is not None:
        shutil.copyfile(lexicon, out / LEXICON_FILE)
        pipeline["text_units"] = "phones"
    (out / PIPELINE_FILE).write_text(json.dumps(pipeline, indent=2) + "\n")
    return out


def directory_bytes(path: str | os.PathLike[str]) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
