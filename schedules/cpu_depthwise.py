"""Depthwise conv2d (and groups too narrow for a channel vector) on the host: one channel per task."""
from __future__ import annotations

from tvm.s_tir import Schedule

from .cpu_common import has_guard
from .cpu_conv2d_block import Conv2d, parallel_conv
from .cpu_loop_nest import stage_padding


def per_channel(sch: Schedule, conv: Conv2d, epilogue, pad) -> None:
    """Depthwise (and groups too narrow for a channel vector): per (n, channel) in parallel, pad,
    convolve and finish one channel while it is in L1. The per-channel nest is left to LLVM's loop
    vectorizer: TVM's ``vectorize`` of the (odd-width, often strided) rows measured 2-4x slower."""
    n, f, *_ = sch.get_loops(conv.block)
    chan = sch.fuse(n, f)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, chan)
    if pad is not None and not has_guard(sch, pad):
        sch.compute_inline(pad)
    elif pad is not None and conv.out_per_group == 1:  # the channel's own padded input only
        sch.compute_at(pad, chan)
    else:
        stage_padding(sch, pad)
    parallel_conv(sch, conv, chan)

