"""Classifier-free guidance in the ``aligned`` layout (``cfg_scale`` in ``pipeline.json``'s
sampling): the audio codes come from ``uncond + s * (cond - uncond)``, the unconditional logits
those of the text-less grid (voice, then pad). Tiny random-weight twins as in
test_pipeline_aligned.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from lm_generation_helpers import cfg_combine, lay_out
from speechinfer_training.export import load_pretrained
from speechinfer_training.tts_data import text_less
from test_pipeline import write_spec
from test_pipeline_aligned import PAD, C, pipeline

SCALE = 3.0


def test_guided_codes_follow_the_text_less_twin(tmp_path: Path) -> None:
    greedy = {"temperature": 0.0, "cfg_scale": SCALE}
    pipe = pipeline(tmp_path / "cfg", -60.0, max_frames=40, sampling=greedy)
    [grid] = pipe.generate_grids("hello there.", "slt", [0])
    ended = bool((grid[1:, -1] == C).all())
    frames = grid.shape[1] - 1 - int(ended)
    assert frames > 5
    twin = load_pretrained(tmp_path / "cfg" / "lm")
    lm = si.SpeechLM.load(tmp_path / "cfg" / "lm")
    uncond_grid = text_less(torch.from_numpy(grid)).numpy()
    assert (uncond_grid[0, 1:] == PAD).all() and uncond_grid[0, 0] == grid[0, 0]
    cond = lm.logits(lay_out(twin, grid[None]))
    uncond = lm.logits(lay_out(twin, uncond_grid[None]))
    first = twin.layout(grid.shape[1]).first_step.numpy()
    checked = 0
    for k in range(1, grid.shape[0]):
        for t in range(1, 1 + frames):
            s = first[k, t] - 1
            guided = cfg_combine(cond[k][0, s, :C], uncond[k][0, s, :C], SCALE, "uncond_plus")
            token = grid[k, t]
            # Greedy over the codes (cached vs teacher-forced logits: equal to 1e-4).
            assert guided[token] >= guided.max() - 1e-3, (k, t)
            checked += 1
    assert checked == (grid.shape[0] - 1) * frames
    # Guidance changes the codes; the text and the seed rule stay.
    plain = pipeline(tmp_path / "plain", -60.0, max_frames=40, sampling={"temperature": 0.0})
    [unguided] = plain.generate_grids("hello there.", "slt", [0])
    assert not np.array_equal(unguided[1:, 1:6], grid[1:, 1:6])
    again = pipe.say("hello there.", voice="slt", seed=0)
    np.testing.assert_array_equal(again, pipe.say("hello there.", voice="slt", seed=0))


def test_guidance_needs_the_aligned_layout(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path / "cfg", -60.0, max_frames=20, sampling={"cfg_scale": SCALE})
    links = {"codec": str(pipe.path / "codec"), "lm": str(pipe.path / "lm")}
    spec = write_spec(tmp_path / "prefix", layout="prefix", sampling={"cfg_scale": 2.0}, **links)
    with pytest.raises(si.ConfigError, match="cfg_scale needs layout 'aligned'"):
        si.Pipeline.load(spec)
    negative = {"layout": "aligned", "sampling": {"cfg_scale": -1.0}}
    with pytest.raises(si.ConfigError, match=r"pipeline\.json sampling: .*cfg_scale"):
        si.Pipeline.load(write_spec(tmp_path / "neg", **negative, **links))
