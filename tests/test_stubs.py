"""The committed type stub is exactly what scripts/gen_stubs.py generates from the native module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_native_stub_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_stubs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_package_is_typed() -> None:
    import speechinfer

    assert (Path(speechinfer.__file__).parent / "py.typed").is_file()
    assert (Path(speechinfer.__file__).parent / "_native.pyi").is_file()
