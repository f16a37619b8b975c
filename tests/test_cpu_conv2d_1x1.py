"""The host's fp32 1x1 stride-1 convs as a register-tiled GEMM (schedules/cpu_conv2d_1x1.py): numerics against
PyTorch on planes that are and are not whole vectors, with and without an epilogue, and the tile it builds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from relax_helpers import build_module
from tvm import relax

from schedules.cpu_conv2d_1x1 import gemm_tile
from tvm_ecnn.pipeline import build, relax_pipeline

RNG = np.random.default_rng(0)
ZEN5 = {"kind": "llvm", "mcpu": "znver5"}  # AVX-512: 16 lanes, 32 registers (the structure, compiled not run)


def _module(c, o, size, epilogue):
    w, b = RNG.standard_normal((o, c, 1, 1)).astype("float32"), RNG.standard_normal(o).astype("float32")
    nn = relax.op.nn

    def body(x, *residual):
        y = nn.conv2d(x, relax.const(w))
        if epilogue:  # bias, residual add, ReLU6 (MobileNetV2's projection + shortcut, then a clip)
            y = relax.op.clip(relax.op.add(relax.op.add(y, relax.const(b.reshape(1, -1, 1, 1))), residual[0]), 0, 6)
        return y

    inputs = [((1, c, size, size), "float32")] + ([((1, o, size, size), "float32")] if epilogue else [])
    return build_module(body, inputs), w, b


def _conv_kernel(mod, target):
    lowered = relax_pipeline(target)(mod)
    (conv,) = [f for gv, f in lowered.functions.items()
               if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    return conv.script()


# (in channels, out channels, size, epilogue): C and O no multiple of the tile, planes of 81 and 49 pixels
# (padded to whole tiles), 64 pixels (whole vectors, read in place), no epilogue (a plain store), 28x28 planes
# (7 x 7 vectors: the 3x7 tile)
CASES = [(50, 30, 9, True), (57, 36, 7, True), (13, 24, 8, True), (48, 20, 9, False), (17, 48, 8, False),
         (20, 18, 28, True), (24, 48, 28, False)]


@pytest.mark.parametrize("c, o, size, epilogue", CASES)
def test_1x1_gemm_matches_torch(c, o, size, epilogue):
    mod, w, b = _module(c, o, size, epilogue)
    x = RNG.standard_normal((1, c, size, size)).astype("float32")
    res = RNG.standard_normal((1, o, size, size)).astype("float32") * 4
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w))
    if epilogue:
        ref = torch.clamp(ref + torch.from_numpy(b).reshape(1, -1, 1, 1) + torch.from_numpy(res), 0, 6)
    vm = relax.VirtualMachine(build(mod, "host"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in ([x, res] if epilogue else [x])]).numpy()
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_tile_is_output_channels_times_whole_pixel_vectors():
    """12 channels x 2 vectors of 16 pixels over flattened 8x8 planes, the input read in place; a 9x9 plane
    (81 pixels) reads a copy padded to whole tiles (96) and stores only its 81 pixels."""
    whole = _conv_kernel(_module(32, 48, 8, True)[0], ZEN5)
    assert "T.unroll(T.int64(12))" in whole and "T.unroll(T.int64(2))" in whole and "T.vectorized(T.int64(16))" in whole
    assert "T.parallel" in whole and "_pad" not in whole
    padded = _conv_kernel(_module(64, 36, 9, True)[0], ZEN5)
    assert "T.int64(1), T.int64(64), T.int64(96)" in padded and "T.int64(81)" in padded
    assert "T.unroll(T.int64(12))" in padded


def test_tile_prefers_pixel_vectors_dividing_the_plane():
    assert gemm_tile(144, 196, 16) == (12, 2)  # 56x56: 196 vectors
    assert gemm_tile(1000, 11, 16) == (8, 3)  # 13x13 padded; 12 does not divide 1000
    assert gemm_tile(24, 13, 16) == (12, 2)  # none divides 13 vectors: the one padding least (14)
    assert gemm_tile(192, 49, 16, seven=True) == (3, 7)  # 28x28: 49 vectors, which only 7 pixel vectors divide
    assert gemm_tile(192, 49, 16) == (12, 2)  # without it: padded to 50 vectors
    assert gemm_tile(128, 49, 16, seven=True) == (8, 3)  # 3 does not divide 128
    assert gemm_tile(192, 49, 8, seven=True) is None  # AVX2 (8 accumulators + 50%): 3x7 does not fit either
    assert gemm_tile(7, 4, 16) is None  # no tile divides 7 output channels: the row kernel takes it


def test_28x28_plane_takes_seven_vector_tiles_in_place():
    """28x28 (49 vectors, which no ``TILES`` entry divides): 3 channels x 7 vectors, the input read in place;
    not over 192 input channels (86 KiB under a tile, re-read by every channel tile)."""
    kernel = _conv_kernel(_module(32, 192, 28, True)[0], ZEN5)
    assert "T.unroll(T.int64(3))" in kernel and "T.unroll(T.int64(7))" in kernel and "_pad" not in kernel
    assert "T.unroll(T.int64(7))" not in _conv_kernel(_module(192, 48, 28, True)[0], ZEN5)
