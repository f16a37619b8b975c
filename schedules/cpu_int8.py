"""int8 ``shift_conv2d`` on CPU dot-product instructions: the shared tensorized tile, and the x86 one.

Every CPU dot instruction computes ``C[i] += sum_k A[k] * B[i, k]`` over 4 adjacent int8 input channels
(``k``) for ``lanes`` output channels (``i``): AArch64 ``sdot`` 4 lanes (``schedules/arm_cpu.py``), AVX-512
VNNI ``vpdpbusd`` 16. ``dot_tile`` lays the ``cpu.tile_shift_conv2d`` loop nest out for such an intrinsic:
the stage ``[pixels, C]`` gives 4 contiguous channels of a pixel, the weight panel is packed to
``[O / lanes, C / 4, lanes, 4]`` (at compile time: ``cpu_common.pack_weights_at_compile_time``) so one
step's ``lanes x 4`` weights are contiguous.

x86: ``vpdpbusd`` multiplies *unsigned* bytes by signed ones, and our activations are signed. The
intrinsic ``DOT_16x4_S8S8`` flips the sign bit of the 4 activation bytes (``a + 128`` as u8) and takes
back ``128 * sum_k B[i, k]`` with a second ``vpdpbusd`` on a constant 0x80 vector; the second one only
depends on the weights, which are the same for every pixel of the tile, so LLVM computes it once per
step for the whole pixel tile (CSE). Exact in int32: ``(a + 128) * b - 128 * b = a * b``.
(``vpdpbssd``, signed x signed, needs AVX-VNNI-INT8, which AMD Zen 4 lacks.)

x86 pixel vectors (int8 1x1 conv2d and ``shift_conv2d`` whose output map is whole 16-pixel vectors, rows
included): the operands swap, ``PIXELS_16x4_S8S8`` computes ``C[p] += sum_k A[p, k] * B[k]`` for 16 output
pixels ``p`` of one output channel from a 64-byte vector of the input staged ``[N, C / 4, H * W, 4]``; the
weights' sign bit is flipped (``w + 128``, the unsigned operand) and ``128 * sum_k A[p, k]`` taken back (it
depends on the pixels only: once per step for all output channels of the tile). The accumulators are then
NCHW rows, so the requantize epilogue is contiguous vector code instead of a byte scatter of channel
vectors, and the input interleave is vector shuffles once per call (measured on Zen 4: 1x1 conv 32 -> 384
on 16x16 0.18 -> 0.04 ms).
"""
from __future__ import annotations

from tvm.s_tir import Schedule, TensorIntrin
from tvm.tirx import IndexMap
from tvm.script import tirx as T
from tvm.target import codegen

from . import cpu, cpu_common, cpu_conv2d_block, cpu_loop_nest, int8_shift_staging
from ._blocks import divisor, extents

VNNI_LANES = 16
VNNI_OUT_TILES = (64, 32, 16)  # output channels per micro-kernel: 4 / 2 / 1 zmm vectors of int32
VNNI_PIXEL_TILES = (4, 7, 8, 6, 5, 3, 2, 1)
VNNI_ACCUMULATORS = 16  # of AVX-512's 32 zmm: accumulators; the rest hold weights, broadcasts, corrections
DOT_16x4_S8S8 = "ecnn_dot_16x4_s8s8s32_vnni"
PIXELS_16x4_S8S8 = "ecnn_pixels_16x4_s8s8s32_vnni"
# (output channels, 16-pixel vectors): at most 15 accumulators, a tile under 1 KiB: TVM allocates larger local
# buffers with TVMBackendAllocWorkspace per task (and LLVM then cannot keep them in registers)
PIXEL_VECTOR_TILES = ((6, 2), (4, 3), (12, 1), (8, 1), (4, 2), (4, 1))


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
        # LLVM >= 21 types both byte operands <64 x i8>; 0x80808080 = -2139062144: each byte's sign bit.
        # One expression: named temporaries would become per-task workspace allocations.
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"),
                                                    T.int32(-2139062144)), 16), dtype="int8x64"),
            B.vload([0, 0], dtype="int8x64"), dtype="int32x16") - T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), T.broadcast(T.int32(0), 16),
            T.broadcast(T.int8(-128), 64), B.vload([0, 0], dtype="int8x64"), dtype="int32x16")


TensorIntrin.register(DOT_16x4_S8S8, _dot_16x4_desc, _dot_16x4_vnni, override=True)


@T.prim_func(s_tir=True)
def _pixels_16x4_desc(
    A: T.Buffer((16, 4), "int8", offset_factor=1),
    B: T.Buffer((4,), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:4], B[0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")


@T.prim_func(s_tir=True)
def _pixels_16x4_vnni(
    A: T.Buffer((16, 4), "int8", offset_factor=1),
    B: T.Buffer((4,), "int8", offset_factor=1),
    C: T.Buffer((16,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:4], B[0:4])
        T.writes(C[0:16])
        # (w + 128) * a - 128 * a, in one expression as DOT_16x4_S8S8
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"),
                                                    T.int32(-2139062144)), 16), dtype="int8x64"),
            A.vload([0, 0], dtype="int8x64"), dtype="int32x16") - T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), T.broadcast(T.int32(0), 16),
            T.broadcast(T.int8(-128), 64), A.vload([0, 0], dtype="int8x64"), dtype="int32x16")


TensorIntrin.register(PIXELS_16x4_S8S8, _pixels_16x4_desc, _pixels_16x4_vnni, override=True)


def has_vnni(target) -> bool:
    """AVX-512 VNNI (``vpdpbusd`` on zmm): Cascade Lake+, Ice Lake+, AMD Zen 4+."""
    return target.kind.name == "llvm" and bool(codegen.target_has_features("avx512vnni", target))


def vnni_tile(out_channels: int, width: int) -> tuple[int, int] | None:
    """``(output channels, pixels)`` of the VNNI register tile (one zmm of 16 int32 per 16 channels
    per pixel), or None when the output channels are not a multiple of 16."""
    pixels = divisor(width, VNNI_PIXEL_TILES)
    return next(((o, pixels) for o in VNNI_OUT_TILES
                 if out_channels % o == 0 and o // VNNI_LANES * pixels <= VNNI_ACCUMULATORS), None)


def dot_tile(sch: Schedule, blocks: dict, intrin: str, lanes: int, tiles: tuple[int, int], staging="tile"):
    """int8 x int8 -> int32 ``shift_conv2d``: the ``tiles`` (output channels, pixels) register tile,
    4 input channels per step through ``intrin`` (``lanes`` output channels per call). Returns the block that
    stores the tile (the epilogue, or with an int32 output the accumulator's copy-out).

    The shifted input is staged (``staging``) per pixel tile as ``[pixels, C]``, per output row
    (``"row"``, channel by channel: the shift's per-channel offset and bounds then stay out of the pixel
    loop, whose loads are contiguous), or once per call (``"call"``, ``_stage_channel_planes``: on narrow
    maps the rows of every output-channel tile would stage the same row again). Per row or per call the weight
    panel is the weight packed at compile time in the panel's order, read in place; per pixel tile it is copied
    per row."""
    acc, panel, staged = blocks["shift_conv2d"], blocks["shift_conv2d_weight"], blocks["shift_conv2d_input"]
    # TVM's dot-product intrinsics declare "global" operands and tensorize compares scopes:
    # tensorize on global buffers, then make all three thread-local (registers / stack).
    rows, wo, rc, wi, oi = cpu.tile_shift_conv2d(sch, blocks, (tiles[0],), (tiles[1],), scope="global",
                                                 panel_per_row=staging == "tile")

    def panel_order(c, o):
        return o // lanes, c // 4, o % lanes, c % 4

    sch.transform_layout(panel, ("write", 0), panel_order)
    ob, ol = sch.split(oi, [None, lanes])
    rco, rc4 = sch.split(rc, [None, 4])
    sch.reorder(rco, wi, ob, ol, rc4)
    local = [panel, staged]
    if staging == "tile":
        sch.compute_at(staged, wo)
    else:
        sch.transform_block_layout(panel, panel_order)
        sch.compute_inline(panel)  # a copy of the packed weight: read it in place
        local = [] if staging == "call" else [staged]
        if staging == "row":
            cpu.stage_per_row(sch, staged, rows, pixels_innermost=False)
        else:
            _stage_shifted_planes(sch, staged, extents(sch, sch.get_loops(staged))[2])
    init = sch.decompose_reduction(acc, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    store = blocks.get("shift_conv2d_epilogue") or sch.get_consumers(acc)[0]  # tensorize replaces ``acc``
    sch.tensorize(ol, intrin)
    sch.unroll(wi)
    sch.unroll(ob)
    for block in [init] + local:
        sch.set_scope(block, 0, "local")
    return store


def vnni_shift_conv2d(sch: Schedule, blocks: dict, target) -> bool:
    """int8 ``shift_conv2d`` on ``vpdpbusd``; False (nothing changed) when the kernel is not int8,
    the target has no AVX-512 VNNI, or the channels (multiple of 4) / output channels (of 16) do not fit."""
    acc = blocks["shift_conv2d"]
    if str(sch.get(acc).body.buffer.dtype) != "int32" or not has_vnni(target):
        return False
    _, out_ch, _, width, channels = extents(sch, sch.get_loops(acc))
    if channels % 4:
        return False
    if vnni_pixel_shift_conv2d(sch, blocks):
        return True
    tiles = vnni_tile(out_ch, width)
    if tiles is None:
        return False
    cpu_common.pack_weights_at_compile_time(
        sch, blocks, lambda o, c, kh, kw: (o // VNNI_LANES, c // 4, kh, kw, o % VNNI_LANES, c % 4), inline=False)
    staging = "row" if width >= cpu.STAGE_ROWS_FROM else "call"
    store = dot_tile(sch, blocks, DOT_16x4_S8S8, VNNI_LANES, tiles, staging)
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
    """int8 conv2d on ``vpdpbusd``: pixel vectors for 1x1 stride-1 convs on whole 16-pixel vectors
    (``vnni_pixel_conv2d``), else channel vectors (``dot_conv2d``); False (nothing changed) when the
    kernel fits neither."""
    shape = dot_conv2d_shape(sch, conv) if has_vnni(target) else None
    if shape is None:
        return False
    if vnni_pixel_conv2d(sch, conv, epilogue, pad):
        return True
    tiles = vnni_tile(*shape)
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
    cpu_common.packed_weight_read(sch, block, cpu_common.read_index(sch, block, conv.weight), weight_layout)
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


def pixel_vector_tile(out_channels: int, pixels: int) -> tuple[int, int] | None:
    """``(output channels, 16-pixel vectors)`` of the ``vpdpbusd`` pixel-vector register tile, or None
    when the output map is not a whole number of 16-pixel vectors or no tile divides the channels."""
    if pixels % VNNI_LANES:
        return None
    return next(((f, p) for f, p in PIXEL_VECTOR_TILES
                 if out_channels % f == 0 and pixels // VNNI_LANES % p == 0), None)


def _pixel_vectors(sch: Schedule, acc, store, width: int, tiles: tuple[int, int], parallel) -> None:
    """The ``vpdpbusd`` pixel-vector micro-kernel of a 1x1 reduction ``acc[n, o, h, w]`` (loops
    ``n, o, h, w, rc``, then a conv's unit ``ry, rx``): the output map as one pixel axis; per ``rc / 4``
    one 64-byte vector of 16 pixels x 4 channels of the staged input (the caller lays it out
    ``[N, C / 4, H * W, 4]``) times each of ``tiles[0]`` output channels' 4 weights (broadcast), into
    ``tiles[0] x tiles[1]`` accumulator vectors. The accumulators and the ``store`` (epilogue) are NCHW
    pixel vectors. ``parallel(loop)`` takes the outer loop."""
    channels, vectors = tiles
    sch.transform_layout(acc, ("write", 0), lambda n_, o_, h_, w_: (n_, o_, h_ * width + w_))
    # one pixel iterator in the block itself (a vector spanning rows must be one blockizable
    # subspace) and one reduction iterator (a conv's unit ry, rx folded in)
    iters = len(sch.get(acc).iter_vars)
    sch.transform_block_layout(acc, IndexMap.from_func(lambda *i: (i[0], i[1], i[2] * width + i[3], sum(i[4:])),
                                                       ndim=iters))
    n, o, p, rc = sch.get_loops(acc)
    fo, fi = sch.split(o, [None, channels])
    po, pv, pi = sch.split(p, [None, vectors, VNNI_LANES])
    rco, rc4 = sch.split(rc, [None, 4])
    sch.reorder(n, fo, po, rco, fi, pv, pi, rc4)
    sch.transform_block_layout(store, lambda n_, o_, h_, w_: (n_, o_, h_ * width + w_))
    sch.reverse_compute_at(store, po)
    parallel(sch.fuse(n, fo, po))
    init = sch.decompose_reduction(acc, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(pi, PIXELS_16x4_S8S8)
    sch.unroll(pv)
    sch.unroll(fi)
    sch.set_scope(init, 0, "local")
    sch.vectorize(sch.split(sch.get_loops(store)[-1], [None, VNNI_LANES])[1])


def vnni_pixel_conv2d(sch: Schedule, conv, epilogue, pad) -> bool:
    """int8 1x1 stride-1 conv2d on ``vpdpbusd`` pixel vectors (``_pixel_vectors``): the input staged
    ``[N, C / 4, H * W, 4]`` once per call, the weights packed ``[O / F, C / 4, F, 4]`` at compile
    time. False (nothing changed) when the conv is not that or the map is not whole 16-pixel vectors."""
    block = conv.block
    _, out_ch, height, width, channels, kh, kw = extents(sch, sch.get_loops(block))
    in_shape = [int(d) for d in conv.data.shape[2:]]
    tiles = pixel_vector_tile(out_ch, height * width)
    if (kh, kw) != (1, 1) or in_shape != [height, width] or channels % 4 or tiles is None:
        return False
    if epilogue is None:
        store = sch.cache_write(block, 0, "global")
    else:
        sch.set_scope(block, 0, "global")
        store = epilogue
    data = pad if pad is not None else sch.cache_read(block, cpu_common.read_index(sch, block, conv.data), "global")
    sch.transform_layout(data, ("write", 0), lambda n, c, h, w: (n, c // 4, h * width + w, c % 4))
    _stage_channel_planes(sch, data, width)
    f = tiles[0]
    cpu_common.packed_weight_read(sch, block, cpu_common.read_index(sch, block, conv.weight),
                                  lambda o, c, r, s: (o // f, c // 4, r, s, o % f, c % 4))
    _pixel_vectors(sch, block, store, width, tiles, lambda loop: cpu_conv2d_block.parallel_conv(sch, conv, loop))
    return True


def _stage_channel_planes(sch: Schedule, stage, width: int) -> int:
    """A stage written ``[N, C / 4, H * W, 4]``: in parallel over groups of 4 channels; per 16 pixels
    (fewer where they do not divide the map), 4 contiguous channel vectors that LLVM interleaves into one store.
    Returns the pixels per vector."""
    n, c, h, w = sch.get_loops(stage)
    co, ci = sch.split(c, [None, 4])
    sch.parallel(sch.fuse(n, co))
    p = sch.fuse(h, w)
    lanes = divisor(extents(sch, [p])[0], (VNNI_LANES, 8, 4, 2))
    po, pi = sch.split(p, [None, lanes])
    sch.reorder(po, ci, pi)
    sch.unroll(ci)
    sch.vectorize(pi)
    return lanes


def _stage_shifted_planes(sch: Schedule, stage, width: int) -> None:
    """The ``[N, H', W', C]`` shifted input of a ``shift_conv2d`` staged once per call as channel planes
    (``_stage_channel_planes``), computed channel by channel. The active shift's taps lose their per-lane bounds
    tests (``int8_shift_staging``) where the pixels vectorize: AS-ResNet-w32 28x28x32 81 -> 36 us, 56 -> 28
    stride 2 129 -> 56 us; on whole-scalar planes (7x7 outputs: 49 pixels) the unguarded taps measured 1.7-2.4x
    slower than the tested ones."""
    sch.transform_layout(stage, ("write", 0), lambda n, h, w, c: (n, c // 4, h * width + w, c % 4))
    n, h, w, c = sch.get_loops(stage)
    sch.reorder(c, h, w)
    if _stage_channel_planes(sch, stage, width) > 1:
        int8_shift_staging.unguard_bilinear_taps(sch, stage)


def vnni_pixel_shift_conv2d(sch: Schedule, blocks: dict) -> bool:
    """int8 NCHW ``shift_conv2d`` on ``vpdpbusd`` pixel vectors (``_pixel_vectors``): the shifted input
    staged ``[N, C / 4, H' * W', 4]`` once per call (channel by channel, so each channel's offsets and
    bilinear weights are loop-invariant), the ``[C, O]`` panel packed ``[O / F, C / 4, F, 4]``. False
    (nothing changed) when the output map is not whole 16-pixel vectors, its rows are wide (``cpu.STAGE_ROWS_FROM``:
    56x56, 64 -> 64 channels: staged once per call measured 1.2x slower than the per-row staging) or the layout is
    not NCHW."""
    acc, stage = blocks["shift_conv2d"], blocks["shift_conv2d_input"]
    store = blocks.get("shift_conv2d_epilogue")
    _, out_ch, height, width, _ = extents(sch, sch.get_loops(acc))
    tiles = pixel_vector_tile(out_ch, height * width)
    if tiles is None or width >= cpu.STAGE_ROWS_FROM \
            or (store is not None and len(sch.get(store).writes[0].region) != 4):  # NCHW4c output
        return False
    if store is None:
        store = sch.cache_write(acc, 0, "global")
    else:
        sch.set_scope(acc, 0, "global")
    _stage_shifted_planes(sch, stage, width)
    f = tiles[0]
    cpu_common.pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // f, c // 4, kh, kw, o % f, c % 4))
    _pixel_vectors(sch, acc, store, width, tiles, sch.parallel)
    return True
