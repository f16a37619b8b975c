"""Depthwise conv2d (and groups too narrow for a channel vector) on the host: one channel per task."""
from __future__ import annotations

from tvm.s_tir import Schedule

from .cpu_common import has_guard
from .cpu_conv2d_block import Conv2d, parallel_conv
from .cpu_loop_nest import stage_padding


def per_channel(sch: Schedule, conv: Conv2d, epilogue, pad, vector: int) -> None:
    """Per (n, channel) in parallel: pad, convolve and finish one channel while it is in L1.

    Stride-1 rows (``vector`` > 1, a divisor of the row: no tail) are ``vector``-pixel accumulator
    vectors over the unrolled taps, each tap one contiguous load, then the epilogue on the same
    vector (measured 1.2-5x over LLVM's vectorizer on MobileNetV2's 112x112 ... 7x7 maps). Strided
    rows stay with LLVM's loop vectorizer: TVM's ``vectorize`` scalarizes their loads (2-4x slower),
    and a padding copy deinterleaving even/odd columns cost more than it saved on maps under 56x56."""
    n, f, y, x, *taps = sch.get_loops(conv.block)
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
    sch.reverse_compute_at(epilogue, xo)
    for tap in taps:
        sch.unroll(tap)
    sch.vectorize(xi)
    sch.vectorize(sch.get_loops(epilogue)[-1])
    parallel_conv(sch, conv, chan)
    sch.decompose_reduction(conv.block, taps[0])
