"""Arm CPU (AArch64 NEON) schedules: the Snapdragon Kryo big cores.

``shift_conv2d`` is a register-blocked outer product (the host's loop nest, ``cpu.tile_shift_conv2d``,
with tiles for NEON's 32 x 128-bit registers): per input channel, 16 output channels (4 vectors
of 4 lanes) x 4 output pixels = 16 accumulators that stay in registers for the whole reduction,
4 weight vectors of the weight packed ``[O/16, C, 1, 1, 16]`` at compile time (a constant:
``cpu_common.pack_weights_at_compile_time``), 4 input values (7 pixels x 8 channels on 7-wide maps:
``micro_tile``). Hot loop, fp32: 16 ``fmla v.4s, v.4s, v.s[i]`` + 2 ``ldp q`` + the inputs
(26 instructions; 71 without the staging below, 56 spilled accumulators with the host's tiles).
16 accumulators are enough: 2 FMA pipes x 4 cycles of ``fmla`` latency need 8 in flight, and the
5 loads per 16 ``fmla`` (8 cycles) keep the 2 load pipes busy 2.5 cycles, so a 24-accumulator tile
(16 x 6, fewer loads per ``fmla``) would only trade registers for the same FMA-bound loop.
Plain convs take the same budget (``cpu_common.accumulator_budget``; int8 on ``sdot``: ``arm_conv2d.py``).

The shift lives in one place, the compute's staging block ``shift_conv2d_input``: per pixel tile it
holds the shifted, strided, zero-padded NCHW input ``xs[c, pixel]`` in a small local buffer, so the
index arithmetic and bounds tests of the shift run once per (channel, pixel) of the tile instead of
inside the FMA loop (the bilinear active shift, whose per-channel taps and weights cost more, is
staged per output row: ``cpu.stage_per_row``). Only traced schedule primitives are used, so MetaSchedule can replay and tune
this schedule.

int8 (int32 accumulation, bias/relu/requantize epilogue): the same tile, 4 input channels per step
with ``sdot`` via ``tensorize(.., "dot_4x4_i8i8s32_sdot")`` (hot loop: 16 ``sdot``, 4 weight ``ldr q``,
4 ``ld1r`` input broadcasts), or ``dot_4x4_i8i8s32_neon`` (``smull``/``saddlp``/``addp``) when
the target has no dotprod. The intrinsic wants 4 contiguous int8 channels of a pixel (the stage,
laid out ``[pixels, C]``) and a contiguous 4x4 (o, c) weight block (the panel ``[O/4, C/4, 4, 4]``,
copied per row from the weight packed in that order at compile time). Channels or output channels not divisible by 4
cannot feed it: those use the fp-style outer product (``smull``/``saddw`` into int32 vectors).

Standalone shifts are copies whose rows ``split_borders`` splits so that LLVM vectorizes the interior
(``split_borders.py``). NCHW4c and circular padding keep the host's copy schedule.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

from tvm.s_tir import Schedule, TensorIntrin

from . import cpu, cpu_common, cpu_int8
from ._blocks import divisor, extents
from .split_borders import split_borders

OUT_TILES = (16, 8, 4, 2, 1)  # output channels per micro-kernel: 4 / 2 / 1 NEON vectors (or a scalar tail)
PIXEL_TILES = (4, 7, 6, 5, 3, 2, 1)  # output pixels per micro-kernel; 4 first (the 16 x 4 tile), 7 for 7x7 maps
ACCUMULATORS = 16  # of NEON's 32 q registers: 16 accumulators + up to 4 weight vectors + the inputs
SDOT, NEON_DOT = "dot_4x4_i8i8s32_sdot", "dot_4x4_i8i8s32_neon"


def micro_tile(out_channels: int, width: int) -> tuple[int, int]:
    """``(output channels, pixels)`` of the register tile: pixels dividing the output width (no
    tail), then the widest channel tile whose accumulators (one vector per 4 channels per pixel) fit."""
    pixels = divisor(width, PIXEL_TILES)
    out = next(o for o in OUT_TILES if out_channels % o == 0 and max(o // 4, 1) * pixels <= ACCUMULATORS)
    return out, pixels


def has_dotprod(target) -> bool:
    """ARMv8.2 dot product (``sdot``): TVM derives ``feature.has_dotprod`` from mcpu/mattr."""
    return bool(target.attrs.get("feature.has_dotprod", False))


def dot_intrinsic(target) -> str:
    """The 4x4 int8 dot-product intrinsic name for ``target``, registered on first use.

    ``import tvm.s_tir.tensor_intrin.arm_cpu`` would first run the package ``__init__``, which
    builds every CUDA/ROCm intrinsic (~40 s, shared notes bug B). We execute only the ``arm_cpu``
    submodule (~1 s) under a temporary, unexecuted package object; a later real import of the
    package still runs its ``__init__`` and reuses the loaded submodule.
    """
    name = SDOT if has_dotprod(target) else NEON_DOT
    if TensorIntrin.get(name, allow_missing=True) is None:
        package = "tvm.s_tir.tensor_intrin"
        if package in sys.modules:
            importlib.import_module(package + ".arm_cpu")
        else:
            sys.modules[package] = importlib.util.module_from_spec(importlib.util.find_spec(package))
            try:
                importlib.import_module(package + ".arm_cpu")
            finally:
                del sys.modules[package]
    return name


# --------------------------------------------------------------------------------------------
# rules


def _is_int8(sch: Schedule, acc) -> bool:
    """int8 operands accumulate in int32 (relay_ops.shift_conv2d); float ones in their own type."""
    return str(sch.get(acc).body.buffer.dtype) == "int32"


def schedule_shift_conv2d(sch: Schedule, blocks: dict, target) -> None:
    acc = blocks["shift_conv2d"]
    _, out_ch, _, width, channels = extents(sch, sch.get_loops(acc))
    tiles = micro_tile(out_ch, width)
    staged = blocks["shift_conv2d_input"]
    if _is_int8(sch, acc) and channels % 4 == 0 and out_ch % 4 == 0:
        schedule_shift_conv2d_dot(sch, blocks, target, tiles)
    else:
        schedule_shift_conv2d_fma(sch, blocks, target, staged, tiles)


def schedule_shift_conv2d_fma(sch: Schedule, blocks: dict, target, staged, tiles) -> None:
    """Outer product over the staged input: per channel, ``tiles[0]`` output channels (vectors of
    4) x ``tiles[1]`` pixels read as one contiguous run of the ``[C, pixels]`` stage."""
    if cpu.is_bilinear(sch, blocks):  # per-channel taps and weights: amortize them over a whole row
        rows, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],), panel_per_row=False)
        cpu.stage_per_row(sch, staged, rows)
    else:
        sch.transform_layout(staged, ("write", 0), lambda n, h, w, c: (n, h, c, w))
        _, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],), panel_per_row=False)
        sch.compute_at(staged, wo)
        sch.set_scope(staged, 0, "local")
    tile = tiles[0]  # one contiguous row of the tile's output channels per rc
    cpu_common.pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // tile, c, kh, kw, o % tile))
    sch.unroll(wi)
    sch.vectorize(oi)
    sch.decompose_reduction(blocks["shift_conv2d"], rc)


def schedule_shift_conv2d_dot(sch: Schedule, blocks: dict, target, tiles) -> None:
    """int8 x int8 -> int32: the same tile, 4 input channels per step via a 4x4 dot product; the
    weights packed in the panel's ``[O / 4, C / 4, 4, 4]`` order at compile time (per row a plain copy)."""
    cpu_common.pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // 4, c // 4, kh, kw, o % 4, c % 4),
                                            inline=False)
    cpu_int8.dot_tile(sch, blocks, dot_intrinsic(target), 4, tiles)


def schedule_shift(sch: Schedule, blocks: dict, target, op: str) -> None:
    """Parallel over (n, c, h) rows; each row a vectorizable interior between scalar borders."""
    block = blocks[op]
    if not split_borders(sch, block):  # NCHW4c, circular padding: the host's vectorized copy
        cpu.schedule_shift(sch, blocks, target, op)
        return
    n, c, h = sch.get_loops(block)
    sch.parallel(sch.fuse(n, c, h))


def _shift_rule(op):
    return lambda sch, blocks, target: schedule_shift(sch, blocks, target, op)


RULES = {
    "shift_conv2d": schedule_shift_conv2d,
    "shift2d": _shift_rule("shift2d"),
    "sparse_shift2d": _shift_rule("sparse_shift2d"),
    "active_shift2d": _shift_rule("active_shift2d"),
}
