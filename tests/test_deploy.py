"""The user's workflow end to end: scripts/compile.py, the exported .so, its kernels on PoCL."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_ecnn.device.pocl import build_on_pocl, opencl_source_from_library

ROOT = Path(__file__).resolve().parents[1]


def compile_cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "compile.py"), "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_compile_adreno_default_model_so_builds_on_pocl(tmp_path):
    done = compile_cli("--target", "adreno", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    library = tmp_path / "shiftresnet20-adreno.so"
    assert library.exists()
    assert library.read_bytes()[:4] == b"\x7fELF" and library.read_bytes()[18] == 183  # EM_AARCH64
    for line in ("rewritten", "kernels     opencl:", "parameters", "roofline", str(library)):
        assert line in done.stdout, done.stdout
    assert "shift-conv x9" in done.stdout
    source = opencl_source_from_library(library)
    assert source.count("__kernel void") >= 9
    build_on_pocl(source)


@pytest.mark.parametrize("args, expected", [
    (("--target", "snapdragon/999-gpu"), "valid names"),
    (("--model", "resnet9000", "--target", "host"), "zoo name"),
])
def test_compile_bad_names_exit_2_with_the_valid_ones(tmp_path, args, expected):
    done = compile_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
