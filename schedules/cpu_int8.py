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

import tvm
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
DOT_8x4_S8S8 = "ecnn_dot_8x4_s8s8s32_vnni"  # on ymm: dense layers (cpu_int8_dense.py), 1000 classes are whole 8s
# (output channels, 16-pixel vectors): at most 15 accumulators, a tile under 1 KiB: TVM allocates larger local
# buffers with TVMBackendAllocWorkspace per task (and LLVM then cannot keep them in registers)
PIXEL_VECTOR_TILES = ((6, 2), (4, 3), (12, 1), (8, 1), (4, 2), (4, 1))


def _flipped_vpdpbusd(acc, bytes4, vector, lanes: int):
    """``acc + sum_k bytes4[k] * vector[i, k]`` over ``lanes`` int32 lanes on signed bytes (module docstring): the 4
    broadcast bytes' sign bit flipped (``+ 128`` as u8), ``128 * sum_k vector[i, k]`` taken back. LLVM >= 21 types
    both byte operands as byte vectors; 0x80808080 = -2139062144: each byte's sign bit. One expression: named
    temporaries would become per-task workspace allocations."""
    dot = T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{lanes * 32}")
    flipped = T.bitwise_xor(T.reinterpret(bytes4, dtype="int32"), T.int32(-2139062144))
    return T.call_llvm_pure_intrin(dot, acc, T.reinterpret(T.broadcast(flipped, lanes), dtype=f"int8x{lanes * 4}"),
                                   vector, dtype=f"int32x{lanes}") - T.call_llvm_pure_intrin(
        dot, T.broadcast(T.int32(0), lanes), T.broadcast(T.int8(-128), lanes * 4), vector, dtype=f"int32x{lanes}")


def _register_vnni_dot(name: str, pixels: bool, lanes: int = VNNI_LANES) -> None:
    """``C[i] += sum_k A * B`` over ``lanes`` lanes ``i`` (16: zmm, 8: ymm) and 4 bytes ``k``, ``A`` the input and
    ``B`` the weight (the order of the blocks it replaces): ``DOT_16x4_S8S8`` (``pixels`` False) broadcasts the
    input's 4 bytes ``A[k]`` against the weights ``B[i, k]``; ``PIXELS_16x4_S8S8`` the weights' ``B[k]`` against
    16 pixels ``A[i, k]``."""
    a_shape, b_shape = ((lanes, 4), (4,)) if pixels else ((4,), (lanes, 4))
    a_all, b_all = (tuple(slice(0, d) for d in shape) for shape in (a_shape, b_shape))

    def a_at(i, k):
        return (i, k) if pixels else (k,)

    def b_at(i, k):
        return (k,) if pixels else (i, k)

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer(a_shape, "int8", offset_factor=1), B: T.Buffer(b_shape, "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[a_all], B[b_all])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[a_at(vi, vk)], "int32") * T.cast(B[b_at(vi, vk)], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer(a_shape, "int8", offset_factor=1), B: T.Buffer(b_shape, "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[a_all], B[b_all])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = _flipped_vpdpbusd(
                C.vload([0], dtype=f"int32x{lanes}"), (B if pixels else A).vload([0], "int8x4"),
                (A if pixels else B).vload([0, 0], dtype=f"int8x{lanes * 4}"), lanes)

    TensorIntrin.register(name, desc, impl, override=True)


_register_vnni_dot(DOT_16x4_S8S8, pixels=False)
_register_vnni_dot(PIXELS_16x4_S8S8, pixels=True)
_register_vnni_dot(DOT_8x4_S8S8, pixels=False, lanes=8)


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


def _one_pixel_axis(sch: Schedule, acc, width: int) -> None:
    """A 1x1 reduction ``acc[n, o, h, w]`` (loops ``n, o, h, w, rc``, then a conv's unit ``ry, rx``) as
    ``acc[n, o, p]`` over loops ``n, o, p, rc``: a vector spanning rows must be one blockizable pixel subspace,
    and ``pad_einsum`` pads that one axis."""
    sch.transform_layout(acc, ("write", 0), lambda n_, o_, h_, w_: (n_, o_, h_ * width + w_))
    iters = len(sch.get(acc).iter_vars)
    sch.transform_block_layout(acc, IndexMap.from_func(lambda *i: (i[0], i[1], i[2] * width + i[3], sum(i[4:])),
                                                       ndim=iters))


def _pixel_vectors(sch: Schedule, acc, store, width: int, tiles: tuple[int, int], parallel) -> None:
    """The ``vpdpbusd`` pixel-vector micro-kernel of a 1x1 reduction ``acc[n, o, p]`` (``_one_pixel_axis``):
    per ``rc / 4`` one 64-byte vector of 16 pixels x 4 channels of the staged input (the caller lays it out
    ``[N, C / 4, P, 4]``) times each of ``tiles[0]`` output channels' 4 weights (broadcast), into
    ``tiles[0] x tiles[1]`` accumulator vectors. The accumulators and the ``store`` (epilogue, NCHW) are
    pixel vectors. ``parallel(loop)`` takes the outer loop."""
    channels, vectors = tiles
    n, o, p, rc = sch.get_loops(acc)
    fo, fi = sch.split(o, [None, channels])
    po, pv, pi = sch.split(p, [None, vectors, VNNI_LANES])
    rco, rc4 = sch.split(rc, [None, 4])
    sch.reorder(n, fo, po, rco, fi, pv, pi, rc4)
    if len(sch.get(store).iter_vars) == 4:
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
    """int8 1x1 unpadded conv2d on ``vpdpbusd`` pixel vectors (``_pixel_vectors``): the input pixels it reads (every
    ``stride``-th of a strided conv) staged ``[N, C / 4, P, 4]`` once per call, the weights packed
    ``[O / F, C / 4, F, 4]`` at compile time. A map that is not whole 16-pixel vectors (SqueezeNet's 55x55, 27x27,
    13x13) is computed padded to whole vectors (``pad_einsum``; ``int8_shift_staging.unguard_padded_pixels``: the
    pixels past the map feed only accumulators that are never stored), measured 2-9x on SqueezeNet's 1x1 convs, whose
    rows were 1-5 pixel channel-vector tiles. Strided (AS-ResNet's projections), 112x112 -> 56x56, 32 -> 32 channels
    on 2 threads: 1.65 -> 0.037 ms (the channel-vector kernel's NHWC copy of the whole input had both threads write
    the same cache lines). False (nothing changed) when the conv is not that, or would be padded and its map is
    under one vector (mostly padding) or its epilogue reads a residual map."""
    block = conv.block
    _, out_ch, height, width, channels, kh, kw = extents(sch, sch.get_loops(block))
    pixels = -(-height * width // VNNI_LANES) * VNNI_LANES
    tiles = pixel_vector_tile(out_ch, pixels)
    if (kh, kw) != (1, 1) or (pad is not None and cpu_common.has_guard(sch, pad)) or channels % 4 or tiles is None \
            or (pixels != height * width and (height * width < VNNI_LANES or _reads_another_map(sch, epilogue, block))):
        return False
    if epilogue is None:
        store = sch.cache_write(block, 0, "global")
    else:
        sch.set_scope(block, 0, "global")
        store = epilogue
    if pad is not None:
        sch.compute_inline(pad)  # a plain copy: the stage below reads the input itself
    _one_pixel_axis(sch, block, width)
    data = sch.reindex(block, ("read", next(i for i, r in enumerate(sch.get(block).reads)
                                            if not r.source.same_as(conv.weight))))
    sch.transform_block_layout(data, lambda n, p, c: (n, c, p))
    sch.transform_layout(data, ("write", 0), lambda n, p, c: (n, c, p))
    if pixels != height * width:
        sch.pad_einsum(block, [1, 1, VNNI_LANES, 1])
        sch.compute_inline(data)
        (data,) = sch.get_producers(block)
        int8_shift_staging.unguard_padded_pixels(sch, data, height * width)
        sch.compute_inline(sch.get_consumers(block)[0])  # the store reads the padded accumulators
        store = _pad_store(sch, store, width, conv)
    sch.transform_layout(data, ("write", 0), lambda n, c, p: (n, c // 4, p, c % 4))
    _stage_channel_planes(sch, data)
    f = tiles[0]
    cpu_common.packed_weight_read(sch, block, cpu_common.read_index(sch, block, conv.weight),
                                  lambda o, c, r, s: (o // f, c // 4, r, s, o % f, c % 4))
    _pixel_vectors(sch, block, store, width, tiles, lambda loop: cpu_conv2d_block.parallel_conv(sch, conv, loop))
    return True


def _reads_another_map(sch: Schedule, epilogue, acc) -> bool:
    """Whether the ``epilogue`` reads a map besides the accumulators (a residual): ``_pad_store`` has no padded
    copy of it (MobileNetV2's 14x14 and 7x7 projections with a residual keep channel vectors)."""
    accumulators = sch.get(acc).writes[0].source
    return epilogue is not None and any(
        not r.source.same_as(accumulators) and len(r.region) == 4 and not isinstance(r.region[3].min, tvm.tirx.IntImm)
        for r in sch.get(epilogue).reads)


def _pad_store(sch: Schedule, store, width: int, conv):
    """The ``store`` (epilogue) of padded accumulators ``[N, O, P']`` computed over all ``P'`` pixels into a padded
    int8 ``[N, O, P']``, so every tile's epilogue is whole vectors (a predicated last tile made TVM scalarize
    every tile); the map is then copied out of it per channel plane (contiguous both sides). Returns the new store."""
    copy = sch.cache_write(store, 0, "global")
    flat = IndexMap.from_func(lambda n, o, h, w: (n, o, h * width + w))
    sch.transform_layout(store, ("write", 0), flat)
    sch.transform_block_layout(store, flat)
    sch.pad_einsum(store, [1, 1, VNNI_LANES])
    sch.compute_inline(sch.get_producers(store)[0])  # a copy of the (already padded) accumulators
    sch.compute_inline(sch.get_consumers(store)[0])
    sch.transform_block_layout(copy, flat)
    n, o, _ = sch.get_loops(copy)
    cpu_conv2d_block.parallel_conv(sch, conv, sch.fuse(n, o))
    return store


def _stage_channel_planes(sch: Schedule, stage) -> int:
    """A stage written ``[N, C / 4, P, 4]`` (loops ``n, c`` and the pixels: ``h, w`` or one ``p``): in parallel
    over groups of 4 channels; per 16 pixels (fewer where they do not divide the map), 4 contiguous channel vectors
    that LLVM interleaves into one store. Returns the pixels per vector."""
    n, c, *pixels = sch.get_loops(stage)
    co, ci = sch.split(c, [None, 4])
    sch.parallel(sch.fuse(n, co))
    p = sch.fuse(*pixels) if len(pixels) > 1 else pixels[0]
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
    if _stage_channel_planes(sch, stage) > 1:
        int8_shift_staging.unguard_bilinear_taps(sch, stage)


def vnni_pixel_shift_conv2d(sch: Schedule, blocks: dict) -> bool:
    """int8 NCHW ``shift_conv2d`` on ``vpdpbusd`` pixel vectors (``_pixel_vectors``): the shifted input
    staged ``[N, C / 4, H' * W', 4]`` once per call (channel by channel, so each channel's offsets and
    bilinear weights are loop-invariant), the ``[C, O]`` panel packed ``[O / F, C / 4, F, 4]``. False
    (nothing changed) when the output map is not whole 16-pixel vectors, its rows are wide (``cpu.STAGE_ROWS_FROM``:
    56x56, 64 -> 64 channels: staged once per call measured 1.2x slower than the per-row staging), unstrided
    (AS-ResNet's 112x112 -> 56x56 active shift, 32 channels: per row 0.29 ms, once per call 0.19 ms on one Zen 5
    core) and fit the channel-vector tile (FE-Net's 56x56 144 -> 24: the int32 fallback 1.2 ms, pixel vectors 0.40),
    or the layout is not NCHW."""
    acc, stage = blocks["shift_conv2d"], blocks["shift_conv2d_input"]
    store = blocks.get("shift_conv2d_epilogue")
    _, out_ch, height, width, _ = extents(sch, sch.get_loops(acc))
    tiles = pixel_vector_tile(out_ch, height * width)
    if tiles is None or (width >= cpu.STAGE_ROWS_FROM and cpu.reads_unit_stride(sch, stage)
                         and vnni_tile(out_ch, width) is not None) \
            or (store is not None and len(sch.get(store).writes[0].region) != 4):  # NCHW4c output
        return False
    if store is None:
        store = sch.cache_write(acc, 0, "global")
    else:
        sch.set_scope(acc, 0, "global")
    _stage_shifted_planes(sch, stage, width)
    f = tiles[0]
    cpu_common.pack_weights_at_compile_time(sch, blocks, lambda o, c, kh, kw: (o // f, c // 4, kh, kw, o % f, c % 4))
    _one_pixel_axis(sch, acc, width)
    _pixel_vectors(sch, acc, store, width, tiles, sch.parallel)
    return True
