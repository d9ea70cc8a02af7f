"""The codec releases the GIL and gives the same results from many threads at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import speechinfer as si


def test_concurrent_calls_match_serial(export_codec) -> None:
    _, path = export_codec({"n_filters": 8, "ratios": [4, 4], "dimension": 16})
    codec = si.Codec.load(path)
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal((2, 1600)) * 0.3).astype(np.float32) for _ in range(8)]
    serial = [(codec.encode(w), codec.decode(codec.encode(w))) for w in waves]

    def work(i: int) -> tuple[np.ndarray, np.ndarray]:
        codes = codec.encode(waves[i])
        dec = codec.stream_decoder(batch_size=2)
        chunks = [dec.step(codes[:, :, f : f + 3]) for f in range(0, codes.shape[-1], 3)]
        return codes, np.concatenate(chunks, axis=1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    for (codes, audio), (want_codes, want_audio) in zip(results, serial, strict=True):
        np.testing.assert_array_equal(codes, want_codes)
        assert np.max(np.abs(audio - want_audio)) <= 1e-5


def test_gil_is_released_during_decode(export_codec) -> None:
    _, path = export_codec({})
    codec = si.Codec.load(path)
    codes = np.random.default_rng(1).integers(0, codec.codebook_size, (1, 8, 400))
    started, done = threading.Event(), threading.Event()

    def decode() -> None:
        started.set()
        codec.decode(codes)
        done.set()

    thread = threading.Thread(target=decode)
    thread.start()
    started.wait()
    time.sleep(0.02)  # let the worker enter the native call
    spins = 0
    while not done.is_set():
        spins += 1
    thread.join()
    # With the GIL held for the whole decode this loop could not run until it finished.
    assert spins > 1000


def test_set_num_threads_before_first_use() -> None:
    """``si.set_num_threads`` sizes the pool before the first model call and refuses to change
    it afterwards; a fresh interpreter each, since the pool lives as long as the process."""
    script = """
import numpy as np, speechinfer as si
assert si.num_threads() >= 1
for bad in (0, -3):
    try:
        si.set_num_threads(bad)
    except si.InputError as error:
        assert "n must be >= 1" in str(error)
    else:
        raise AssertionError("accepted a bad thread count")
si.set_num_threads(1)
assert si.num_threads() == 1
si.set_num_threads(1)  # the same size again is fine
try:
    si.set_num_threads(2)
except si.InputError as error:
    assert "already runs 1 threads" in str(error), error
else:
    raise AssertionError("resized a running pool")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
