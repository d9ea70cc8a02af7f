"""The ``speechinfer`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from speechinfer import Codec, Pipeline
from speechinfer.audio import read_audio, write_audio
from speechinfer.errors import InputError, SpeechInferError
from speechinfer.models import default_codec_path, default_pipeline_path


def _load_codec(checkpoint: str | None) -> Codec:
    path = Path(checkpoint) if checkpoint else default_codec_path()
    if path is None:
        raise InputError("no --checkpoint given and this install embeds no default codec")
    return Codec.load(path)


def _codec_encode(args: argparse.Namespace) -> None:
    codec = _load_codec(args.checkpoint)
    wave = read_audio(args.input, codec.sample_rate, codec.channels, not args.no_resample)
    codes = codec.encode(wave[0] if codec.channels == 1 else wave[None])
    np.save(args.output, codes)
    frames = codes.shape[-1]
    print(f"{args.output}: {codes.shape[1]} codebooks x {frames} frames ({codec.frame_rate:g} Hz)")


def _codec_decode(args: argparse.Namespace) -> None:
    codec = _load_codec(args.checkpoint)
    try:
        codes = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read codes from {args.input}: {err}") from err
    if codes.ndim == 2:
        codes = codes[None]
    if args.num_codebooks:
        codes = codes[:, : args.num_codebooks]
    wave = codec.decode(codes)
    write_audio(args.output, wave[0], codec.sample_rate)
    seconds = wave.shape[-1] / codec.sample_rate
    print(f"{args.output}: {seconds:.2f} s at {codec.sample_rate} Hz")


def _load_pipeline(directory: str | None) -> Pipeline:
    if directory is None and default_pipeline_path() is None:
        raise InputError("no --pipeline given and this install embeds no default pipeline")
    return Pipeline.load(directory)


class _ProgressBar:
    """``[#######.......] 120/400 frames`` on one line of ``stream``, redrawn at most every 0.1 s
    (and at the end)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._drawn_at: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and self._drawn_at is not None and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(f"\r[{bar}] {done}/{total} frames")
        self._stream.flush()

    def close(self) -> None:
        if self._drawn_at is not None:
            self._stream.write("\n")
            self._stream.flush()


def _say(args: argparse.Namespace) -> None:
    if not Path(args.output).resolve().parent.is_dir():
        raise InputError(f"cannot write {args.output}: its directory does not exist")
    pipeline = _load_pipeline(args.pipeline)
    bar = _ProgressBar(sys.stderr)
    try:
        audio = pipeline.say(args.text, voice=args.voice, seed=args.seed, progress=bar)
    finally:
        bar.close()
    write_audio(args.output, audio, pipeline.sample_rate)
    seconds = audio.shape[-1] / pipeline.sample_rate
    voice = args.voice or pipeline.voices[0]
    print(f"{args.output}: {seconds:.2f} s at {pipeline.sample_rate} Hz, voice {voice}")


def _voices(args: argparse.Namespace) -> None:
    for voice in _load_pipeline(args.pipeline).voices:
        print(voice)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechinfer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    codec = commands.add_parser("codec", help="encode audio to codes and decode codes to audio")
    codec_commands = codec.add_subparsers(dest="codec_command", required=True)

    enc = codec_commands.add_parser("encode", help="audio file -> codes .npy [B, Q, F]")
    enc.add_argument("input", help="audio file (WAV or anything libsndfile reads)")
    enc.add_argument("-o", "--output", required=True, help="output .npy file")
    enc.add_argument("--checkpoint", help="codec model directory (default: the embedded codec)")
    enc.add_argument(
        "--no-resample", action="store_true", help="refuse input at another sample rate"
    )
    enc.set_defaults(run=_codec_encode)

    dec = codec_commands.add_parser("decode", help="codes .npy -> WAV")
    dec.add_argument("input", help=".npy file of integer codes [Q, F] or [B, Q, F]")
    dec.add_argument("-o", "--output", required=True, help="output WAV file")
    dec.add_argument("--checkpoint", help="codec model directory (default: the embedded codec)")
    dec.add_argument(
        "--num-codebooks", type=int, default=0, help="decode with only the first N codebooks"
    )
    dec.set_defaults(run=_codec_decode)

    pipeline_help = "pipeline directory (default: the embedded pipeline)"
    say = commands.add_parser("say", help="text -> speech WAV")
    say.add_argument("text", help="what to say (letters, space and punctuation)")
    say.add_argument("-o", "--output", required=True, help="output WAV file")
    say.add_argument("--voice", help="voice name (default: the first; see `speechinfer voices`)")
    say.add_argument(
        "--seed", type=int, default=None, help="sampling seed (default: the pipeline's)"
    )
    say.add_argument("--pipeline", help=pipeline_help)
    say.set_defaults(run=_say)

    voices = commands.add_parser("voices", help="list the voices of a pipeline")
    voices.add_argument("--pipeline", help=pipeline_help)
    voices.set_defaults(run=_voices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SpeechInferError as err:
        print(f"speechinfer: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
