"""PyTorch twin of the speechinfer token LM: a Llama-shaped transformer over a token grid.

The architecture, config keys, tensor names and the meaning of ``forward``, ``score``,
``nar_logits`` and ``generate_greedy`` follow ``docs/lm.md`` exactly, so a model exported with
:func:`speechinfer_training.export.save_pretrained` is served by the engine with the same logits
(up to float rounding) and the same greedy tokens.

Patterns: ``"parallel"``, ``"delay"`` and ``"flatten"`` are one causal LM over the laid-out step
grid; ``"depth"`` adds a depth transformer (:mod:`.lm_depth`) that produces each step's K tokens;
``"coarse_first"`` is an AR LM over stream 0 plus a NAR model (:mod:`.lm_nar`) for streams
``1..K-1``. The token id ``-1`` ("no input") is allowed wherever tokens are given: its embedding
is zero and, as a target, ``score`` skips it.
"""

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Self

import torch
from torch import Tensor, nn

from .config import require_positive_int, resolve_config
from .lm_blocks import (
    NO_INPUT,
    Block,
    RMSNorm,
    check_token_ids,
    rope_tables,
    run_blocks,
    sum_embeddings,
)
from .lm_depth import DEFAULT_DEPTH, DepthTransformer
from .lm_generate import generate_coarse_first, generate_stepwise
from .lm_nar import NarModel
from .patterns import Delay, Layout, Parallel, PatternKind, flatten
from .registry import copy_exported_tensors, register_model

MODEL_TYPE = "speechinfer-lm"

PATTERNS = ("parallel", "delay", "flatten", "depth", "coarse_first")
ZERO_DELAY_PATTERNS = ("parallel", "flatten", "coarse_first")
ROLES = ("text", "audio", "speaker")
# text_offset: id of the first text token in the stream's vocabulary (tokenizer id i is stream id
# i + text_offset); optional in a given config, filled with 0.
STREAM_KEYS = ("name", "role", "vocab_size", "pad_id", "bos_id", "eos_id", "delay", "text_offset")
DEPTH_KEYS = tuple(DEFAULT_DEPTH)


def audio_stream(q: int, vocab: int = 1027, delay: int | None = None) -> dict[str, Any]:
    """Audio stream ``q`` of ``vocab`` ids (codes, then eos, pad, bos), delayed by ``delay``.

    The delay defaults to ``q`` frames (the delay pattern's staircase).
    """
    return {
        "name": f"audio{q}",
        "role": "audio",
        "vocab_size": vocab,
        "pad_id": vocab - 2,
        "bos_id": vocab - 1,
        "eos_id": vocab - 3,
        "delay": q if delay is None else delay,
        "text_offset": 0,
    }


DEFAULT_CONFIG: dict[str, Any] = {
    # Identifies the model family in config.json; must be this value when present.
    "model_type": MODEL_TYPE,
    # Residual width d.
    "d_model": 256,
    # Transformer blocks.
    "n_layers": 4,
    # Query heads; head_dim = d_model / n_heads must be even.
    "n_heads": 8,
    # Key/value heads (grouped-query attention); must divide n_heads.
    "n_kv_heads": 4,
    # SwiGLU hidden width.
    "ffn_dim": 704,
    # RoPE base (rotate-half convention; the position of step s is s).
    "rope_theta": 10000.0,
    # RMSNorm epsilon.
    "norm_eps": 1e-5,
    # Most LM positions one sequence may feed (the engine's KV-cache capacity).
    "max_context": 2048,
    # Output head of stream k = its input embedding (no heads.* tensors); false under "depth".
    "tie_embeddings": False,
    # The grid's rows: {name, role, vocab_size, pad_id, bos_id, eos_id, delay, text_offset}; bos_id
    # is the stream's special token (step 0 and positions without a frame).
    "streams": [audio_stream(q) for q in range(4)],
    # How the grid becomes LM steps: "parallel", "delay", "flatten", "depth" or "coarse_first".
    "pattern": "delay",
    # The depth transformer's sizes {d_model, n_layers, n_heads, n_kv_heads, ffn_dim,
    # per_position_proj}: required iff pattern is "depth" (the twin fills DEFAULT_DEPTH for any
    # key left out), null otherwise.
    "depth": None,
    # The stream whose eos_id ends a generation; the other streams end at the same frame.
    "end_stream": 0,
}

_POSITIVE_INT_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_context")


def _check_stream(k: int, stream: Any, pattern: str) -> None:
    if not isinstance(stream, dict):
        raise ValueError(f"streams[{k}] must be an object, got {stream!r}")
    unknown = sorted(set(stream) - set(STREAM_KEYS))
    missing = sorted(set(STREAM_KEYS) - set(stream))
    if unknown or missing:
        raise ValueError(f"streams[{k}]: unknown keys {unknown}, missing keys {missing}")
    require_positive_int(stream, "vocab_size")
    if stream["role"] not in ROLES:
        raise ValueError(f"streams[{k}]: role must be one of {ROLES}, got {stream['role']!r}")
    for key in ("pad_id", "bos_id", "eos_id"):
        value = stream[key]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"streams[{k}]: {key} must be an int or null, got {value!r}")
        if not 0 <= value < stream["vocab_size"]:
            raise ValueError(
                f"streams[{k}]: {key} {value} is outside the vocabulary "
                f"(vocab_size {stream['vocab_size']})"
            )
    offset = stream["text_offset"]
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int)
        or not 0 <= offset < stream["vocab_size"]
    ):
        raise ValueError(
            f"streams[{k}]: text_offset must be an int in [0, vocab_size), got {offset!r}"
        )
    if stream["bos_id"] is None:
        raise ValueError(f"streams[{k}]: bos_id must be set (it is the stream's special token)")
    delay = stream["delay"]
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"streams[{k}]: delay must be a non-negative int, got {delay!r}")
    if pattern in ZERO_DELAY_PATTERNS and delay != 0:
        raise ValueError(
            f"streams[{k}]: delay {delay} needs pattern 'delay' or 'depth' (got {pattern!r})"
        )


def _check_sizes(sizes: dict[str, Any], where: str) -> None:
    for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim"):
        try:
            require_positive_int(sizes, key)
        except ValueError as error:
            raise ValueError(f"{where}{error}") from None
    d, h, hkv = sizes["d_model"], sizes["n_heads"], sizes["n_kv_heads"]
    if d % h or (d // h) % 2:
        raise ValueError(f"{where}d_model {d} must be n_heads {h} times an even head_dim")
    if h % hkv:
        raise ValueError(f"{where}n_kv_heads {hkv} must divide n_heads {h}")


def _resolve_depth(resolved: dict[str, Any]) -> None:
    depth = resolved["depth"]
    if resolved["pattern"] != "depth":
        if depth is not None:
            raise ValueError("config['depth'] must be null unless pattern is 'depth'")
        return
    if resolved["tie_embeddings"]:
        raise ValueError("tie_embeddings must be false under pattern 'depth'")
    depth = {} if depth is None else depth
    if not isinstance(depth, dict):
        raise ValueError(f"config['depth'] must be an object, got {depth!r}")
    unknown = sorted(set(depth) - set(DEPTH_KEYS))
    if unknown:
        raise ValueError(f"config['depth']: unknown keys {unknown}; known keys {list(DEPTH_KEYS)}")
    depth = {**DEFAULT_DEPTH, **depth}
    _check_sizes(depth, "config['depth']: ")
    if not isinstance(depth["per_position_proj"], bool):
        raise ValueError("config['depth']['per_position_proj'] must be a bool")
    resolved["depth"] = {key: depth[key] for key in DEPTH_KEYS}


def resolve_lm_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the full LM config: ``config`` over :data:`DEFAULT_CONFIG`, validated.

    Under ``pattern: "depth"`` a missing ``depth`` object (or key of it) is filled from
    :data:`~speechinfer_training.lm_depth.DEFAULT_DEPTH`. Raises ``ValueError`` on unknown keys, a
    foreign ``model_type`` or invalid values.
    """
    resolved = resolve_config(config, DEFAULT_CONFIG)
    for key in _POSITIVE_INT_KEYS:
        require_positive_int(resolved, key)
    _check_sizes(resolved, "")
    for key in ("rope_theta", "norm_eps"):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"config[{key!r}] must be a positive number, got {value!r}")
        resolved[key] = float(value)
    if not isinstance(resolved["tie_embeddings"], bool):
        raise ValueError("config['tie_embeddings'] must be a bool")
    pattern = resolved["pattern"]
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    streams = resolved["streams"]
    if not isinstance(streams, list) or not streams:
        raise ValueError("streams must be a non-empty list")
    for k, stream in enumerate(streams):
        if isinstance(stream, dict):  # text_offset may be left out: 0
            streams[k] = stream = {**stream, "text_offset": stream.get("text_offset", 0)}
        _check_stream(k, stream, pattern)
    if pattern == "coarse_first" and len(streams) < 2:
        raise ValueError("pattern 'coarse_first' needs at least 2 streams")
    end = resolved["end_stream"]
    if isinstance(end, bool) or not isinstance(end, int) or not 0 <= end < len(streams):
        raise ValueError(f"end_stream must be a stream index in [0, {len(streams)}), got {end!r}")
    if pattern == "coarse_first" and end != 0:
        raise ValueError("pattern 'coarse_first' ends on the AR stream: end_stream must be 0")
    _resolve_depth(resolved)
    return resolved


@register_model(MODEL_TYPE)
class SpeechLM(nn.Module):
    """Decoder-only LM over a grid of K token streams (``docs/lm.md``).

    Built as ``SpeechLM(config)`` where ``config`` holds any subset of :data:`DEFAULT_CONFIG`;
    ``SpeechLM({})`` is the small default model.
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config: dict[str, Any] = resolve_lm_config(config)
        cfg = self.config
        d, pattern = cfg["d_model"], cfg["pattern"]
        main_streams = cfg["streams"][:1] if pattern == "coarse_first" else cfg["streams"]
        self.embeddings = nn.ModuleList(nn.Embedding(s["vocab_size"], d) for s in main_streams)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layers"]))
        self.norm = RMSNorm(d, cfg["norm_eps"])
        self.heads = (
            None
            if cfg["tie_embeddings"] or pattern == "depth"
            else nn.ModuleList(nn.Linear(d, s["vocab_size"], bias=False) for s in main_streams)
        )
        self.depth = DepthTransformer(cfg) if pattern == "depth" else None
        self.nar = NarModel(cfg) if pattern == "coarse_first" else None
        cos, sin = rope_tables(d // cfg["n_heads"], cfg["max_context"], cfg["rope_theta"])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1.0)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Build an untrained LM from ``config`` (see :data:`DEFAULT_CONFIG`)."""
        return cls(config)

    @property
    def num_streams(self) -> int:
        """K, the number of streams."""
        return len(self.config["streams"])

    @property
    def vocab_sizes(self) -> list[int]:
        """Vocabulary size of every stream."""
        return [s["vocab_size"] for s in self.config["streams"]]

    @property
    def special_ids(self) -> list[int]:
        """The special token (``bos_id``) of every stream."""
        return [s["bos_id"] for s in self.config["streams"]]

    @property
    def num_step_rows(self) -> int:
        """Rows of the main transformer's step grid: 1 under ``"coarse_first"``, else K."""
        return 1 if self.config["pattern"] == "coarse_first" else self.num_streams

    @property
    def pattern_kind(self) -> PatternKind:
        """The layout kind of the main transformer's steps.

        ``"coarse_first"`` lays out stream 0 alone with ``Parallel``; ``"depth"`` uses the delays
        (all zero = the parallel layout).
        """
        pattern = self.config["pattern"]
        if pattern in ("parallel", "coarse_first"):
            return Parallel()
        if pattern == "flatten":
            return flatten(self.num_streams)
        return Delay(tuple(s["delay"] for s in self.config["streams"]))

    def layout(self, num_frames: int) -> Layout:
        """Return the main transformer's layout for ``num_frames`` frames."""
        return Layout(self.pattern_kind, self.num_step_rows, num_frames)

    def check_context(self, positions: int) -> None:
        """Raise ``ValueError`` if one sequence would feed more than ``max_context`` positions."""
        if positions > self.config["max_context"]:
            raise ValueError(
                f"{positions} positions exceed max_context {self.config['max_context']}"
            )

    def _check_tokens(self, tokens: Tensor, what: str, rows: int | None = None) -> None:
        vocab = self.vocab_sizes
        check_token_ids(tokens, vocab if rows is None else vocab[:rows], what)

    def main_hidden(self, steps: Tensor) -> Tensor:
        """Hidden states ``[B, S, d]`` (after ``norm``) of the main transformer over ``steps``."""
        self._check_tokens(steps, "steps", self.num_step_rows)
        s = steps.shape[-1]
        self.check_context(s)
        x = sum_embeddings(self.embeddings, steps.unbind(1))
        x = run_blocks(self.layers, x, self.rope_cos[:s], self.rope_sin[:s])
        return self.norm(x)

    def forward(self, steps: Tensor) -> list[Tensor]:
        """Teacher-forced logits of a step grid (``-1`` = no input); logits at s predict s + 1.

        ``"parallel"``/``"delay"``/``"flatten"``: ``steps`` ``[B, K, S]`` → K tensors
        ``[B, S, V_k]``. ``"depth"``: ``[B, K, S]`` (``S >= 2``) → K tensors ``[B, S - 1, V_k]``
        from the depth transformer, teacher-forced with the tokens of step ``s + 1``.
        ``"coarse_first"``: the AR's ``[B, 1, S]`` → one tensor ``[B, S, V_0]`` (in a list).
        """
        if self.depth is not None:
            self._check_tokens(steps, "steps")
            if steps.shape[-1] < 2:
                raise ValueError("pattern 'depth' needs at least 2 steps")
            return self.depth(self.main_hidden(steps[..., :-1]), steps[..., 1:])
        h = self.main_hidden(steps)
        if self.heads is None:
            return [h @ emb.weight.T for emb in self.embeddings]
        return [head(h) for head in self.heads]

    def nar_logits(self, grid: Tensor, stage: int, prompt_frames: int) -> Tensor:
        """``"coarse_first"`` NAR logits ``[B, T, V_j]`` of stage ``j = stage`` for ``grid``.

        ``grid`` ``[B, K, T]``; its first ``prompt_frames`` (``P``, ``1 <= P <= T``) frames are
        the acoustic prompt whose streams ``>= j`` are read too.
        """
        if self.nar is None:
            raise ValueError("nar_logits needs pattern 'coarse_first'")
        self._check_tokens(grid, "grid")
        t_n = grid.shape[-1]
        if isinstance(stage, bool) or not isinstance(stage, int):
            raise ValueError(f"stage must be an int, got {stage!r}")
        if not 1 <= stage < self.num_streams:
            raise ValueError(f"stage must be in [1, {self.num_streams}), got {stage}")
        if isinstance(prompt_frames, bool) or not isinstance(prompt_frames, int):
            raise ValueError(f"prompt_frames must be an int, got {prompt_frames!r}")
        if not 1 <= prompt_frames <= t_n:
            raise ValueError(f"prompt_frames must be in [1, {t_n}], got {prompt_frames}")
        self.check_context(t_n)
        return self.nar(grid.long(), stage, prompt_frames, self.rope_cos, self.rope_sin)

    def token_log_probs(self, grid: Tensor) -> Tensor:
        """Per-token log-probabilities ``[B, K, T]`` (float32, differentiable) of a frame grid.

        Entry ``[b, k, t]`` is the log-probability the model gives ``grid[b, k, t]``, as in
        ``score`` (which sums them in float64); frame 0, ``-1`` targets and, under
        ``"coarse_first"``, everything are 0 (that pattern's stages are scored by ``score``).
        """
        self._check_tokens(grid, "grid")
        grid = grid.long()
        out = torch.zeros(grid.shape, dtype=torch.float32, device=grid.device)
        if self.nar is not None:
            return out
        layout = self.layout(grid.shape[-1])
        steps = layout.apply(grid, self.special_ids)
        self.check_context(layout.num_steps - 1)
        logits = self.forward(steps if self.depth is not None else steps[..., :-1])
        for k, stream_logits in enumerate(logits):
            prev = layout.first_step[k, 1:].to(grid.device) - 1
            targets = grid[:, k, 1:]
            log_probs = stream_logits[:, prev].log_softmax(-1)
            picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
            out[:, k, 1:] = picked.masked_fill(targets == NO_INPUT, 0.0)
        return out

    @torch.no_grad()
    def score(self, grid: Tensor) -> Tensor:
        """Return the summed log-prob (float64 ``[B]``) of every token after frame 0 of ``grid``.

        ``grid`` is a ``[B, K, T]`` frame grid; frame 0 is the condition and is not scored, nor
        is any ``-1`` target. ``"coarse_first"``: AR log-probs of stream 0 plus, for each stage
        ``j``, the NAR log-probs of stream ``j`` with ``P = 1``.
        """
        self._check_tokens(grid, "grid")
        grid = grid.long()
        rows = self.num_step_rows
        layout = self.layout(grid.shape[-1])
        steps = layout.apply(grid[:, :rows], self.special_ids[:rows])
        self.check_context(layout.num_steps - 1)
        logits = self.forward(steps if self.depth is not None else steps[..., :-1])
        total = torch.zeros(grid.shape[0], dtype=torch.float64, device=grid.device)
        for k, stream_logits in enumerate(logits):
            prev = layout.first_step[k, 1:].to(grid.device) - 1
            total += _sum_log_probs(stream_logits[:, prev], grid[:, k, 1:])
        for j in range(1, self.num_streams if self.nar is not None else 1):
            nar = self.nar_logits(grid, j, 1)
            total += _sum_log_probs(nar[:, 1:], grid[:, j, 1:])
        return total

    @torch.no_grad()
    def generate_greedy(
        self, prompt: Tensor | Sequence[Tensor], max_frames: int, stop_on_eos: bool = True
    ) -> Tensor | list[Tensor]:
        """Continue ``prompt`` ``[B, K, T]`` by ``max_frames`` greedy frames → ``[B, K, T + N]``.

        Prompt frames are forced wherever the pattern places them (``-1`` stays "no input");
        special positions hold the bos id; every other position takes the argmax (first index on
        ties) of the previous step's logits. With ``stop_on_eos``, the ``end_stream``'s
        ``eos_id`` at frame ``t_e`` ends the sequence: the other streams' frame ``t_e`` holds
        their eos id (else pad id, else is generated) and every later frame the stream's pad id
        (else eos id, else bos id). A list of ``[K, T_b]`` prompts gives a list of
        ``[K, T_b + N]`` grids, each generated alone.
        """
        if isinstance(prompt, Sequence):
            out = [self.generate_greedy(p[None], max_frames, stop_on_eos)[0] for p in prompt]
            return out  # type: ignore[return-value]
        self._check_tokens(prompt, "prompt")
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0:
            raise ValueError(f"max_frames must be a non-negative int, got {max_frames!r}")
        if self.nar is not None:
            return generate_coarse_first(self, prompt, max_frames, stop_on_eos)
        return generate_stepwise(self, prompt, max_frames, stop_on_eos)

    def export_state_dict(self) -> dict[str, Tensor]:
        """Return exactly the contract tensors of ``docs/lm.md``."""
        return dict(self.named_parameters())

    def load_export_state_dict(self, tensors: Mapping[str, Tensor]) -> None:
        """Load contract tensors (names and shapes must match exactly)."""
        copy_exported_tensors(self, tensors, set(self.export_state_dict()))


def _sum_log_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """``Σ_t log_softmax(logits[:, t])[targets[:, t]]`` in float64, skipping ``-1`` targets.

    ``logits`` ``[B, L, V]`` (float32), ``targets`` ``[B, L]`` → ``[B]``.
    """
    log_probs = logits.double().log_softmax(-1)
    keep = targets != NO_INPUT
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return picked.masked_fill(~keep, 0.0).sum(-1)


def small_config(**overrides: Any) -> dict[str, Any]:
    """Return a tiny config for tests and examples (two audio streams, delay pattern)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config.update(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=64,
        max_context=256,
        streams=[
            {**audio_stream(0), "vocab_size": 40, "pad_id": 37, "bos_id": 39, "eos_id": 38},
            {**audio_stream(1), "vocab_size": 24, "pad_id": 21, "bos_id": 23, "eos_id": 22},
        ],
    )
    config.update(overrides)
    return config
