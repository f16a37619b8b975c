"""int8 ``shift_conv2d`` on CPU dot-product instructions: the shared tensorized tile, and the x86 one.

Every CPU dot instruction computes ``C[i] += sum_k A[k] * B[i, k]`` over 4 adjacent int8 input channels
(``k``) for ``lanes`` output channels (``i``): AArch64 ``sdot`` 4 lanes (``schedules/arm_cpu.py``), AVX-512
VNNI ``vpdpbusd`` 16. ``dot_tile`` lays the ``cpu.tile_shift_conv2d`` loop nest out for such an intrinsic:
the stage ``[pixels, C]`` gives 4 contiguous channels of a pixel, the weight panel is packed to
``[O / lanes, C / 4, lanes, 4]`` so one step's ``lanes x 4`` weights are contiguous.

x86: ``vpdpbusd`` multiplies *unsigned* bytes by signed ones, and our activations are signed. The
intrinsic ``DOT_16x4_S8S8`` flips the sign bit of the 4 activation bytes (``a + 128`` as u8) and takes
back ``128 * sum_k B[i, k]`` with a second ``vpdpbusd`` on a constant 0x80 vector; the second one only
depends on the weights, which are the same for every pixel of the tile, so LLVM computes it once per
step for the whole pixel tile (CSE). Exact in int32: ``(a + 128) * b - 128 * b = a * b``.
(``vpdpbssd``, signed x signed, needs AVX-VNNI-INT8, which AMD Zen 4 lacks.)
"""
from __future__ import annotations

from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T
from tvm.target import codegen

from . import cpu, cpu_common, cpu_conv2d_block, cpu_loop_nest
from ._blocks import divisor, extents

VNNI_LANES = 16
VNNI_OUT_TILES = (64, 32, 16)  # output channels per micro-kernel: 4 / 2 / 1 zmm vectors of int32
VNNI_PIXEL_TILES = (4, 7, 8, 6, 5, 3, 2, 1)
VNNI_ACCUMULATORS = 16  # of AVX-512's 32 zmm: accumulators; the rest hold weights, broadcasts, corrections
DOT_16x4_S8S8 = "ecnn_dot_16x4_s8s8s32_vnni"


@T.prim_func(s_tir=True)
def _dot_16x4_desc(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((16, 4), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        # LLVM >= 21 types both byte operands <64 x i8>; 0x80808080 = -2139062144: each byte's sign bit
        a_u8 = T.bitwise_xor(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), T.int32(-2139062144))
        b = B.vload([0, 0], dtype="int8x64")
        shifted = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(a_u8, 16), dtype="int8x64"), b, dtype="int32x16")
        offset = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), T.broadcast(T.int32(0), 16),
            T.broadcast(T.int8(-128), 64), b, dtype="int32x16")
        C[T.ramp(T.int32(0), 1, 16)] = shifted - offset


TensorIntrin.register(DOT_16x4_S8S8, _dot_16x4_desc, _dot_16x4_vnni, override=True)


def has_vnni(target) -> bool:
    """AVX-512 VNNI (``vpdpbusd`` on zmm): Cascade Lake+, Ice Lake+, AMD Zen 4+."""
    return target.kind.name == "llvm" and bool(codegen.target_has_features("avx512vnni", target))


def vnni_tile(out_channels: int, width: int) -> tuple[int, int] | None:
    """``(output channels, pixels)`` of the VNNI register tile (one zmm of 16 int32 per 16 channels
    per pixel), or None when the output channels are not a multiple of 16."""
    pixels = divisor(width, VNNI_PIXEL_TILES)
    return next(((o, pixels) for o in VNNI_OUT_TILES
                 if out_channels % o == 0 and o // VNNI_LANES * pixels <= VNNI_ACCUMULATORS), None)


def dot_tile(sch: Schedule, blocks: dict, intrin: str, lanes: int, tiles: tuple[int, int], stage_rows=False):
    """int8 x int8 -> int32 ``shift_conv2d``: the ``tiles`` (output channels, pixels) register tile,
    4 input channels per step through ``intrin`` (``lanes`` output channels per call). Returns the block that
    stores the tile (the epilogue, or with an int32 output the accumulator's copy-out).

    The shifted input ``[pixels, C]`` is staged per pixel tile, or with ``stage_rows`` per output
    row, channel by channel (the shift's per-channel offset and bounds then stay out of the pixel
    loop, whose loads are contiguous) and the weight panel packed once per call instead of per row."""
    acc, panel, staged = blocks["shift_conv2d"], blocks["shift_conv2d_weight"], blocks["shift_conv2d_input"]
    # TVM's dot-product intrinsics declare "global" operands and tensorize compares scopes:
    # tensorize on global buffers, then make all three thread-local (registers / stack).
    rows, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],), scope="global",
                                                 panel_per_row=not stage_rows)
    sch.transform_layout(panel, ("write", 0), lambda c, o: (o // lanes, c // 4, o % lanes, c % 4))
    ob, ol = sch.split(oi, [None, lanes])
    rco, rc4 = sch.split(rc, [None, 4])
    sch.reorder(rco, wi, ob, ol, rc4)
    if stage_rows:
        cpu.stage_per_row(sch, staged, rows, pixels_innermost=False)
        sch.vectorize(sch.get_loops(panel)[-1])
    else:
        sch.compute_at(staged, wo)
    init = sch.decompose_reduction(acc, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    store = blocks.get("shift_conv2d_epilogue") or sch.get_consumers(acc)[0]  # tensorize replaces ``acc``
    sch.tensorize(ol, intrin)
    sch.unroll(wi)
    sch.unroll(ob)
    for block in (init, panel, staged):
        sch.set_scope(block, 0, "local")
    return store


def vnni_shift_conv2d(sch: Schedule, blocks: dict, target) -> bool:
    """int8 ``shift_conv2d`` on ``vpdpbusd``; False (nothing changed) when the kernel is not int8,
    the target has no AVX-512 VNNI, or the channels (multiple of 4) / output channels (of 16) do not fit."""
    acc = blocks["shift_conv2d"]
    if str(sch.get(acc).body.buffer.dtype) != "int32" or not has_vnni(target):
        return False
    _, out_ch, _, width, channels = extents(sch, sch.get_loops(acc))
    tiles = vnni_tile(out_ch, width)
    if tiles is None or channels % 4:
        return False
    store = dot_tile(sch, blocks, DOT_16x4_S8S8, VNNI_LANES, tiles, stage_rows=True)
    sch.vectorize(sch.get_loops(store)[-1])  # the pixels: contiguous in the NCHW output
    return True


def dot_conv2d_shape(sch: Schedule, conv) -> tuple[int, int] | None:
    """``(output channels, output width)`` of an int8 conv2d (int32 accumulation, groups 1) whose
    input channels feed 4-wide dot products; None when it is not one."""
    block = conv.block
    if str(sch.get(block).body.buffer.dtype) != "int32" or conv.out_per_group != conv.out_channels:
        return None
    _, out_ch, _, width, channels, _, _ = extents(sch, sch.get_loops(block))
    return None if channels % 4 else (out_ch, width)


def vnni_conv2d(sch: Schedule, conv, epilogue, pad, target) -> bool:
    """int8 conv2d on ``vpdpbusd`` (``dot_conv2d``); False (nothing changed) when the kernel does
    not fit (``vnni_shift_conv2d``)."""
    shape = dot_conv2d_shape(sch, conv) if has_vnni(target) else None
    tiles = None if shape is None else vnni_tile(*shape)
    if tiles is None:
        return False
    dot_conv2d(sch, conv, epilogue, pad, DOT_16x4_S8S8, VNNI_LANES, tiles)
    return True


def stage_dot_operands(sch: Schedule, conv, epilogue, pad, weight_layout):
    """A dot-product conv2d's operands: the (padded) input staged NHWC once per call (a pixel's
    channels contiguous), the weights packed to ``weight_layout`` at compile time; returns the block
    that stores the accumulators (the epilogue, or a copy-out)."""
    block = conv.block
    if epilogue is None:
        store = sch.cache_write(block, 0, "global")
    else:
        sch.set_scope(block, 0, "global")
        store = epilogue
    data = pad if pad is not None else sch.cache_read(block, cpu_common.read_index(sch, block, conv.data), "global")
    sch.transform_layout(data, ("write", 0), lambda n_, c_, h_, w_: (n_, h_, w_, c_))
    cpu_loop_nest.schedule_block(sch, data, 0)
    packed = sch.cache_read(block, cpu_common.read_index(sch, block, conv.weight), "global")
    sch.transform_layout(packed, ("write", 0), weight_layout)
    cpu_common.mark_weight_prepack(sch, packed)
    return store


def dot_conv2d(sch: Schedule, conv, epilogue, pad, intrin: str, lanes: int, tiles: tuple[int, int]) -> None:
    """int8 conv2d (TOPI's, int32 accumulation, groups 1) through a ``lanes x 4`` dot-product
    ``intrin``: the ``tiles`` (output channels, pixels) register tile over ``(ry, rx, C / 4)``; the
    (padded) input staged NHWC once per call so the 4 channels of a pixel are contiguous, the
    weights packed ``[O / lanes, C / 4, kh, kw, lanes, 4]`` at compile time."""
    block = conv.block
    n, f, y, x, rc, ry, rx = sch.get_loops(block)
    store = stage_dot_operands(sch, conv, epilogue, pad,
                               lambda f_, c_, r_, s_: (f_ // lanes, c_ // 4, r_, s_, f_ % lanes, c_ % 4))
    fo, fi = sch.split(f, [None, tiles[0]])
    xo, xi = sch.split(x, [None, tiles[1]])
    rco, rc4 = sch.split(rc, [None, 4])
    fb, fl = sch.split(fi, [None, lanes])
    sch.reorder(n, fo, y, xo, ry, rx, rco, xi, fb, fl, rc4)
    sch.reverse_compute_at(store, xo)
    sch.transform_layout(block, ("write", 0), lambda n_, f_, y_, x_: (n_, y_, x_, f_))
    cpu_conv2d_block.parallel_conv(sch, conv, sch.fuse(n, fo, y))
    init = sch.decompose_reduction(block, ry)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(fl, intrin)
    sch.unroll(xi)
    sch.unroll(fb)
    sch.set_scope(init, 0, "local")
    sch.vectorize(sch.get_loops(store)[-1])
