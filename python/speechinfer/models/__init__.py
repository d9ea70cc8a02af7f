"""Model directories embedded in the package (no download, ever)."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def default_pipeline_path() -> Path | None:
    """The embedded default TTS pipeline's directory (``default/``, see docs/tts.md), or None if
    this build embeds none."""
    path = _ROOT / "default"
    return path if (path / "pipeline.json").is_file() else None


def default_codec_path() -> Path | None:
    """The embedded default codec's directory, or None if this build embeds none."""
    path = _ROOT / "default" / "codec"
    return path if (path / "config.json").is_file() else None
