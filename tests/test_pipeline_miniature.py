"""The whole training pipeline in miniature, every stage through its command line, so that no stage
can silently break: corpus → codec → token shards (engine) → word alignments (for the
``aligned`` layout; the lexicon when the text stream reads phones) → text LM → TTS LM with
``--init-from`` → DPO with the ASR judge →
evaluation → ``speechinfer say``. Full-size training is the same commands with bigger numbers
(README, "Training the default model")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechinfer as si

pytest.importorskip("pocketsphinx", reason="the ASR judge (pocketsphinx) is not installed")

SENTENCES = ["The cat sat on the mat.", "A small boat went out to sea.", "We like warm bread."]
CODEC = {"n_filters": 8, "dimension": 16, "num_codebooks": 2, "codebook_size": 32}
SIZES = ["--d-model", "32", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2"]
SIZES += ["--ffn-dim", "64"]


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize(
    ("layout", "units"),
    [("aligned", "characters"), ("prefix", "characters"), ("aligned", "phones")],
)
def test_every_stage_runs_and_the_result_speaks(tmp_path: Path, layout: str, units: str) -> None:
    from speechinfer_training import corpus

    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    try:
        manifest = corpus.build_corpus(
            tmp_path / "corpus",
            voices=["slt", "rms"],
            held_out_fraction=0.5,
            seed=3,
            text_files=[text],
            use_fortunes=False,
            install=False,
        )
    except corpus.MissingPackageError as error:
        pytest.skip(f"flite is not installed: {error}")
    (tmp_path / "codec.json").write_text(json.dumps(CODEC))
    pkg = "speechinfer_training"
    run(f"{pkg}.train_codec", "--data", str(manifest), "--out", str(tmp_path / "codec"),
        "--steps", "2", "--config", str(tmp_path / "codec.json"), "--batch-size", "2",
        "--segment-seconds", "0.25", "--threads", "1")  # fmt: skip
    codec = tmp_path / "codec" / "model"
    run(f"{pkg}.tts_data", "--manifest", str(manifest), "--codec", str(codec),
        "--out", str(tmp_path / "shards"), "--num-codebooks", "2")  # fmt: skip
    layout_flags = ["--layout", layout]
    if layout == "aligned":
        run(f"{pkg}.alignment", "--manifest", str(manifest), "--jobs", "1")
        layout_flags += ["--lead", "2"]
    unit_flags = []
    if units == "phones":
        lexicon = tmp_path / "lexicon.txt.gz"
        run(f"{pkg}.lexicon", "--out", str(lexicon), "--manifest", str(manifest),
            "--max-words", "50", "--jobs", "1")  # fmt: skip
        unit_flags = ["--lexicon", str(lexicon)]
    run(f"{pkg}.train_text_lm", "--out", str(tmp_path / "text_lm"), "--steps", "2",
        "--manifest", str(manifest), *SIZES, *unit_flags)  # fmt: skip
    if units == "phones":
        # Text dropout in training and guidance in sampling (docs/tts.md, "Guidance").
        guided = json.dumps({"temperature": 0.8, "top_k": 8, "cfg_scale": 2.0})
        unit_flags += ["--units", "phones", "--text-dropout", "0.5", "--sampling", guided]
    run(f"{pkg}.train_tts", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "tts"),
        "--steps", "3", "--init-from", str(tmp_path / "text_lm" / "model"), "--batch-size", "2",
        "--threads", "1", *layout_flags, *SIZES, *unit_flags)  # fmt: skip
    pipeline = tmp_path / "tts" / "pipeline"
    spec = json.loads((pipeline / "pipeline.json").read_text())
    assert spec.get("layout", "prefix") == layout
    assert spec.get("text_units", "characters") == units
    assert ("cfg_scale" in spec["sampling"]) == (units == "phones")
    run(f"{pkg}.dpo", "--pipeline", str(pipeline), "--corpus", str(manifest),
        "--out", str(tmp_path / "aligned"), "--prompts", "2", "--candidates", "2",
        "--steps", "2", "--batch", "2", "--heldout", "1", "--heldout-candidates", "1",
        "--workers", "2", "--cache", str(tmp_path / "dpo_cache"))  # fmt: skip
    report = json.loads((tmp_path / "aligned" / "dpo_report.json").read_text())
    assert report["steps"] == (2 if report["pairs"] else 0)
    assert report["heldout_sentences"] == 1 and 0 <= report["heldout_wer_after"]
    assert sorted(p.name for p in (tmp_path / "dpo_cache").iterdir()) == [
        "heldout.npz",
        "train.npz",
    ]
    run(f"{pkg}.compare_pipelines", "--corpus", str(manifest), "--pipelines", str(pipeline),
        str(tmp_path / "aligned"), "--sentences", "1", "--samples", "1",
        "--out", str(tmp_path / "compare.json"))  # fmt: skip
    compared = json.loads((tmp_path / "compare.json").read_text())
    assert compared["pipelines"][str(pipeline)]["minus_first"] == 0.0
    assert len(compared["pipelines"]) == 2
    run(f"{pkg}.eval", "--corpus", str(manifest), "--pipeline", str(tmp_path / "aligned"),
        "--max-utterances", "1", "--voices", "slt", "--num-words", "2",
        "--num-sentence-pairs", "2", "--out", str(tmp_path / "results.json"))  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert results, "eval wrote no results"

    pipe = si.Pipeline.load(tmp_path / "aligned")
    assert pipe.voices == ["slt", "rms"]
    assert pipe.text_units == units
    out = tmp_path / "say.wav"
    run("speechinfer.cli", "say", "The cat sat.", "-o", str(out), "--pipeline",
        str(tmp_path / "aligned"), "--voice", "rms")  # fmt: skip
    audio, rate = sf.read(out, dtype="float32")
    assert rate == pipe.sample_rate and np.isfinite(audio).all()
