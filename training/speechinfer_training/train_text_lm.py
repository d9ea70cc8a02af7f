"""Train a character-level text LM (the twin with one text stream) for TWIST-style warm starts.

``python -m speechinfer_training.train_text_lm --out OUT --steps N
[--manifest CORPUS/manifest.jsonl] [--text FILE ...] [--fortunes N] [--lexicon LEXICON.txt.gz]
[--d-model 256 ...]``

With ``--lexicon`` (``speechinfer_training.lexicon``) the LM reads phones instead of characters:
each sentence is what ``speechinfer.phonemes.Phonemizer`` makes of it, for a TTS LM trained with
``--units phones``.

Hassid et al. 2023 (TWIST) initialise a speech LM from a text LM. Here the text LM has the TTS
LM's transformer sizes and its character tokenizer, so
``train_tts --init-from OUT/model`` copies the transformer layers, the final norm and the text
stream's rows (pad, bos, eos and every character) of the embedding and head into the TTS LM.

Text: the manifest's sentences (its ``train`` split; the ``heldout`` split is the heldout set),
``--text`` files (one sentence per line) and ``--fortunes N`` sentences of the Debian fortunes
(sentences of the manifest's heldout split excluded), normalised with
:func:`~speechinfer_training.tts_data.normalize_text` (sentences it rejects are skipped). A
sentence is the one-stream grid ``[bos, c_1 .. c_L, eos]`` (stream ids: pad 0, bos 1, eos 2,
characters from 3). Writes ``OUT/log.jsonl`` (``text_loss``, ``heldout_text_loss``),
``OUT/checkpoint.pt`` and ``OUT/model`` (with ``tokenizer.json``).
"""

import argparse
import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from speechinfer.phonemes import PHONE_IDS, PHONES, Phonemizer

from .corpus import collect_sentences, read_manifest, sentences_from_text_file
from .export import load_pretrained, save_pretrained
from .lm import SpeechLM, resolve_lm_config
from .lm_training import (
    LoopOptions,
    add_option_flags,
    init_distributed,
    loop_options,
    read_resume_state,
    train_grids,
)
from .tts_data import (
    CHARACTERS,
    TEXT_BOS,
    TEXT_EOS,
    TEXT_PAD,
    char_ids,
    make_char_tokenizer,
    make_phone_tokenizer,
    normalize_text,
)

MODEL_DIR = "model"
TEXT_OFFSET = 3
SHARED_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "rope_theta", "norm_eps")


def text_lm_config(units: int = len(CHARACTERS), **sizes: Any) -> dict[str, Any]:
    """Return the one-stream text LM config (``parallel``; ``units`` ids at ``text_offset`` 3).

    ``units`` is the tokenizer's size: the characters by default.
    """
    stream = {
        "name": "text",
        "role": "text",
        "vocab_size": TEXT_OFFSET + units,
        "pad_id": TEXT_PAD,
        "bos_id": TEXT_BOS,
        "eos_id": TEXT_EOS,
        "delay": 0,
        "text_offset": TEXT_OFFSET,
    }
    return resolve_lm_config({**sizes, "streams": [stream], "pattern": "parallel"})


def sentence_grid(ids: Sequence[int]) -> torch.Tensor:
    """Return the one-stream grid ``[1, L + 2]``: bos, the characters (offset), eos."""
    row = [TEXT_BOS, *(i + TEXT_OFFSET for i in ids), TEXT_EOS]
    return torch.tensor([row], dtype=torch.int64)


def phone_ids(phonemizer: Phonemizer, text: str) -> list[int]:
    """Phone tokenizer ids of a sentence (``ValueError`` where ``normalize_text`` rejects it)."""
    return [PHONE_IDS[p] for p in phonemizer.phones(normalize_text(text))]


def gather_text(
    manifest: Path | None,
    text_files: Sequence[Path],
    fortunes: int,
    seed: int = 0,
    phonemizer: Phonemizer | None = None,
) -> tuple[list[list[int]], list[list[int]], int]:
    """Return (train ids, heldout ids, sentences skipped), sentences deduplicated.

    The ids are characters, or phones with a ``phonemizer``.
    """
    train: dict[str, None] = {}
    heldout: dict[str, None] = {}
    if manifest is not None:
        for entry in read_manifest(manifest):
            target = heldout if entry.get("split") == "heldout" else train
            target.setdefault(entry["text"], None)
    for path in text_files:
        train.update(dict.fromkeys(sentences_from_text_file(path)))
    if fortunes > 0:
        pool = collect_sentences(use_fortunes=True, seed=seed, max_sentences=fortunes)
        train.update(dict.fromkeys(s for s in pool if s not in heldout))
    if not heldout:  # no heldout split given: hold out ~5 % of the train text by hash
        for text in list(train):
            if hashlib.sha256(f"textlm:{text}".encode()).digest()[0] < 13:
                heldout[text] = None
                del train[text]
    skipped = 0
    seen: set[tuple[int, ...]] = set()

    def encode(texts: dict[str, None]) -> list[list[int]]:
        nonlocal skipped
        kept = []
        for text in texts:
            try:
                ids = char_ids(text) if phonemizer is None else phone_ids(phonemizer, text)
            except ValueError:
                skipped += 1
                continue
            if tuple(ids) not in seen:  # a heldout sentence is never trained on
                seen.add(tuple(ids))
                kept.append(ids)
        return kept

    heldout_ids = encode(heldout)
    return encode(train), heldout_ids, skipped


def init_from_text_lm(model: SpeechLM, text_lm_dir: str | Path) -> int:
    """Copy a text LM's transformer into the TTS LM ``model``; return the tensors copied.

    Copies ``layers.*`` and ``norm.weight``, and in stream 0 (the TTS text stream) the rows of
    pad, bos and eos and of every character (the text LM's row ``3 + i`` to the TTS LM's row
    ``text_offset + i``) of ``embeddings.0`` and ``heads.0``. Sizes must match.
    """
    text_lm = load_pretrained(text_lm_dir)
    assert isinstance(text_lm, SpeechLM)
    for key in SHARED_KEYS:
        if text_lm.config[key] != model.config[key]:
            raise ValueError(
                f"{key}: the text LM has {text_lm.config[key]}, the TTS LM {model.config[key]}"
            )
    source_stream = text_lm.config["streams"][0]
    stream = model.config["streams"][0]
    chars = source_stream["vocab_size"] - source_stream["text_offset"]
    if stream["vocab_size"] - stream["text_offset"] != chars:
        raise ValueError("the text LM and the TTS LM have tokenizers of different sizes")
    source = text_lm.export_state_dict()
    target = dict(model.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, tensor in source.items():
            if name.startswith("layers.") or name == "norm.weight":
                target[name].copy_(tensor)
                copied += 1
        rows = [(s, s) for s in (TEXT_PAD, TEXT_BOS, TEXT_EOS)]
        rows += [
            (source_stream["text_offset"] + i, stream["text_offset"] + i) for i in range(chars)
        ]
        src_rows = torch.tensor([r[0] for r in rows])
        dst_rows = torch.tensor([r[1] for r in rows])
        for name in ("embeddings.0.weight", "heads.0.weight"):
            if name in source and name in target:
                target[name][dst_rows] = source[name][src_rows]
                copied += 1
    return copied


@dataclasses.dataclass(frozen=True)
class TextOptions:
    """What ``train_text_lm`` trains on; the optimisation is in :class:`LoopOptions`."""

    out: Path
    manifest: Path | None = None
    text: tuple[Path, ...] = ()
    fortunes: int = 0
    lexicon: Path | None = None
    resume: bool = False
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    ffn_dim: int = 704


def parse_args(argv: Sequence[str] | None = None) -> tuple[TextOptions, LoopOptions]:
    """Parse command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.train_text_lm",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, help="corpus manifest.jsonl (or its directory)")
    parser.add_argument("--text", type=Path, action="append", default=[], help="repeatable")
    parser.add_argument("--lexicon", type=Path, help="read phones: the pipeline's lexicon")
    add_option_flags(parser, TextOptions, ("out", "manifest", "text", "lexicon"))
    add_option_flags(parser, LoopOptions)
    namespace = parser.parse_args(argv)
    if namespace.manifest is None and not namespace.text and namespace.fortunes <= 0:
        parser.error("give --manifest, --text or --fortunes")
    names = {f.name for f in dataclasses.fields(TextOptions)}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    values["text"] = tuple(values["text"])
    return TextOptions(**values), loop_options(namespace)


def train(options: TextOptions, loop: LoopOptions) -> Path:
    """Run (or resume) training; return the exported model directory."""
    dist = init_distributed()
    if loop.threads > 0:
        torch.set_num_threads(loop.threads)
    options.out.mkdir(parents=True, exist_ok=True)
    phonemizer = None if options.lexicon is None else Phonemizer.load(options.lexicon)
    train_ids, heldout_ids, skipped = gather_text(
        options.manifest, options.text, options.fortunes, loop.seed, phonemizer
    )
    if dist.main:
        print(f"{len(train_ids)} train, {len(heldout_ids)} heldout sentences ({skipped} skipped)")
    train_set = [sentence_grid(ids) for ids in train_ids]
    heldout = [sentence_grid(ids) for ids in heldout_ids]
    longest = max(g.shape[-1] for g in [*train_set, *heldout])
    sizes = {k: getattr(options, k) for k in SHARED_KEYS if hasattr(options, k)}
    units = len(CHARACTERS) if phonemizer is None else len(PHONES)
    config = text_lm_config(units, **sizes, max_context=max(longest, 2))
    checkpoint = read_resume_state(options.out, options.resume)
    if checkpoint is not None and checkpoint["lm_config"] != config:
        raise ValueError("the LM config differs from that of the checkpoint being resumed")
    torch.manual_seed(loop.seed)
    model = SpeechLM(config)
    extra = {
        "lm_config": config,
        "options": {k: str(v) for k, v in dataclasses.asdict(options).items()},
    }
    model = train_grids(
        model, train_set, heldout, [1.0], ["text"], loop, options.out, dist, checkpoint, extra
    )
    path = options.out / MODEL_DIR
    if dist.main:
        tokenizer = make_char_tokenizer() if phonemizer is None else make_phone_tokenizer()
        save_pretrained(model, path, tokenizer=tokenizer)
    dist.barrier()
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    try:
        path = train(*parse_args(argv))
        if not torch_dist.is_initialized() or torch_dist.get_rank() == 0:
            print(f"exported {path}")
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


if __name__ == "__main__":
    main()
