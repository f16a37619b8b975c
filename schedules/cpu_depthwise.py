"""Depthwise conv2d (and groups too narrow for a channel vector) on the host: one channel per task, or on
narrow maps channel vectors (``lanes`` channels per task, NHWC tiles in the kernel)."""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

from .cpu_common import has_guard, loads
from .cpu_conv2d_block import Conv2d, accumulate_locally, pack_weights, parallel_conv
from .cpu_loop_nest import stage_padding
from .cpu_stem import exact_in_fp32, replace_update


def per_channel(sch: Schedule, conv: Conv2d, epilogue, pad, vector: int, target) -> None:
    """Per (n, channel) in parallel: pad, convolve and finish one channel while it is in L1.

    Stride-1 rows (``vector`` > 1, a divisor of the row: no tail) are ``vector``-pixel accumulator
    vectors over the unrolled taps, each tap one contiguous load, then the epilogue on the same
    vector (measured 1.2-5x over LLVM's vectorizer on MobileNetV2's 112x112 ... 7x7 maps; in float32 power-of-two
    vectors where they divide the row, ``_whole_vectors``; int8 there too when its padded input can be staged
    in fp32, ``stage_in_fp32``). Strided
    rows stay with LLVM's loop vectorizer (TVM's ``vectorize`` scalarizes their loads, 2-4x slower) unless
    they are float32 stride-2 rows of up to ``DEINTERLEAVE_MAX_WIDTH`` outputs: those read a padding copy
    storing even and odd columns apart as stride-1 rows (``_deinterleave_fits``)."""
    n, f, y, x, *taps = sch.get_loops(conv.block)
    if vector == 1 and _deinterleave_fits(sch, conv, pad, width := int(sch.get(x).extent)):
        sch.transform_layout(pad, ("write", 0), lambda n_, c_, h_, w_: (n_, c_, h_, w_ % 2, w_ // 2))
        vector = width
    power = _whole_vectors(vector, int(sch.get(x).extent))
    in_fp32 = power != vector and _stages_in_fp32(sch, conv, pad, target)
    if in_fp32 or str(sch.get(conv.block).body.buffer.dtype) == "float32":
        vector = power
    chan = sch.fuse(n, f)
    if pad is not None and not has_guard(sch, pad):
        sch.compute_inline(pad)
    elif pad is not None and conv.out_per_group == 1:  # the channel's own padded input only
        sch.compute_at(pad, chan)
    else:
        stage_padding(sch, pad)
    if vector == 1:
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, chan)
        parallel_conv(sch, conv, chan)
        return
    xo, xi = sch.split(x, [None, vector])
    sch.reorder(y, xo, *taps, xi)
    if epilogue is None:
        epilogue = sch.cache_write(conv.block, 0, "local")
    else:
        sch.set_scope(conv.block, 0, "local")
    if in_fp32:
        stage_in_fp32(sch, conv, pad)
    sch.reverse_compute_at(epilogue, y if in_fp32 else xo)
    for tap in taps:
        sch.unroll(tap)
    sch.vectorize(xi)
    sch.vectorize(sch.get_loops(epilogue)[-1])
    parallel_conv(sch, conv, chan)
    sch.decompose_reduction(conv.block, taps[0])


def _whole_vectors(vector: int, width: int) -> int:
    """A row of odd-width vectors (``pixel_vector_width``'s 14 on a 56-pixel row) as power-of-two
    vectors when their width divides the row (8): LLVM assembles every 14-lane tap from three loads and two
    inserts, where an 8-lane tap is one load. Measured (float32) 0.75x the time on MobileNetV2's 144x56x56 (Zen 5,
    1 thread); whole-row vectors (56 lanes: 1.04x; 28 on a 28-pixel row: 1.3x) and 4- or 7-lane ones were slower."""
    if vector <= 1 or vector == width or not vector & (vector - 1):
        return vector
    power = 1 << (vector.bit_length() - 1)
    return power if width % power == 0 else vector


def _stages_in_fp32(sch: Schedule, conv: Conv2d, pad, target) -> bool:
    """An int8 conv (``exact_in_fp32``) with a padding stage to convert its input in."""
    return pad is not None and has_guard(sch, pad) and exact_in_fp32(sch, conv, target)


def stage_in_fp32(sch: Schedule, conv: Conv2d, pad) -> None:
    """An int8 depthwise conv (``_stages_in_fp32``, its accumulators local) on its input converted to fp32 once,
    in the padding stage: per tap one FMA on a staged 8-pixel vector (``_whole_vectors``; the scalar weight
    converted once per channel) where int32 takes a sign extension, ``vpmulld`` and ``vpaddd``, or odd 14-lane
    loads; the epilogue reads the accumulators back as int32 (bit-exact: ``exact_in_fp32``), and ``per_channel``
    runs it once per row (four wide narrowing stores, not seven 8-byte ones). Measured on MobileNetV2's int8
    144x56x56 (Zen 5, 1 and 2 threads): 0.87-0.89x the time; fp32 staging with the epilogue per vector 0.99x,
    8-lane int32 vectors 0.94-1.07x, 28- or 56-lane fp32 vectors 0.92-1.04x. Not taken where it measured
    1.0-1.16x: strided rows, 16-lane rows (112 pixels), 28-pixel rows (14- or 28-lane) and channel vectors."""
    sch.unsafe_set_dtype(pad, 0, "float32")
    sch.unsafe_set_dtype(conv.block, 0, "float32")  # its loads are cast back: the update is rebuilt below
    block = sch.get(conv.block)
    store = block.body
    found = loads(store.value)
    acc, data, weight = [next(x for x in found if x.source.same_as(buffer))
                         for buffer in (store.buffer, sch.get(pad).writes[0].source, conv.weight)]
    replace_update(sch, conv, acc + data * tirx.Cast("float32", weight))


DEINTERLEAVE_MAX_WIDTH = 16
"""Float32 stride-2 output rows up to this wide read their channel's padded input stored even/odd columns
apart, so a row is one contiguous load per tap: measured 0.4x (14x14) and 0.85x (7x7) the time of LLVM's
strided rows on MobileNetV2 (Zen 5); 28- and 56-pixel rows were 1.3-2.6x slower (the scattering copy)."""


def _deinterleave_fits(sch: Schedule, conv: Conv2d, pad, width: int) -> bool:
    """A float32 depthwise conv of stride 2 along the row with a padding stage of even rows (whole column
    pairs) and 4-16 pixel output rows."""
    if pad is None or not has_guard(sch, pad) or conv.out_per_group != 1 or not 4 <= width <= DEINTERLEAVE_MAX_WIDTH:
        return False
    if int(sch.get(pad).writes[0].source.shape[3]) % 2:
        return False
    b = sch.get(conv.block)
    data = [load for load in loads(b.body.value) if load.source.same_as(conv.data)]
    linear = tvm.sym.detect_linear_equation(data[0].indices[3], [b.iter_vars[3].var]) if len(data) == 1 else []
    return (str(b.body.buffer.dtype) == "float32" and len(linear) == 2 and isinstance(linear[0], tirx.IntImm)
            and int(linear[0]) == 2)


CHANNEL_VECTOR_MAX_WIDTH = 16
"""Output rows up to this wide take int8 channel vectors: measured on MobileNetV2's 14x14, 7x7 and 4x4 outputs
(Zen 5, AVX-512) at 0.4-0.85x the time of ``per_channel``, whose rows there are odd 4-14 lane vectors assembled
from 1-8 byte loads; on 28x28 and 56x56 outputs they were 1.1-1.7x slower (the transposing stage and tiles
cost more than the rows save). Remeasured once ``per_channel``'s requantize epilogue became vector code
(``vectorizable_ops.py``): 1.0x on stride-1 14x14, still 0.3-0.75x on 7x7 and stride-2 outputs.
Float32 (MobileNetV2, 1 and 2 threads): 0.62-0.66x on 960x7x7, 0.75x on 192x28x28 stride 2 (rows of 14),
0.89-0.92x on 384 and 576x14x14, 1.0x on 576x14x14 stride 2, where ``per_channel``'s rows are 7- and
14-lane vectors (each tap three loads and two inserts) or a deinterleaving copy."""


def channel_vectors_fit(sch: Schedule, conv: Conv2d, pad, lanes: int, width: int, target) -> bool:
    """A float32 or int8 (int32-accumulating) depthwise conv on x86 with whole ``lanes``-channel vectors, a
    padding stage and output rows up to ``CHANNEL_VECTOR_MAX_WIDTH``."""
    return (conv.out_per_group == 1 and conv.out_channels % lanes == 0 and pad is not None
            and width <= CHANNEL_VECTOR_MAX_WIDTH and "arm_cpu" not in target.keys
            and str(sch.get(conv.block).body.buffer.dtype) in ("int32", "float32"))


def channel_vectors(sch: Schedule, conv: Conv2d, epilogue, pad, lanes: int, pixels: int) -> None:
    """Per ``lanes`` channels in parallel: their padded input staged ``[H, W, lanes]`` (one vector per
    pixel), ``pixels x lanes`` accumulators over the unrolled taps (weights packed ``[C / lanes, 1, kh, kw,
    lanes]`` at compile time), the epilogue (requantize; float32: bias, clip) on whole channel vectors into a local
    ``[H, W, lanes]`` tile, then that tile copied out as contiguous NCHW planes (LLVM: permutes) instead of a
    scatter of every epilogue vector (int8: measured 1.3-1.5x on 7x7 maps). Strides only change the staged
    addresses."""
    n, f, y, x, *taps = sch.get_loops(conv.block)
    fo, fi = sch.split(f, [None, lanes])
    xo, xi = sch.split(x, [None, pixels])
    sch.reorder(n, fo, y, xo, *taps, xi, fi)
    store = accumulate_locally(sch, conv.block, epilogue, xo)
    sch.transform_layout(conv.block, ("write", 0), lambda n_, f_, y_, x_: (n_, y_, x_, f_))
    chan = sch.fuse(n, fo)
    sch.transform_layout(pad, ("write", 0), lambda n_, c_, h_, w_: (n_, h_, w_, c_))
    sch.compute_at(pad, chan)
    c, h, w = sch.get_loops(pad)[1:]
    sch.reorder(h, w, c)
    sch.vectorize(c)  # the padding tests depend on (h, w) only
    pack_weights(sch, conv, lanes)
    copy = sch.cache_write(store, 0, "local")
    sch.reverse_compute_at(copy, chan)
    sch.transform_layout(store, ("write", 0), lambda n_, f_, y_, x_: (n_, y_, x_, f_))
    fs, xs = sch.get_loops(store)[-2:]
    sch.reorder(xs, fs)
    sch.vectorize(fs)
    sch.unroll(xi)
    sch.vectorize(fi)
    parallel_conv(sch, conv, chan)
    sch.decompose_reduction(conv.block, taps[0])
