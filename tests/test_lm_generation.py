"""SpeechLM.generate / stream end to end: seeds and batch independence, greedy sampling, EOS
stopping, streamed chunks, bad sampling values and concurrent use from threads (docs/lm.md,
"Generation, sessions and EOS")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from lm_generation_helpers import (
    end_ids,
    first_steps,
    greedy_picks,
    lay_out,
    random_grid,
    replay,
    stream,
)
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import small_config

DELAY3 = small_config(streams=[stream("a0", 40), stream("a1", 24, 1), stream("a2", 16, 2)])
FLATTEN2 = small_config(pattern="flatten", streams=[stream("a0", 30), stream("a1", 20)])
PARALLEL2 = small_config(pattern="parallel", streams=[stream("a0", 30), stream("a1", 20)])
SAMPLED = si.Sampling(temperature=1.0, top_k=30, repetition_penalty=1.3)


def load(export_lm, config: dict, seed: int = 0):
    twin, path = export_lm(config, seed=seed)
    return twin, si.SpeechLM.load(path)


# --- seeds -----------------------------------------------------------------------------------


def test_same_seed_same_tokens_other_seed_other_tokens(export_lm) -> None:
    twin, lm = load(export_lm, DELAY3)
    prompt = random_grid(twin.vocab_sizes, 1, 3, seed=0)
    runs = {s: lm.generate(prompt, 16, si.Sampling(), seed=s, stop_on_eos=False) for s in range(6)}
    np.testing.assert_array_equal(lm.generate(prompt, 16, si.Sampling(), seed=3), runs[3])
    for a in range(6):
        for b in range(a + 1, 6):
            assert not np.array_equal(runs[a][:, :, 3:], runs[b][:, :, 3:]), (a, b)
    # The default seed is 0.
    np.testing.assert_array_equal(lm.generate(prompt, 16, si.Sampling()), runs[0])


@pytest.mark.parametrize("config", [DELAY3, FLATTEN2], ids=["delay", "flatten"])
def test_sequence_tokens_do_not_depend_on_the_batch(export_lm, config: dict) -> None:
    twin, lm = load(export_lm, config, seed=1)
    vocabs = twin.vocab_sizes
    lengths, seeds = [3, 5, 3, 1, 3], [11, 12, 13, 14, 15]
    prompts = [random_grid(vocabs, 1, t, seed=20 + i)[0] for i, t in enumerate(lengths)]
    alone = [
        lm.generate(p[None], 8, SAMPLED, seed=s, stop_on_eos=False)[0]
        for p, s in zip(prompts, seeds, strict=True)
    ]
    # Ragged list with a seed list.
    got = lm.generate(prompts, 8, SAMPLED, seed=seeds, stop_on_eos=False)
    assert isinstance(got, list) and len(got) == 5
    for b in range(5):
        assert got[b].shape == (twin.num_streams, lengths[b] + 8)
        np.testing.assert_array_equal(got[b], alone[b], err_msg=f"sequence {b}")
    # A list of equal lengths, and the array form, in another order and batch.
    same = [0, 2, 4]
    listed = lm.generate(
        [prompts[i] for i in same], 8, SAMPLED, seed=[seeds[i] for i in same], stop_on_eos=False
    )
    array = lm.generate(
        np.stack([prompts[i] for i in same][::-1]),
        8,
        SAMPLED,
        seed=[seeds[i] for i in same][::-1],
        stop_on_eos=False,
    )
    for j, i in enumerate(same):
        np.testing.assert_array_equal(listed[j], alone[i])
        np.testing.assert_array_equal(array[2 - j], alone[i])
    # One int seed seeds every sequence alike: copies of a prompt give copies of the tokens.
    copies = lm.generate(np.stack([prompts[1]] * 3), 8, SAMPLED, seed=12, stop_on_eos=False)
    for b in range(3):
        np.testing.assert_array_equal(copies[b], alone[1])
    mixed = lm.generate([prompts[3], prompts[1]], 8, SAMPLED, seed=12, stop_on_eos=False)
    np.testing.assert_array_equal(mixed[1], alone[1])


# --- greedy ----------------------------------------------------------------------------------


def test_greedy_is_temperature_zero_and_argmax(export_lm) -> None:
    twin, lm = load(export_lm, DELAY3, seed=2)
    prompt = random_grid(twin.vocab_sizes, 2, 3, seed=1)
    greedy = lm.generate(prompt, 12, stop_on_eos=False)
    for sampling in (
        si.Sampling(temperature=0.0),
        si.Sampling(temperature=0.0, top_k=1, top_p=0.1, min_p=0.9),  # filters skipped
        [None, si.Sampling(temperature=0.0), None],
    ):
        np.testing.assert_array_equal(
            lm.generate(prompt, 12, sampling, seed=9, stop_on_eos=False), greedy
        )
    for b in range(2):
        replay(lm, twin, greedy[b], 3, [None] * 3, seed=0)
    assert len(np.unique(greedy[:, :, 3:])) > 3  # not degenerate


def test_per_stream_sampling_greedy_text_sampled_audio(export_lm) -> None:
    config = small_config(
        streams=[stream("text", 32, role="text"), stream("a0", 24, 1), stream("a1", 20, 2)]
    )
    twin, lm = load(export_lm, config, seed=3)
    prompt = random_grid(twin.vocab_sizes, 2, 3, seed=2)
    per_stream = [None, si.Sampling(), si.Sampling(temperature=1.2)]
    runs = [lm.generate(prompt, 12, per_stream, seed=s, stop_on_eos=False) for s in (1, 2)]
    specs = [None, {}, {"temperature": 1.2}]
    for out, seed in zip(runs, (1, 2), strict=True):
        for b in range(2):
            replay(lm, twin, out[b], 3, specs, seed)
    # The text stream is the argmax of the teacher-forced logits of the result.
    steps = lay_out(twin, runs[0])
    text_logits = lm.logits(steps)[0]
    fs = first_steps(twin, 15)
    for b in range(2):
        for t in range(3, 15):
            assert runs[0][b, 0, t] in greedy_picks(text_logits[b, fs[0, t] - 1])
    assert not np.array_equal(runs[0][:, 1:], runs[1][:, 1:])  # the audio streams are sampled


def test_greedy_ties_go_to_the_first_index(export_lm, tmp_path: Path) -> None:
    twin, lm = load(export_lm, DELAY3, seed=2)
    prompt = random_grid(twin.vocab_sizes, 2, 3, seed=1)
    before = lm.generate(prompt, 12, stop_on_eos=False)
    ids, counts = np.unique(before[:, 0, 3:], return_counts=True)
    i = int(ids[np.argmax(np.where(ids < 36, counts, -1))])  # the commonest argmax below 36
    with torch.no_grad():
        twin.heads[0].weight[36] = twin.heads[0].weight[i]  # id 36 now ties with id i
    tied = si.SpeechLM.load(save_pretrained(twin, tmp_path / "tie"))
    after = tied.generate(prompt, 12, stop_on_eos=False)
    assert (after[:, 0, 3:] == i).sum() >= 2
    np.testing.assert_array_equal(after, before)  # never the later id 36
    # Sampled, the two are equally likely: 36 does come up.
    sampled = tied.generate(np.repeat(prompt, 50, 0), 3, si.Sampling(), seed=list(range(100)))
    assert (sampled[:, 0, 3:] == 36).any()


# --- EOS -------------------------------------------------------------------------------------

EOS_CONFIGS = {
    "delay-012": DELAY3,
    "delay-end-stream-2": small_config(
        end_stream=2, streams=[stream("a0", 20, 2), stream("a1", 16, 3), stream("a2", 12, 0)]
    ),
    "flatten-3": small_config(
        pattern="flatten", streams=[stream("a0", 20), stream("a1", 16), stream("a2", 12)]
    ),
    "parallel-missing-ids": small_config(
        pattern="parallel",
        streams=[
            stream("a0", 20),
            stream("a1", 16, pad_id=None),  # EOS frame: eos; after it: eos
            stream("a2", 12, pad_id=None, eos_id=None),  # EOS frame: generated; after: bos
        ],
    ),
}


def eos_biased(export_lm, tmp_path: Path, config: dict) -> tuple:
    """The end stream's eos row copies the row of its most likely token: EOS now and then."""
    twin, _ = export_lm(config, seed=1)
    end = config["end_stream"]
    eos = config["streams"][end]["eos_id"]
    steps = lay_out(twin, random_grid(twin.vocab_sizes, 4, 10, seed=0))
    with torch.no_grad():
        probs = twin(torch.from_numpy(steps))[end].softmax(-1).mean((0, 1))
        probs[-3:] = 0
        twin.heads[end].weight[eos] = twin.heads[end].weight[int(probs.argmax())]
    return twin, si.SpeechLM.load(save_pretrained(twin, tmp_path / "eos"))


@pytest.mark.parametrize("name", list(EOS_CONFIGS))
def test_eos_stops_sampled_generation(export_lm, tmp_path: Path, name: str) -> None:
    config = EOS_CONFIGS[name]
    twin, lm = eos_biased(export_lm, tmp_path, config)
    end = config["end_stream"]
    eos = config["streams"][end]["eos_id"]
    at_end, fill = end_ids(twin)
    t_n, n, b_n = 3, 12, 16
    prompt = np.repeat(random_grid(twin.vocab_sizes, 1, t_n, seed=5), b_n, 0)
    prompt[:8, end, 1] = eos  # EOS in a prompt never ends anything
    seeds = list(range(b_n))
    free = lm.generate(prompt, n, si.Sampling(), seed=seeds, stop_on_eos=False)
    got = lm.generate(prompt, n, si.Sampling(), seed=seeds)
    assert got.shape == free.shape == (b_n, twin.num_streams, t_n + n)
    ends: dict[int, int] = {}
    for b in range(b_n):
        hits = np.flatnonzero(free[b, end, t_n:] == eos)
        if len(hits) == 0:
            np.testing.assert_array_equal(got[b], free[b])
            continue
        t_e = t_n + int(hits[0])
        ends[b] = t_e
        # Identical before the column where the end stream drew its EOS (in that column a
        # forced stream draws no random number, so later streams' draws may move).
        column = first_steps(twin, t_n + n)[end, t_e]
        same = first_steps(twin, t_n + n) < column
        for k in range(twin.num_streams):
            np.testing.assert_array_equal(got[b, k, same[k]], free[b, k, same[k]])
        assert got[b, end, t_e] == eos
        for k in range(twin.num_streams):
            if k != end and at_end[k] is not None:
                assert got[b, k, t_e] == at_end[k], (b, k)
            assert (got[b, k, t_e + 1 :] == fill[k]).all(), (b, k)
        # Every token, draws after the EOS column included, follows docs/lm.md.
        replay(lm, twin, got[b], t_n, [{}] * twin.num_streams, b, stop_on_eos=True)
    assert len(ends) >= 3 and min(ends.values()) < t_n + n - 2, f"too few early stops: {ends}"
    assert len(ends) < b_n, "every sequence stopped: nothing shows that others go on"
    assert set(range(8)) - set(ends), "no sequence with an EOS in its prompt went on"
    # Under guidance too (the unconditional twin ends with its conditional sequence).
    guided = lm.generate(prompt, n, si.Sampling(cfg_scale=1.5), seed=seeds)
    spec = [{"cfg_scale": 1.5}] * twin.num_streams
    for b in range(b_n):
        replay(lm, twin, guided[b], t_n, spec, b, stop_on_eos=True)
    assert (guided[:, end, t_n:] == eos).any()
    # stream() yields the same frames; a sequence that ended yields its rest at once.
    chunks = list(lm.stream(prompt, n, si.Sampling(), seed=seeds))
    np.testing.assert_array_equal(np.concatenate(chunks, axis=-1), got[:, :, t_n:])
    b = min(ends, key=ends.__getitem__)
    t_e = ends[b]
    alone = list(lm.stream(prompt[b : b + 1], n, si.Sampling(), seed=b))
    np.testing.assert_array_equal(np.concatenate(alone, axis=-1), got[b : b + 1, :, t_n:])
    assert [c.shape[-1] for c in alone] == [1] * (t_e - t_n) + [t_n + n - t_e]


# --- stream() --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "sampling"),
    [
        (DELAY3, None),
        (DELAY3, si.Sampling(temperature=0.9, top_p=0.95)),
        (FLATTEN2, si.Sampling()),
        (PARALLEL2, [si.Sampling(cfg_scale=2.0), None]),
    ],
    ids=["delay-greedy", "delay-sampled", "flatten-sampled", "parallel-cfg"],
)
def test_stream_chunks_concatenate_to_generate(export_lm, config: dict, sampling) -> None:
    twin, lm = load(export_lm, config, seed=4)
    prompt = random_grid(twin.vocab_sizes, 3, 4, seed=3)
    n = 9
    want = lm.generate(prompt, n, sampling, seed=[1, 2, 3], stop_on_eos=False)
    stream_ = lm.stream(prompt, n, sampling, seed=[1, 2, 3], stop_on_eos=False)
    assert isinstance(stream_, si.GenerationStream)
    chunks = list(stream_)
    assert len(chunks) > 1
    for c in chunks:
        assert c.dtype == np.int64 and c.shape[:2] == (3, twin.num_streams) and c.shape[2] >= 1
    np.testing.assert_array_equal(np.concatenate(chunks, axis=-1), want[:, :, 4:])
    # One frame per chunk: frames are yielded as soon as they are complete.
    assert [c.shape[-1] for c in chunks] == [1] * n
    assert list(stream_) == []
    # Ragged prompts: chunks [B, K, n] of the generated frames of each.
    prompts = [prompt[0], prompt[1, :, :2], prompt[2, :, :1]]
    ragged = lm.generate(prompts, n, sampling, seed=[1, 2, 3], stop_on_eos=False)
    chunks = list(lm.stream(prompts, n, sampling, seed=[1, 2, 3], stop_on_eos=False))
    assert len(chunks) > 1
    joined = np.concatenate(chunks, axis=-1)
    for b, p in enumerate(prompts):
        np.testing.assert_array_equal(joined[b], ragged[b][:, p.shape[1] :])


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 2.0}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"top_k": 0}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"cfg_scale": -1.0}, "cfg_scale"),
        ({"cfg_formula": "x"}, "cfg_formula"),
        ({"cfg_top_k": 0}, "cfg_top_k"),
        ({"allowed_tokens": []}, "allowed_tokens"),
        ({"allowed_tokens": [-1]}, "allowed_tokens"),
    ],
)
def test_bad_sampling_values_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(si.InputError, match=name):
        si.Sampling(**kwargs)


def test_bad_generation_arguments(export_lm) -> None:
    twin, lm = load(export_lm, small_config(max_context=40))  # delays [0, 1]
    prompt = random_grid(twin.vocab_sizes, 2, 4, seed=0)
    calls: list[Callable] = [lm.generate, lambda *a, **k: list(lm.stream(*a, **k))]
    for call in calls:
        with pytest.raises(si.InputError, match="allowed_tokens"):
            call(prompt, 2, si.Sampling(allowed_tokens=[3, 24]))  # stream 1 has 24 ids
        with pytest.raises(si.InputError, match="seed"):
            call(prompt, 2, si.Sampling(), seed=[1, 2, 3])
        with pytest.raises(si.InputError, match="seed"):
            call(prompt, 2, si.Sampling(), seed=[])
        with pytest.raises(si.InputError, match="seed"):
            call(prompt, 2, si.Sampling(), seed=-1)
        with pytest.raises(si.InputError, match="sampling"):
            call(prompt, 2, [si.Sampling()] * 3)
        with pytest.raises(si.InputError, match="sampling"):
            call(prompt, 2, [si.Sampling()])
        with pytest.raises(si.InputError, match="max_context"):
            call(prompt, 36, si.Sampling())  # 4 + 36 frames need 41 positions
        with pytest.raises(si.InputError, match="max_frames"):
            call(prompt, -1, si.Sampling())
        with pytest.raises(si.InputError, match="cfg"):
            call(prompt, 2, si.Sampling(cfg_scale=2.0), cfg_prompt=list(prompt[:1]))
    # allowed_tokens inside stream 0's vocabulary only is fine when given to stream 0 alone.
    out = lm.generate(prompt, 3, [si.Sampling(allowed_tokens=[30, 31]), None])
    assert set(np.unique(out[:, 0, 4:])) <= {30, 31}
    assert lm.generate(prompt, 35, si.Sampling()).shape == (2, 2, 39)


# --- threads ---------------------------------------------------------------------------------


def run_threads(work: Callable[[int], np.ndarray], n: int = 8) -> list[np.ndarray]:
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as e:  # re-raised below
            errors.append(e)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_threads_share_one_model(export_lm) -> None:
    twin, lm = load(export_lm, DELAY3, seed=5)
    prompt = random_grid(twin.vocab_sizes, 2, 3, seed=4)

    def generate(i: int) -> np.ndarray:
        return lm.generate(prompt, 16, SAMPLED, seed=100 + i, stop_on_eos=False)

    def session(i: int) -> np.ndarray:
        sess = lm.session(2, SAMPLED, seed=[i, 50 + i])
        frames = []
        for t in range(10):
            frame = np.full((2, 3), si.SAMPLE, dtype=np.int64)
            if t < 3:
                frame[:] = prompt[:, :, t]
            frame[1, 2] = t % 16  # one stream of sequence 1 forced throughout
            frames.append(sess.step(frame))
        frames.append(sess.flush())
        return np.concatenate(frames, axis=-1)

    for work in (generate, session):
        sequential = [work(i) for i in range(8)]
        assert len({r.tobytes() for r in sequential}) == 8
        for i, got in enumerate(run_threads(work)):
            np.testing.assert_array_equal(got, sequential[i], err_msg=f"{work.__name__} {i}")
