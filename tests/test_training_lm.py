"""The PyTorch LM twin alone: patterns against the verified grids, config, score, generation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from speechinfer_training import lm as lm_module
from speechinfer_training import patterns as P
from speechinfer_training.export import load_pretrained, save_pretrained
from speechinfer_training.lm import DEFAULT_CONFIG, SpeechLM, resolve_lm_config, small_config
from speechinfer_training.lm_depth import DEFAULT_DEPTH
from speechinfer_training.registry import registered_model_types

# Every grid of reference/patterns.md (K = 3, T = 4): S = special, n = frame n - 1.
GRIDS = {
    P.Delay((0, 1, 2)): """
        S  1  2  3  4  S  S
        S  S  1  2  3  4  S
        S  S  S  1  2  3  4""",
    P.Parallel(): """
        S  1  2  3  4
        S  1  2  3  4
        S  1  2  3  4""",
    P.Delay((0, 2, 3)): """
        S  1  2  3  4  S  S  S
        S  S  S  1  2  3  4  S
        S  S  S  S  1  2  3  4""",
    P.Delay((0, 1, 2), flatten_first=1): """
        S  1  S  S  2  3  4  S  S
        S  S  1  S  S  2  3  4  S
        S  S  S  1  S  S  2  3  4""",
    P.flatten(3): """
        S  1  S  S  2  S  S  3  S  S  4  S  S
        S  S  1  S  S  2  S  S  3  S  S  4  S
        S  S  S  1  S  S  2  S  S  3  S  S  4""",
    P.Unroll((0, 1, 1)): """
        S  1  S  2  S  3  S  4  S
        S  S  1  S  2  S  3  S  4
        S  S  1  S  2  S  3  S  4""",
    P.CoarseFirst(): """
        S  1  2  3  4  S  S  S  S
        S  S  S  S  S  1  2  3  4
        S  S  S  S  S  1  2  3  4""",
}


def parse(text: str) -> list[list[int]]:
    return [
        [-1 if c == "S" else int(c) - 1 for c in line.split()] for line in text.strip().splitlines()
    ]


@pytest.mark.parametrize("kind", list(GRIDS), ids=str)
def test_patterns_match_verified_grids(kind: P.PatternKind) -> None:
    layout = P.Layout(kind, 3, 4)
    assert layout.indices.tolist() == parse(GRIDS[kind])


def random_kind(rng: random.Random, k_n: int) -> P.PatternKind:
    choice = rng.randrange(4)
    if choice == 0:
        return P.Parallel()
    if choice == 1:
        return P.CoarseFirst()
    if choice == 2:
        flattening = [0]
        for _ in range(k_n - 1):
            flattening.append(flattening[-1] + rng.randrange(2))
        return P.Unroll(tuple(flattening))
    delays = tuple(rng.randrange(6) for _ in range(k_n))
    return P.Delay(delays, rng.randrange(4) if rng.randrange(3) == 0 else 0)


def test_pattern_properties() -> None:
    rng = random.Random(0)
    for _ in range(300):
        k_n, t_n = rng.randint(1, 6), rng.randint(1, 12)
        kind = random_kind(rng, k_n)
        layout = P.Layout(kind, k_n, t_n)
        grid = torch.randint(0, 1000, (2, k_n, t_n))
        special = [5000 + k for k in range(k_n)]
        steps = layout.apply(grid, special)
        assert steps.shape == (2, k_n, layout.num_steps)
        assert torch.equal(layout.revert(steps), grid), kind
        assert (steps[..., 0] >= 5000).all()
        assert int((layout.indices >= 0).sum()) == k_n * t_n
        if isinstance(kind, P.Delay) and kind.flatten_first == 0:
            assert layout.num_steps == t_n + max(kind.delays) + 1


def test_config_defaults_and_validation() -> None:
    model = SpeechLM({})
    assert model.config == DEFAULT_CONFIG
    assert model.num_streams == 4
    assert "speechinfer-lm" in registered_model_types()
    assert model.pattern_kind == P.Delay((0, 1, 2, 3))
    bad = [
        ({"n_kv_heads": 3}, "must divide"),
        ({"n_heads": 6}, "even head_dim"),
        ({"pattern": "flat"}, "pattern must be one of"),
        ({"colour": 1}, "unknown config keys"),
        ({"streams": []}, "non-empty"),
        ({"pattern": "parallel"}, "needs pattern 'delay'"),
        ({"streams": [{**DEFAULT_CONFIG["streams"][0], "bos_id": None}]}, "bos_id must be set"),
        ({"streams": [{**DEFAULT_CONFIG["streams"][0], "eos_id": 2000}]}, "outside"),
        ({"streams": [{"name": "x"}]}, "missing keys"),
    ]
    for config, message in bad:
        with pytest.raises(ValueError, match=message):
            resolve_lm_config(config)


def test_export_round_trip(tmp_path: Path) -> None:
    for tie in (False, True):
        torch.manual_seed(0)
        model = SpeechLM(small_config(tie_embeddings=tie)).eval()
        names = set(model.export_state_dict())
        assert ("heads.0.weight" in names) != tie
        assert "layers.1.attn.k_proj.weight" in names
        assert model.export_state_dict()["layers.0.attn.k_proj.weight"].shape == (16, 32)
        path = save_pretrained(model, tmp_path / f"lm{tie}")
        loaded = load_pretrained(path)
        steps = torch.randint(0, 20, (2, 2, 6))
        for a, b in zip(model(steps), loaded(steps), strict=True):
            torch.testing.assert_close(a, b)


def test_forward_is_causal() -> None:
    torch.manual_seed(1)
    model = SpeechLM(small_config()).eval()
    steps = torch.randint(0, 20, (1, 2, 8))
    changed = steps.clone()
    changed[:, :, 5:] = (changed[:, :, 5:] + 1) % 20
    with torch.no_grad():
        for a, b in zip(model(steps), model(changed), strict=True):
            torch.testing.assert_close(a[:, :5], b[:, :5])
            assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_score_is_the_sum_of_next_step_log_probs() -> None:
    torch.manual_seed(2)
    model = SpeechLM(small_config()).eval()
    grid = torch.randint(0, 20, (2, 2, 5))
    layout = model.layout(5)
    steps = layout.apply(grid, model.special_ids)
    with torch.no_grad():
        logits = model(steps[..., :-1])
    want = torch.zeros(2, dtype=torch.float64)
    for k in range(2):
        for t in range(1, 5):
            s = int(layout.first_step[k, t])
            lp = logits[k][:, s - 1].double().log_softmax(-1)
            want += lp[torch.arange(2), grid[:, k, t]]
    got = model.score(grid)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)


def test_generate_greedy_keeps_the_prompt_and_follows_argmax() -> None:
    torch.manual_seed(3)
    model = SpeechLM(small_config()).eval()
    prompt = torch.randint(0, 20, (2, 2, 3))
    out = model.generate_greedy(prompt, 5, stop_on_eos=False)
    assert out.shape == (2, 2, 8)
    assert torch.equal(out[..., :3], prompt)
    # Teacher forcing the result reproduces it: every generated token is the argmax.
    layout = model.layout(8)
    steps = layout.apply(out, model.special_ids)
    with torch.no_grad():
        logits = model(steps[..., :-1])
    for k in range(2):
        for t in range(3, 8):
            s = int(layout.first_step[k, t])
            assert torch.equal(logits[k][:, s - 1].argmax(-1), out[:, k, t])


# ---------------------------------------------------------------------------------------------
# Patterns "flatten", "depth", "coarse_first", the -1 marker and EOS (docs/lm.md).


def stream(name: str, vocab: int, delay: int = 0, role: str = "audio", **ids: int | None) -> dict:
    specials = {"pad_id": vocab - 3, "eos_id": vocab - 2, "bos_id": vocab - 1} | ids
    return {"name": name, "role": role, "vocab_size": vocab, "delay": delay, **specials}


TINY = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 48}
TINY_DEPTH = {
    "d_model": 16,
    "n_layers": 2,
    "n_heads": 2,
    "n_kv_heads": 1,
    "ffn_dim": 24,
    "per_position_proj": True,
}
THREE = [stream("a0", 30), stream("a1", 21), stream("a2", 12)]


def three(*delays: int) -> list[dict]:
    return [{**s, "delay": d} for s, d in zip(THREE, delays, strict=True)]


PATTERN_CONFIGS = {
    "parallel": {**TINY, "pattern": "parallel", "streams": three(0, 0, 0)},
    "delay": {**TINY, "pattern": "delay", "streams": three(0, 1, 2)},
    "flatten": {**TINY, "pattern": "flatten", "streams": three(0, 0, 0)},
    "depth": {**TINY, "pattern": "depth", "depth": TINY_DEPTH, "streams": three(0, 0, 0)},
    "depth-shared-delayed": {
        **TINY,
        "pattern": "depth",
        "depth": {**TINY_DEPTH, "per_position_proj": False},
        "streams": three(0, 1, 2),
    },
    "coarse_first": {**TINY, "pattern": "coarse_first", "streams": three(0, 0, 0)},
    "coarse_first-tied": {
        **TINY,
        "pattern": "coarse_first",
        "tie_embeddings": True,
        "streams": three(0, 0, 0)[:2],
    },
}


def random_model(config: dict, seed: int = 0) -> SpeechLM:
    """Random weights large enough that greedy outputs are not degenerate."""
    torch.manual_seed(seed)
    model = SpeechLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif "embeddings" not in name:
                param.normal_(0.0, 1.5 / param.shape[1] ** 0.5)
    return model


def random_grid(model: SpeechLM, batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, v, (batch, frames), generator=gen) for v in model.vocab_sizes]
    return torch.stack(rows, 1)


def expected_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """The contract tensor names and shapes of docs/lm.md, written out independently."""
    cfg = resolve_lm_config(config)
    d = cfg["d_model"]
    vocab = [s["vocab_size"] for s in cfg["streams"]]
    k_n, pattern = len(vocab), cfg["pattern"]

    def layers(prefix: str, sizes: dict) -> dict[str, tuple[int, ...]]:
        dm, f, h, kv = sizes["d_model"], sizes["ffn_dim"], sizes["n_heads"], sizes["n_kv_heads"]
        e = dm // h
        shapes = {
            "attn_norm": (dm,),
            "attn.q_proj": (h * e, dm),
            "attn.k_proj": (kv * e, dm),
            "attn.v_proj": (kv * e, dm),
            "attn.o_proj": (dm, h * e),
            "ffn_norm": (dm,),
            "ffn.gate_proj": (f, dm),
            "ffn.up_proj": (f, dm),
            "ffn.down_proj": (dm, f),
        }
        return {
            f"{prefix}layers.{i}.{name}.weight": shape
            for i in range(sizes["n_layers"])
            for name, shape in shapes.items()
        }

    main = range(1) if pattern == "coarse_first" else range(k_n)
    names = {f"embeddings.{k}.weight": (vocab[k], d) for k in main}
    names |= layers("", cfg) | {"norm.weight": (d,)}
    if not cfg["tie_embeddings"] and pattern != "depth":
        names |= {f"heads.{k}.weight": (vocab[k], d) for k in main}
    if pattern == "depth":
        dep = cfg["depth"]
        dd = dep["d_model"]
        projections = k_n if dep["per_position_proj"] else 1
        names |= {f"depth.in_proj.{j}.weight": (dd, d) for j in range(projections)}
        names |= {f"depth.embeddings.{k}.weight": (vocab[k - 1], dd) for k in range(1, k_n)}
        names |= layers("depth.", dep) | {"depth.norm.weight": (dd,)}
        names |= {f"depth.heads.{k}.weight": (vocab[k], dd) for k in range(k_n)}
    if pattern == "coarse_first":
        names |= {f"nar.embeddings.{k}.weight": (vocab[k], d) for k in range(k_n)}
        names |= {"nar.stage_embeddings.weight": (k_n - 1, d)}
        names |= layers("nar.", cfg) | {"nar.norm.weight": (d,)}
        names |= {f"nar.heads.{j}.weight": (vocab[j], d) for j in range(1, k_n)}
    return names


def test_new_config_keys_defaults_and_validation() -> None:
    assert DEFAULT_CONFIG["depth"] is None
    assert DEFAULT_CONFIG["end_stream"] == 0
    assert SpeechLM({}).depth is None
    # Every DEFAULT_CONFIG key is documented by a comment line right above it.
    source = Path(lm_module.__file__).read_text().splitlines()
    for key in DEFAULT_CONFIG:
        line = next(i for i, text in enumerate(source) if text.startswith(f'    "{key}":'))
        assert source[line - 1].strip().startswith("#"), key
    # "depth" without sizes gets the documented defaults; a partial object is completed.
    assert resolve_lm_config({"pattern": "depth"})["depth"] == DEFAULT_DEPTH
    partial = resolve_lm_config({"pattern": "depth", "depth": {"n_layers": 1}})["depth"]
    assert partial == {**DEFAULT_DEPTH, "n_layers": 1}
    assert list(partial) == list(DEFAULT_DEPTH)
    zero = [{**s, "delay": 0} for s in DEFAULT_CONFIG["streams"]]
    for pattern in ("flatten", "coarse_first", "parallel"):
        resolve_lm_config({"pattern": pattern, "streams": zero})
    resolve_lm_config({"pattern": "depth"})  # depth honours delays
    resolve_lm_config({"end_stream": 3})
    bad = [
        ({"pattern": "flatten"}, "needs pattern 'delay'"),
        ({"pattern": "coarse_first"}, "needs pattern 'delay'"),
        ({"pattern": "coarse_first", "streams": zero[:1]}, "at least 2 streams"),
        ({"pattern": "depth", "tie_embeddings": True}, "tie_embeddings must be false"),
        ({"depth": DEFAULT_DEPTH}, "must be null unless"),
        ({"pattern": "depth", "depth": [1]}, "must be an object"),
        ({"pattern": "depth", "depth": {"colour": 1}}, "unknown keys"),
        ({"pattern": "depth", "depth": {"n_heads": 3}}, "even head_dim"),
        ({"pattern": "depth", "depth": {"n_kv_heads": 3}}, "must divide"),
        ({"pattern": "depth", "depth": {"n_layers": 0}}, "positive integer"),
        ({"pattern": "depth", "depth": {"per_position_proj": 1}}, "must be a bool"),
        ({"end_stream": 4}, "end_stream"),
        ({"end_stream": -1}, "end_stream"),
        ({"end_stream": True}, "end_stream"),
    ]
    for config, message in bad:
        with pytest.raises(ValueError, match=message):
            resolve_lm_config(config)


@pytest.mark.parametrize("name", list(PATTERN_CONFIGS))
def test_tensor_names_follow_the_contract(name: str) -> None:
    config = PATTERN_CONFIGS[name]
    model = SpeechLM(config)
    got = {n: tuple(t.shape) for n, t in model.export_state_dict().items()}
    assert got == expected_tensors(config)


@pytest.mark.parametrize("name", list(PATTERN_CONFIGS))
def test_round_trip_per_pattern(tmp_path: Path, name: str) -> None:
    model = random_model(PATTERN_CONFIGS[name], seed=1)
    path = save_pretrained(model, tmp_path / name)
    loaded = load_pretrained(path)
    assert isinstance(loaded, SpeechLM)
    assert loaded.config == model.config
    grid = random_grid(model, 2, 5)
    torch.testing.assert_close(loaded.score(grid), model.score(grid))
    assert torch.equal(loaded.generate_greedy(grid, 3), model.generate_greedy(grid, 3))
    rows = model.num_step_rows
    steps = model.layout(5).apply(grid[:, :rows], model.special_ids[:rows])
    with torch.no_grad():
        for a, b in zip(model(steps), loaded(steps), strict=True):
            torch.testing.assert_close(a, b)
    if model.nar is not None:
        torch.testing.assert_close(loaded.nar_logits(grid, 1, 2), model.nar_logits(grid, 1, 2))


def test_no_input_marker_embeds_zero_and_bad_ids_fail() -> None:
    model = random_model(PATTERN_CONFIGS["delay"], seed=2)
    grid = random_grid(model, 2, 6).clamp(min=1)  # id 0 is the zeroed row below
    steps = model.layout(6).apply(grid, model.special_ids)
    marked = steps.clone()
    marked[0, 1, 3] = marked[1, 2, 5] = marked[1, 0, 2] = -1
    # Same as a vocabulary row of zeros.
    zeroed = random_model(PATTERN_CONFIGS["delay"], seed=2)
    with torch.no_grad():
        for k in range(3):
            zeroed.embeddings[k].weight[0] = 0.0
        want = zeroed(marked.clamp(min=0))
        got = model(marked)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    for value, stream_k in [(-2, 0), (30, 0), (21, 1)]:
        bad = steps.clone()
        bad[0, stream_k, 1] = value
        with pytest.raises(ValueError, match="outside"):
            model(bad)
        bad_grid = grid.clone()
        bad_grid[0, stream_k, 1] = value
        for call in (model.score, lambda g: model.generate_greedy(g, 1)):
            with pytest.raises(ValueError, match="outside"):
                call(bad_grid)
    with pytest.raises(ValueError, match="integer"):
        model(steps.float())


@pytest.mark.parametrize("name", list(PATTERN_CONFIGS))
def test_score_skips_no_input_targets(name: str) -> None:
    model = random_model(PATTERN_CONFIGS[name], seed=3)
    grid = random_grid(model, 2, 5, seed=3)
    base = model.score(grid)
    marked = grid.clone()
    marked[1, -1, 4] = -1  # the last frame of the last stream: nothing else reads it
    got = model.score(marked)
    assert got[0] == base[0]
    assert got[1] > base[1]
    # Every pattern: a -1 is allowed anywhere, also in the condition frame.
    marked[0, 0, 0] = -1
    assert torch.isfinite(model.score(marked)).all()


def test_flatten_score_by_hand() -> None:
    model = random_model(PATTERN_CONFIGS["flatten"], seed=4)
    grid = random_grid(model, 2, 3, seed=4)
    k_n, t_n = 3, 3
    steps = torch.tensor(model.special_ids)[None, :, None].repeat(2, 1, 1 + t_n * k_n)
    for t in range(t_n):
        for k in range(k_n):
            steps[:, k, 1 + t * k_n + k] = grid[:, k, t]
    with torch.no_grad():
        logits = model(steps[..., :-1])
    want = torch.zeros(2, dtype=torch.float64)
    for t in range(1, t_n):
        for k in range(k_n):
            lp = logits[k][:, t * k_n + k].double().log_softmax(-1)
            want += lp[torch.arange(2), grid[:, k, t]]
    torch.testing.assert_close(model.score(grid), want)


def _depth_by_hand(model: SpeechLM, hidden: torch.Tensor, column: torch.Tensor) -> list:
    """Depth logits of one step from the doc's formula: hidden [B, d], column [B, K]."""
    depth = model.depth
    assert depth is not None
    per_position = model.config["depth"]["per_position_proj"]
    zs = []
    for k in range(model.num_streams):
        z = hidden @ depth.in_proj[k if per_position else 0].weight.T
        if k > 0:
            ids = column[:, k - 1]
            rows = depth.embeddings[str(k)].weight[ids.clamp(min=0)]
            z = z + torch.where((ids >= 0)[:, None], rows, torch.zeros_like(rows))
        zs.append(z)
    x = torch.stack(zs, 1)
    for layer in depth.layers:
        x = layer(x, depth.rope_cos, depth.rope_sin)
    x = depth.norm(x)
    return [x[:, k] @ depth.heads[k].weight.T for k in range(model.num_streams)]


@pytest.mark.parametrize("name", ["depth", "depth-shared-delayed"])
def test_depth_score_by_hand(name: str) -> None:
    model = random_model(PATTERN_CONFIGS[name], seed=5)
    grid = random_grid(model, 2, 4, seed=5)
    grid[1, 0, 2] = -1
    layout = model.layout(4)
    steps = layout.apply(grid, model.special_ids)
    want = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        hidden = model.main_hidden(steps[..., :-1])
        logits = model(steps)
        for s in range(1, layout.num_steps):
            by_hand = _depth_by_hand(model, hidden[:, s - 1], steps[:, :, s])
            for k in range(3):
                assert logits[k].shape == (2, layout.num_steps - 1, model.vocab_sizes[k])
                torch.testing.assert_close(logits[k][:, s - 1], by_hand[k], rtol=1e-5, atol=1e-5)
                t = int(layout.indices[k, s])
                if t < 1:
                    continue
                lp = by_hand[k].double().log_softmax(-1)
                for b in range(2):
                    if grid[b, k, t] >= 0:
                        want[b] += lp[b, grid[b, k, t]]
    torch.testing.assert_close(model.score(grid), want)


def _nar_by_hand(model: SpeechLM, grid: torch.Tensor, j: int, p: int) -> torch.Tensor:
    nar = model.nar
    assert nar is not None
    t_n = grid.shape[-1]
    x = nar.stage_embeddings.weight[j - 1].expand(grid.shape[0], t_n, -1)
    for k in range(model.num_streams):
        rows = nar.embeddings[k].weight[grid[:, k].clamp(min=0)]
        keep = (grid[:, k] >= 0) & ((torch.arange(t_n) < p) | (k < j))
        x = x + rows * keep[..., None]
    cos, sin = model.rope_cos[:t_n], model.rope_sin[:t_n]
    for layer in nar.layers:
        x = layer(x, cos, sin)
    return nar.norm(x) @ nar.heads[str(j)].weight.T


def test_coarse_first_score_and_nar_logits_by_hand() -> None:
    model = random_model(PATTERN_CONFIGS["coarse_first"], seed=6)
    grid = random_grid(model, 2, 5, seed=6)
    with torch.no_grad():
        # AR: stream 0 alone, parallel layout.
        ar_steps = torch.cat([torch.full((2, 1, 1), model.special_ids[0]), grid[:, :1]], -1)
        (ar,) = model(ar_steps[..., :-1])
        assert ar.shape == (2, 5, 30)
        want = ar[:, 1:].double().log_softmax(-1).gather(-1, grid[:, 0, 1:, None]).sum((1, 2))
        for j in (1, 2):
            assert all(not layer.attn.causal for layer in model.nar.layers)
            for p in (1, 3, 5):
                got = model.nar_logits(grid, j, p)
                assert got.shape == (2, 5, model.vocab_sizes[j])
                torch.testing.assert_close(got, _nar_by_hand(model, grid, j, p))
            lp = model.nar_logits(grid, j, 1)[:, 1:].double().log_softmax(-1)
            want += lp.gather(-1, grid[:, j, 1:, None]).sum((1, 2))
        # Bidirectional: a later frame of a lower stream changes earlier logits.
        changed = grid.clone()
        changed[:, 0, 4] = (changed[:, 0, 4] + 1) % 27
        assert not torch.allclose(
            model.nar_logits(changed, 1, 1)[:, 0], model.nar_logits(grid, 1, 1)[:, 0]
        )
        # Streams >= j beyond the prompt are not read.
        changed = grid.clone()
        changed[:, 1:, 3:] = 0
        torch.testing.assert_close(model.nar_logits(changed, 1, 3), model.nar_logits(grid, 1, 3))
    torch.testing.assert_close(model.score(grid), want)
    for args, message in [
        ((0, 1), "stage"),
        ((3, 1), "stage"),
        ((1, 0), "prompt_frames"),
        ((1, 6), "prompt_frames"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.nar_logits(grid, *args)
    with pytest.raises(ValueError, match="coarse_first"):
        random_model(PATTERN_CONFIGS["delay"]).nar_logits(grid, 1, 1)


def predicted_logits(model: SpeechLM, out: torch.Tensor, t_prompt: int) -> dict:
    """Teacher-forced logits that predicted each frame (k, t >= t_prompt) of the output grid.

    For coarse_first stage j the inputs are what the stage saw: the final grid with P = T.
    """
    frames = out.shape[-1]
    with torch.no_grad():
        if model.nar is not None:
            ar_steps = model.layout(frames).apply(out[:, :1], model.special_ids[:1])
            (ar,) = model(ar_steps[..., :-1])
            rows = {(0, t): ar[:, t] for t in range(t_prompt, frames)}
            for j in range(1, model.num_streams):
                nar = model.nar_logits(out, j, t_prompt)
                rows |= {(j, t): nar[:, t] for t in range(t_prompt, frames)}
            return rows
        layout = model.layout(frames)
        steps = layout.apply(out, model.special_ids)
        logits = model(steps if model.depth is not None else steps[..., :-1])
        return {
            (k, t): logits[k][:, int(layout.first_step[k, t]) - 1]
            for k in range(model.num_streams)
            for t in range(t_prompt, frames)
        }


@pytest.mark.parametrize("name", list(PATTERN_CONFIGS))
def test_generation_keeps_prompt_and_follows_argmax(name: str) -> None:
    model = random_model(PATTERN_CONFIGS[name], seed=7)
    prompt = random_grid(model, 2, 3, seed=7)
    prompt[0, -1, 2] = -1  # a delayed stream's prompt frame lands after generation began
    prompt[1, 0, 0] = -1
    out = model.generate_greedy(prompt, 6, stop_on_eos=False)
    assert out.shape == (2, 3 if "tied" not in name else 2, 9)
    assert torch.equal(out[..., :3], prompt)
    for (k, t), row in predicted_logits(model, out, 3).items():
        assert torch.equal(row.argmax(-1), out[:, k, t]), (k, t)
    # A list of prompts of different lengths: each as if alone.
    prompts = [prompt[0, :, :2], prompt[1], prompt[0]]
    outs = model.generate_greedy(prompts, 4)
    for p, o in zip(prompts, outs, strict=True):
        assert torch.equal(o, model.generate_greedy(p[None], 4)[0])
    assert torch.equal(model.generate_greedy(prompt, 0), prompt)


EOS_CONFIGS = {
    name: {
        **config,
        "streams": [
            config["streams"][0],
            {**config["streams"][1], "eos_id": None},  # pad at t_e, pad after
            {**config["streams"][2], "eos_id": None, "pad_id": None},  # generated, bos after
        ],
    }
    for name, config in PATTERN_CONFIGS.items()
    if len(config["streams"]) == 3
}


def make_eos_likely(
    model: SpeechLM, prompt: torch.Tensor, frames: int, at: int, k: int = 0
) -> None:
    """Make stream k's eos win wherever the token of frame ``at`` (free run, item 0) would."""
    free = model.generate_greedy(prompt, frames, stop_on_eos=False)
    x = int(free[0, k, at])
    eos = model.config["streams"][k]["eos_id"]
    head = model.depth.heads[k] if model.depth is not None else model.heads[k]
    with torch.no_grad():
        head.weight[eos] = 1.05 * head.weight[x]


@pytest.mark.parametrize("name", list(EOS_CONFIGS))
def test_eos_stops_every_stream_consistently(name: str) -> None:
    model = random_model(EOS_CONFIGS[name], seed=8)
    prompt = random_grid(model, 2, 3, seed=8)
    make_eos_likely(model, prompt, 12, at=6)
    out = model.generate_greedy(prompt, 12)
    free = model.generate_greedy(prompt, 12, stop_on_eos=False)
    ended = 0
    fill, at_end = [27, 18, 11], [28, 18, None]  # pad else eos else bos; eos else pad
    forced = set()
    for b in range(2):
        hits = (out[b, 0, 3:] == 28).nonzero()
        if not len(hits):
            assert torch.equal(out[b], free[b])
            continue
        ended += 1
        t_e = 3 + int(hits[0])
        # The end stream itself runs as without EOS up to t_e.
        assert torch.equal(out[b, 0, : t_e + 1], free[b, 0, : t_e + 1])
        for k in range(3):
            assert (out[b, k, t_e + 1 :] == fill[k]).all(), (b, k)
            forced |= {(b, k, t) for t in range(t_e + 1, 15)}
            if k and at_end[k] is not None:
                assert out[b, k, t_e] == at_end[k]
                forced.add((b, k, t_e))
    assert ended, "the biased head should make stream 0 end"
    # Every position not forced by EOS is the argmax of the logits that predicted it.
    for (k, t), row in predicted_logits(model, out, 3).items():
        for b in range(2):
            if (b, k, t) not in forced:
                assert row[b].argmax() == out[b, k, t], (b, k, t)
    # An end stream without eos_id never stops early (coarse_first always ends on stream 0).
    if name != "coarse_first":
        config = {**EOS_CONFIGS[name], "end_stream": 2}
        other = random_model(config, seed=8)
        other.load_state_dict(model.state_dict())
        assert torch.equal(other.generate_greedy(prompt, 12), free)


def test_eos_in_the_prompt_is_not_looked_for() -> None:
    model = random_model(EOS_CONFIGS["delay"], seed=9)
    with torch.no_grad():
        model.heads[0].weight[28] = 0.0  # logit 0: never the argmax here
    prompt = random_grid(model, 2, 3, seed=9)
    prompt[:, 0, 1:] = 28
    free = model.generate_greedy(prompt, 6, stop_on_eos=False)
    assert not (free[:, 0, 3:] == 28).any()
    assert torch.equal(model.generate_greedy(prompt, 6), free)


def test_eos_of_a_later_stream_keeps_what_was_resolved_before() -> None:
    """end_stream 1 (delay 1): stream 0's frame t_e was resolved a step before the EOS and keeps
    its token; every frame after t_e of every stream holds the fill token in the result."""
    config = {**PATTERN_CONFIGS["delay"], "end_stream": 1}
    model = random_model(config, seed=10)
    prompt = random_grid(model, 2, 3, seed=10)
    make_eos_likely(model, prompt, 10, at=6, k=1)
    out = model.generate_greedy(prompt, 10)
    free = model.generate_greedy(prompt, 10, stop_on_eos=False)
    ended = [b for b in range(2) if (out[b, 1, 3:] == 19).any()]
    assert ended
    for b in ended:
        t_e = 3 + int((out[b, 1, 3:] == 19).nonzero()[0])
        assert torch.equal(out[b, :2, : t_e + 1], free[b, :2, : t_e + 1])
        assert out[b, 2, t_e] == 10  # resolved after the EOS: forced to its eos
        assert out[b, :, t_e + 1 :].tolist() == [
            [27] * (12 - t_e),
            [18] * (12 - t_e),
            [9] * (12 - t_e),
        ]
