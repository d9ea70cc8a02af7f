"""Pipelines whose text stream reads phones (``"text_units": "phones"``, docs/tts.md): the text
is turned into phones with the pipeline's lexicon and spoken in the ``aligned`` layout. Tiny
random-weight twins as in test_pipeline_aligned.py."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
from conftest import SMALL_CODEC, random_codec
from speechinfer.phonemes import LEXICON_FILE, PHONES, Phonemizer
from speechinfer_training.export import save_pretrained
from speechinfer_training.tts_data import make_phone_tokenizer
from test_pipeline import TEXT_OFFSET, write_spec
from test_pipeline_aligned import EOS, PAD, export_aligned_lm

LEXICON = b"the dh ax\ncat k ae t\nsat s ae t\n"


def phone_pipeline(root: Path, **spec: object) -> Path:
    save_pretrained(random_codec(SMALL_CODEC), root / "codec")
    export_aligned_lm(root / "lm", -60.0, tokenizer=make_phone_tokenizer())
    (root / LEXICON_FILE).write_bytes(gzip.compress(LEXICON))
    return write_spec(root, layout="aligned", text_units="phones", **spec)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> si.Pipeline:
    return si.Pipeline.load(phone_pipeline(tmp_path_factory.mktemp("phones"), max_frames=60))


def test_the_text_stream_reads_the_phones(pipe: si.Pipeline) -> None:
    assert pipe.text_units == "phones" and pipe.layout == "aligned"
    phones = Phonemizer({"the": ("dh", "ax"), "cat": ("k", "ae", "t")}).phones("the cat, blick.")
    expected = [PHONES.index(p) + TEXT_OFFSET for p in phones]
    grid = pipe.generate_grids("The cat, blick.", seeds=[1])[0]
    said = [int(t) for t in grid[0, 1:] if t != PAD]
    assert said == [*expected, EOS][: len(said)] and len(said) > 3
    audio = pipe.say("The cat, blick.", seed=1)
    assert audio.dtype == np.float32 and audio.size and np.isfinite(audio).all()


def test_phone_text_errors(pipe: si.Pipeline, tmp_path: Path) -> None:
    with pytest.raises(si.InputError, match="unsupported character '&'"):
        pipe.say("cat & mat")
    with pytest.raises(si.InputError, match="empty"):
        pipe.say("  ")
    links = {"codec": str(pipe.path / "codec"), "lm": str(pipe.path / "lm")}
    with pytest.raises(si.ConfigError, match="text_units must be one of"):
        si.Pipeline.load(write_spec(tmp_path / "units", text_units="words", **links))
    with pytest.raises(si.ConfigError, match=r"needs .*lexicon\.txt\.gz"):
        si.Pipeline.load(write_spec(tmp_path / "nolex", text_units="phones", **links))


def test_long_text_is_split_by_phones(tmp_path: Path) -> None:
    short = si.Pipeline.load(phone_pipeline(tmp_path / "short", max_text_tokens=12))
    # 10 phones, then 15 (pauses included): cut at the space that keeps the first 12.
    prompts = short.prompts("The cat sat. The cat sat the cat.")
    assert [p.shape[1] - 2 for p in prompts] == [10, 12, 5]
