"""Train the TTS LM twin on token shards and export a pipeline directory (``docs/tts.md``).

``python -m speechinfer_training.train_tts --shards SHARDS --out OUT --steps N
[--pattern delay|parallel|flatten|depth] [--layout prefix|aligned [--lead 12]
[--units characters|phones --lexicon LEXICON.txt.gz] [--text-dropout P]] [--resume]
[--init-from TEXT_LM_DIR | --finetune-from RUN] [--batch-size 8] [--lr 1e-3]
[--d-model 256 --n-layers 4 ...] [--threads N]``

``SHARDS`` comes from ``python -m speechinfer_training.tts_data`` (``tokenize_corpus``). Every
utterance is the frame grid of :func:`~speechinfer_training.tts_data.utterance_grid` (layout
``prefix``) or :func:`~speechinfer_training.tts_data.aligned_grid` (layout ``aligned``: word
start times from ``--alignments``, default ``alignments.jsonl`` beside the corpus manifest,
written by ``python -m speechinfer_training.alignment``; utterances without one are skipped).
With ``--units phones`` the aligned text stream holds the phones the synthesizer spoke, each at
the frame where it starts (``tts_data.place_phones``), and the exported pipeline carries
``--lexicon`` (``python -m speechinfer_training.lexicon``) to turn text into phones at synthesis.
Training is teacher-forced cross-entropy on every scored token (frames ``>= 1``, not ``-1``), the
text stream's tokens weighted by ``--text-loss-weight``. ``--text-dropout P`` (``aligned``
only) feeds a fraction P of the training grids text-less (``tts_data.TextDropout``): the LM also
learns speech alone, what classifier-free guidance (``cfg_scale`` in the pipeline's sampling)
and text-less scoring need. Writes ``OUT/log.jsonl`` (per step:
``loss``, ``audio_loss``, ``text_loss``; ``heldout_audio_loss`` / ``heldout_text_loss`` — mean nats
per token — every ``--eval-every`` steps and at the end), ``OUT/checkpoint.pt`` (``--resume``
continues from it, bit-identically) and, at the end, the pipeline directory ``OUT/pipeline``
(float16 by default). ``--init-from`` starts from a text LM of ``train_text_lm`` (TWIST);
``--finetune-from RUN`` from the weights of another run (fresh optimizer and schedule).

Also runs data-parallel on CPU: ``torchrun --nproc_per_node=2 -m speechinfer_training.train_tts
...`` (gloo; ``--batch-size`` is the global batch; rank 0 writes).
"""

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from speechinfer.phonemes import PHONES

from .alignment import ALIGNMENTS_FILE, read_alignments
from .checkpoint import read_checkpoint
from .export import STORAGE_DTYPES
from .lm import SpeechLM
from .lm_training import (
    CHECKPOINT_FILE,
    LoopOptions,
    add_option_flags,
    init_distributed,
    loop_options,
    read_resume_state,
    train_grids,
)
from .tts_data import (
    CHARACTERS,
    DEFAULT_LEAD,
    MAX_FRAMES,
    MAX_TEXT_TOKENS,
    NUM_TEXT_SPECIALS,
    TEXT_LAYOUTS,
    TEXT_UNITS,
    TOKENIZER_FILE,
    TTS_PATTERNS,
    TextDropout,
    aligned_grid,
    grid_steps,
    load_split,
    make_phone_tokenizer,
    place_characters,
    place_phones,
    read_meta,
    tts_lm_config,
    utterance_grid,
)
from .tts_export import DEFAULT_SAMPLING, save_pipeline

PIPELINE_DIR = "pipeline"
SIZE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "tie_embeddings")


@dataclasses.dataclass(frozen=True)
class TtsOptions:
    """What ``train_tts`` trains on and exports; the optimisation is in :class:`LoopOptions`."""

    shards: Path
    out: Path
    pattern: str = "delay"
    layout: str = "prefix"
    units: str = "characters"
    lead: int = DEFAULT_LEAD
    alignments: Path | None = None
    lexicon: Path | None = None
    resume: bool = False
    init_from: Path | None = None
    finetune_from: Path | None = None
    num_codebooks: int = 0
    text_loss_weight: float = 0.1
    text_dropout: float = 0.0
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    ffn_dim: int = 704
    tie_embeddings: bool = False
    max_text_tokens: int = MAX_TEXT_TOKENS
    max_frames: int = MAX_FRAMES
    max_tail_frames: int = 0
    sampling: str = json.dumps(DEFAULT_SAMPLING)
    export_dtype: str = "float16"
    codec: Path | None = None
    no_export: bool = False

    def __post_init__(self) -> None:
        if self.pattern not in TTS_PATTERNS:
            raise ValueError(f"pattern must be one of {TTS_PATTERNS}")
        if self.layout not in TEXT_LAYOUTS:
            raise ValueError(f"layout must be one of {TEXT_LAYOUTS}")
        if self.layout == "aligned" and (self.pattern != "delay" or self.lead < 1):
            raise ValueError("--layout aligned needs --pattern delay and --lead >= 1")
        if self.units not in TEXT_UNITS:
            raise ValueError(f"units must be one of {TEXT_UNITS}")
        if self.units == "phones" and (self.layout != "aligned" or self.lexicon is None):
            raise ValueError("--units phones needs --layout aligned and --lexicon")
        if self.export_dtype not in STORAGE_DTYPES:
            raise ValueError(f"export_dtype must be one of {sorted(STORAGE_DTYPES)}")
        if self.text_dropout and self.layout != "aligned":
            raise ValueError("--text-dropout needs --layout aligned")
        TextDropout(self.text_dropout)  # checks the rate
        if self.text_loss_weight < 0 or self.num_codebooks < 0:
            raise ValueError("text_loss_weight and num_codebooks must be >= 0")
        json.loads(self.sampling)

    @property
    def sizes(self) -> dict[str, Any]:
        """The transformer sizes."""
        return {key: getattr(self, key) for key in SIZE_KEYS}


def parse_args(argv: Sequence[str] | None = None) -> tuple[TtsOptions, LoopOptions]:
    """Parse command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.train_tts",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--shards", type=Path, required=True, help="tokenize_corpus output")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--pattern", choices=TTS_PATTERNS, default="delay")
    parser.add_argument("--layout", choices=TEXT_LAYOUTS, default="prefix")
    parser.add_argument("--units", choices=TEXT_UNITS, default="characters")
    parser.add_argument("--alignments", type=Path, help="alignments.jsonl (layout aligned)")
    parser.add_argument("--lexicon", type=Path, help="lexicon.txt.gz to export (units phones)")
    parser.add_argument("--init-from", type=Path, help="text LM directory (train_text_lm)")
    parser.add_argument(
        "--finetune-from", type=Path, help="a train_tts OUT directory: start from its weights"
    )
    parser.add_argument("--codec", type=Path, help="codec to export (default: the shards')")
    parser.add_argument("--export-dtype", choices=sorted(STORAGE_DTYPES), default="float16")
    skip = (
        "shards",
        "out",
        "pattern",
        "layout",
        "units",
        "alignments",
        "lexicon",
        "init_from",
        "finetune_from",
        "codec",
        "export_dtype",
    )
    add_option_flags(parser, TtsOptions, skip)
    add_option_flags(parser, LoopOptions)
    namespace = parser.parse_args(argv)
    names = {f.name for f in dataclasses.fields(TtsOptions)}
    try:
        options = TtsOptions(**{k: v for k, v in vars(namespace).items() if k in names})
        return options, loop_options(namespace)
    except ValueError as error:
        parser.error(str(error))


def tts_grids(
    meta: dict[str, Any], split_items: Sequence[Any], num_codebooks: int
) -> list[torch.Tensor]:
    """Return the frame grids of ``tts_data.Utterance`` items with ``num_codebooks``."""
    offset = NUM_TEXT_SPECIALS + len(meta["voices"])
    size = meta["codebook_size"]
    return [
        utterance_grid(u.voice, u.text + offset, u.codes[:num_codebooks], size) for u in split_items
    ]


def aligned_grids(
    meta: dict[str, Any],
    split_items: Sequence[Any],
    num_codebooks: int,
    alignments: dict[str, dict[str, Any]],
    units: str = "characters",
) -> list[torch.Tensor]:
    """Return the ``aligned``-layout grids of the items that have a fitting alignment.

    The text stream holds the characters (from the words' start times) or the phones spoken.
    """
    offset = NUM_TEXT_SPECIALS + len(meta["voices"])
    size, rate = meta["codebook_size"], meta["frame_rate"]
    grids = []
    for u in split_items:
        row = alignments.get(u.id)
        if row is None or "".join(CHARACTERS[i] for i in u.text) != " ".join(row["words"]):
            continue
        try:
            if units == "phones":
                ids, frames = place_phones(row.get("phones") or [], rate)
                text = np.asarray(ids, dtype=np.int64)
            else:
                frames = place_characters(row["words"], [int(s * rate) for s in row["starts"]])
                text = u.text
            grids.append(
                aligned_grid(u.voice, text + offset, frames, u.codes[:num_codebooks], size)
            )
        except ValueError:
            continue  # the text runs past the audio: not a usable alignment
    return grids


def load_grids(
    options: "TtsOptions", meta: dict[str, Any], q_n: int, split: str
) -> list[torch.Tensor]:
    """Return the training grids of one split in the options' layout."""
    items = load_split(options.shards, split)
    if options.layout == "prefix":
        return tts_grids(meta, items, q_n)
    path = options.alignments or Path(meta["manifest"]).parent / ALIGNMENTS_FILE
    grids = aligned_grids(meta, items, q_n, read_alignments(path), options.units)
    if len(grids) < len(items):
        print(
            f"{split}: {len(items) - len(grids)} of {len(items)} utterances have no usable "
            f"alignment in {path}",
            flush=True,
        )
    return grids


def tokenizer_size(options: TtsOptions, meta: dict[str, Any]) -> int:
    """Ids of the text stream's tokenizer: the shards' characters, or the phones."""
    return len(PHONES) if options.units == "phones" else int(meta["tokenizer_size"])


def build_config(
    options: TtsOptions, meta: dict[str, Any], num_codebooks: int, longest: int
) -> dict[str, Any]:
    """Return the LM config; ``max_context`` covers the longest grid and the pipeline's limits."""
    base = tts_lm_config(
        meta["voices"],
        meta["codebook_size"],
        num_codebooks,
        options.pattern,
        tokenizer_size=tokenizer_size(options, meta),
        max_text_tokens=options.max_text_tokens,
        max_frames=options.max_frames,
        layout=options.layout,
        lead=options.lead,
        **options.sizes,
    )
    delays = [s["delay"] for s in base["streams"]]
    needed = grid_steps(options.pattern, delays, longest) - 1
    if needed <= base["max_context"]:
        return base
    return tts_lm_config(
        meta["voices"],
        meta["codebook_size"],
        num_codebooks,
        options.pattern,
        tokenizer_size=tokenizer_size(options, meta),
        max_context=needed,
        layout=options.layout,
        lead=options.lead,
        **options.sizes,
    )


def train(options: TtsOptions, loop: LoopOptions) -> Path:
    """Run (or resume) training; return the pipeline directory (or ``OUT`` with ``no_export``)."""
    from .train_text_lm import init_from_text_lm

    dist = init_distributed()
    if loop.threads > 0:
        torch.set_num_threads(loop.threads)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    meta = read_meta(options.shards)
    q_n = options.num_codebooks or meta["num_codebooks"]
    if q_n > meta["num_codebooks"]:
        raise ValueError(f"the shards hold {meta['num_codebooks']} codebooks, not {q_n}")
    train_set = load_grids(options, meta, q_n, "train")
    heldout = load_grids(options, meta, q_n, "heldout")
    longest = max(g.shape[-1] for g in [*train_set, *heldout])
    config = build_config(options, meta, q_n, longest)
    checkpoint = read_resume_state(out, options.resume)
    if checkpoint is not None and checkpoint["lm_config"] != config:
        raise ValueError("the LM config differs from that of the checkpoint being resumed")
    torch.manual_seed(loop.seed)
    model = SpeechLM(config)
    if options.finetune_from is not None and checkpoint is None:
        finetune_start(model, options.finetune_from)
        if dist.main:
            print(f"starting from the weights of {options.finetune_from}", flush=True)
    elif options.init_from is not None and checkpoint is None:
        copied = init_from_text_lm(model, options.init_from)
        if dist.main:
            print(f"initialised {copied} tensors from {options.init_from}", flush=True)
    weights = [options.text_loss_weight] + [1.0] * q_n
    roles = [s["role"] for s in config["streams"]]
    extra = {
        "lm_config": config,
        "options": {k: str(v) for k, v in dataclasses.asdict(options).items()},
    }
    augment = TextDropout(options.text_dropout, loop.seed) if options.text_dropout else None
    model = train_grids(
        model,
        train_set,
        heldout,
        weights,
        roles,
        loop,
        out,
        dist,
        checkpoint,
        extra,
        augment=augment,
    )
    result = out
    if not options.no_export:
        result = out / PIPELINE_DIR
        tokenizer = Path(options.shards) / meta["tokenizer"]
        if options.units == "phones":
            tokenizer = out / TOKENIZER_FILE
            make_phone_tokenizer(tokenizer)
        if dist.main:
            save_pipeline(
                result,
                model,
                options.codec or meta["codec_dir"],
                meta["voices"],
                tokenizer,
                sampling=json.loads(options.sampling),
                dtype=options.export_dtype,  # type: ignore[arg-type]
                max_text_tokens=options.max_text_tokens,
                max_frames=options.max_frames,
                seed=loop.seed,
                layout=options.layout,
                lexicon=options.lexicon,
                max_tail_frames=options.max_tail_frames or None,
            )
    dist.barrier()
    return result


def finetune_start(model: SpeechLM, run_dir: Path) -> None:
    """Load the weights of another ``train_tts`` run (``RUN/checkpoint.pt``).

    The LM configs must agree but for ``max_context`` (positions are rotary: no weights).
    """
    state = read_checkpoint(Path(run_dir) / CHECKPOINT_FILE)
    theirs = dict(state.get("lm_config") or model.config)
    theirs["max_context"] = model.config["max_context"]
    if theirs != model.config:
        raise ValueError(f"{run_dir}: its LM config differs from this run's")
    model.load_state_dict(state["model"])


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    options, loop = parse_args(argv)
    try:
        result = train(options, loop)
        if not torch_dist.is_initialized() or torch_dist.get_rank() == 0:
            print(f"exported {result}" if not options.no_export else f"trained {result}")
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


if __name__ == "__main__":
    main()
