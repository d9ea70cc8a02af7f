"""PyTorch twin of the speechinfer token LM: a Llama-shaped transformer over a token grid.

The architecture, config keys, tensor names and the meaning of ``score`` / ``generate_greedy``
follow ``docs/lm.md`` exactly, so a model exported with
:func:`speechinfer_training.export.save_pretrained` is served by the engine with the same logits
(up to float rounding) and the same greedy tokens.
"""

import copy
from collections.abc import Mapping
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import require_positive_int, resolve_config
from .patterns import Delay, Layout, Parallel, PatternKind
from .registry import copy_exported_tensors, register_model

MODEL_TYPE = "speechinfer-lm"

PATTERNS = ("parallel", "delay")
ROLES = ("text", "audio", "speaker")
STREAM_KEYS = ("name", "role", "vocab_size", "pad_id", "bos_id", "eos_id", "delay")


def _audio_stream(q: int) -> dict[str, Any]:
    return {
        "name": f"audio{q}",
        "role": "audio",
        "vocab_size": 1027,
        "pad_id": 1025,
        "bos_id": 1026,
        "eos_id": 1024,
        "delay": q,
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
    # Output head of stream k = its input embedding (no heads.* tensors).
    "tie_embeddings": False,
    # The grid's rows: {name, role, vocab_size, pad_id, bos_id, eos_id, delay}; bos_id is the
    # stream's special token (step 0 and positions without a frame).
    "streams": [_audio_stream(q) for q in range(4)],
    # How the grid becomes LM steps: "parallel" or "delay".
    "pattern": "delay",
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
    if stream["bos_id"] is None:
        raise ValueError(f"streams[{k}]: bos_id must be set (it is the stream's special token)")
    delay = stream["delay"]
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"streams[{k}]: delay must be a non-negative int, got {delay!r}")
    if pattern == "parallel" and delay != 0:
        raise ValueError(f"streams[{k}]: delay {delay} needs pattern 'delay'")


def resolve_lm_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the full LM config: ``config`` over :data:`DEFAULT_CONFIG`, validated.

    Raises ``ValueError`` on unknown keys, a foreign ``model_type`` or invalid values.
    """
    resolved = resolve_config(config, DEFAULT_CONFIG)
    for key in _POSITIVE_INT_KEYS:
        require_positive_int(resolved, key)
    d, h, hkv = resolved["d_model"], resolved["n_heads"], resolved["n_kv_heads"]
    if d % h or (d // h) % 2:
        raise ValueError(f"d_model {d} must be n_heads {h} times an even head_dim")
    if h % hkv:
        raise ValueError(f"n_kv_heads {hkv} must divide n_heads {h}")
    for key in ("rope_theta", "norm_eps"):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"config[{key!r}] must be a positive number, got {value!r}")
        resolved[key] = float(value)
    if not isinstance(resolved["tie_embeddings"], bool):
        raise ValueError("config['tie_embeddings'] must be a bool")
    if resolved["pattern"] not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {resolved['pattern']!r}")
    streams = resolved["streams"]
    if not isinstance(streams, list) or not streams:
        raise ValueError("streams must be a non-empty list")
    for k, stream in enumerate(streams):
        _check_stream(k, stream, resolved["pattern"])
    return resolved


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` over its last axis."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, positions: int, theta: float) -> tuple[Tensor, Tensor]:
    """``cos``, ``sin`` ``[positions, head_dim]`` (angles in float64, rounded once to float32)."""
    half = head_dim // 2
    inv_freq = torch.tensor([theta ** (-(2.0 * j) / head_dim) for j in range(half)])
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().float(), angles.sin().float()
    return torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE of ``x`` ``[B, heads, S, hd]`` with tables ``[S, hd]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE, no biases."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        d = config["d_model"]
        self.n_heads, self.n_kv_heads = config["n_heads"], config["n_kv_heads"]
        self.head_dim = d // self.n_heads
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Attend over ``x`` ``[B, S, d]`` (positions ``0..S``) with RoPE tables ``[S, hd]``."""
        b, s, _ = x.shape
        hd = self.head_dim

        def heads(proj: nn.Linear, n: int) -> Tensor:
            return proj(x).view(b, s, n, hd).transpose(1, 2)

        q = apply_rope(heads(self.q_proj, self.n_heads), cos, sin)
        k = apply_rope(heads(self.k_proj, self.n_kv_heads), cos, sin)
        v = heads(self.v_proj, self.n_kv_heads)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = q @ k.transpose(-1, -2) / hd**0.5
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.n_heads * hd))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the gated feed-forward."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config["d_model"], config["norm_eps"])
        self.attn = Attention(config)
        self.ffn_norm = RMSNorm(config["d_model"], config["norm_eps"])
        self.ffn = SwiGLU(config["d_model"], config["ffn_dim"])

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Apply attention and feed-forward, each around a residual."""
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


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
        d = cfg["d_model"]
        self.embeddings = nn.ModuleList(nn.Embedding(s["vocab_size"], d) for s in cfg["streams"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layers"]))
        self.norm = RMSNorm(d, cfg["norm_eps"])
        self.heads = (
            None
            if cfg["tie_embeddings"]
            else nn.ModuleList(nn.Linear(d, s["vocab_size"], bias=False) for s in cfg["streams"])
        )
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
    def pattern_kind(self) -> PatternKind:
        """The configured pattern as a layout kind."""
        if self.config["pattern"] == "parallel":
            return Parallel()
        return Delay(tuple(s["delay"] for s in self.config["streams"]))

    def layout(self, num_frames: int) -> Layout:
        """Return the pattern's layout for ``num_frames`` frames."""
        return Layout(self.pattern_kind, self.num_streams, num_frames)

    def _check_tokens(self, tokens: Tensor, what: str) -> None:
        if tokens.dim() != 3 or tokens.shape[1] != self.num_streams:
            shape = tuple(tokens.shape)
            raise ValueError(f"{what} must be [B, {self.num_streams}, L], got {shape}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"{what} must hold integer ids, got {tokens.dtype}")
        if 0 in tokens.shape:
            raise ValueError(f"{what} is empty: {tuple(tokens.shape)}")
        for k, vocab in enumerate(self.vocab_sizes):
            row = tokens[:, k]
            if row.min() < 0 or row.max() >= vocab:
                raise ValueError(f"{what}: stream {k} holds ids outside [0, {vocab})")

    def forward(self, steps: Tensor) -> list[Tensor]:
        """Teacher-forced logits: ``steps`` ``[B, K, S]`` → K tensors ``[B, S, V_k]``."""
        self._check_tokens(steps, "steps")
        s = steps.shape[-1]
        if s > self.config["max_context"]:
            raise ValueError(f"{s} steps exceed max_context {self.config['max_context']}")
        x = sum(emb(steps[:, k]) for k, emb in enumerate(self.embeddings))
        assert isinstance(x, Tensor)
        cos, sin = self.rope_cos[:s], self.rope_sin[:s]
        for layer in self.layers:
            x = layer(x, cos, sin)
        h = self.norm(x)
        if self.heads is None:
            return [h @ emb.weight.T for emb in self.embeddings]
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def score(self, grid: Tensor) -> Tensor:
        """Return the summed log-prob (float64 ``[B]``) of every token after frame 0 of ``grid``.

        ``grid`` is a ``[B, K, T]`` frame grid; frame 0 is the condition and is not scored.
        """
        self._check_tokens(grid, "grid")
        layout = self.layout(grid.shape[-1])
        steps = layout.apply(grid.long(), self.special_ids)[..., :-1]
        logits = self.forward(steps)
        total = torch.zeros(grid.shape[0], dtype=torch.float64, device=grid.device)
        for k, stream_logits in enumerate(logits):
            log_probs = stream_logits.double().log_softmax(-1)
            prev = layout.first_step[k, 1:].to(grid.device) - 1
            targets = grid[:, k, 1:].long()
            picked = log_probs[:, prev].gather(-1, targets[..., None])[..., 0]
            total += picked.sum(-1)
        return total

    @torch.no_grad()
    def generate_greedy(self, prompt: Tensor, max_frames: int) -> Tensor:
        """Continue ``prompt`` ``[B, K, T]`` by ``max_frames`` greedy frames → ``[B, K, T + N]``.

        Prompt frames are forced wherever the pattern places them; special positions hold the
        bos id; every other position takes the argmax of the previous step's logits.
        """
        self._check_tokens(prompt, "prompt")
        b, k_n, t_n = prompt.shape
        total = t_n + max_frames
        layout = self.layout(total)
        s_n = layout.num_steps
        if s_n - 1 > self.config["max_context"]:
            raise ValueError(f"{s_n - 1} positions exceed max_context {self.config['max_context']}")
        padded = torch.cat([prompt.long(), prompt.new_zeros(b, k_n, max_frames).long()], -1)
        steps = layout.apply(padded, self.special_ids)
        generate = (layout.indices >= t_n).to(prompt.device)  # [K, S]
        columns = generate.any(0).nonzero()[:, 0].tolist()
        for s in columns:
            logits = self.forward(steps[..., :s])
            for k in range(k_n):
                if generate[k, s]:
                    steps[:, k, s] = logits[k][:, -1].argmax(-1)
        return layout.revert(steps)

    def export_state_dict(self) -> dict[str, Tensor]:
        """Return exactly the contract tensors of ``docs/lm.md``."""
        return dict(self.named_parameters())

    def load_export_state_dict(self, tensors: Mapping[str, Tensor]) -> None:
        """Load contract tensors (names and shapes must match exactly)."""
        copy_exported_tensors(self, tensors, set(self.export_state_dict()))


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
            {**_audio_stream(0), "vocab_size": 40, "pad_id": 37, "bos_id": 39, "eos_id": 38},
            {**_audio_stream(1), "vocab_size": 24, "pad_id": 21, "bos_id": 23, "eos_id": 22},
        ],
    )
    config.update(overrides)
    return config
