"""The embedded default pipeline speaks words a real recogniser hears.

pocketsphinx, restricted to a handful of sentences none of which is in the training
corpus, must pick the sentence the pipeline was asked to say (a model that babbles or
speaks the wrong words fails: the character-level model shipped before this one got 0.5 to 0.9
grammar-restricted WER). Free-decoding WER is the eval command's job (README results table).
"""

from __future__ import annotations

import pytest
import speechinfer as si
from speechinfer.models import default_pipeline_path

pytest.importorskip("pocketsphinx", reason="the ASR judge (pocketsphinx) is not installed")

SENTENCES = [
    "The cat sat on the mat.",
    "We like warm bread.",
    "A small boat went out to sea.",
    "I will call you tomorrow morning.",
    "Please close the door quietly.",
    "The children played in the garden.",
]


@pytest.mark.skipif(default_pipeline_path() is None, reason="this build embeds no pipeline")
def test_the_default_pipeline_says_the_sentence_it_is_given() -> None:
    from speechinfer_training import asr

    pipe = si.Pipeline.load()
    heard = []
    for i, sentence in enumerate(SENTENCES):
        audio = pipe.say(sentence, voice=pipe.voices[i % len(pipe.voices)], seed=0)
        heard.append(asr.transcribe_with_grammar(audio, pipe.sample_rate, SENTENCES))
    right = [h == asr.normalize_text(s) for h, s in zip(heard, SENTENCES, strict=True)]
    assert sum(right) >= len(SENTENCES) - 1, list(zip(SENTENCES, heard, strict=True))
