"""The int8 arithmetic as Relax ops, emitted so that FuseOps/FuseTIR put each requantize into the kernel that
produces the accumulator (conv2d/matmul are out-elementwise fusable; everything here is elementwise).

Exact arithmetic (and the numpy it must match bit for bit): docs/int8-quantization.md.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from .weights import fixed_point

R = relax.op


def _const(value, dtype):
    return relax.const(np.asarray(value, dtype=dtype))


def _clip_int8(bb, value, low=-128, high=127):
    return bb.emit(R.astype(R.clip(value, low, high), "int8"))


def quantize(bb, x, scale: np.float32):
    """fp32 -> int8: ``clip(rint(x * f32(1/s)), -128, 127)``."""
    inverse = np.float32(1.0) / np.float32(scale)
    return _clip_int8(bb, R.round(R.multiply(x, _const(inverse, "float32"))))


def dequantize(bb, q, scale):
    """int8/int32 -> fp32: ``f32(q) * s`` (``s`` a scalar or a per-channel ``[1, O, 1, 1]`` / ``[O]`` array)."""
    return bb.emit(R.multiply(R.astype(q, "float32"), _const(scale, "float32")))


def requantize(bb, acc, multiplier: np.ndarray, low: int = -128, high: int = 127):
    """int32 accumulator -> int8: ``clip(rint(f32(acc) * m[o]), low, high)``, ``m = s_x * s_w[o] / s_out`` in
    fp32. ``low``/``high`` carry a fused ReLU (``low = 0``) or ReLU6 (``high = rint(6 / s_out)``)."""
    return _clip_int8(bb, R.round(R.multiply(R.astype(acc, "float32"), _const(multiplier, "float32"))), low, high)


def channel_shape(values: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector broadcastable over NCHW (``[1, O, 1, 1]``) or over ``[N, O]``."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def rescale_sum(bb, terms: list, ratios: list[float], low: int = -128, high: int = 127):
    """int8 tensors ``q_i`` (scales ``s_i``) -> int8 at ``s_out``, ``ratio_i = s_i / s_out``, in int32 fixed point:
    ``clip((sum_i q_i * M_i + 2^(k-1)) >> k, low, high)`` (``M_i = rint(ratio_i * 2^k)``, arithmetic shift:
    rounds half up). Used by the residual add (two terms) and by concat inputs on another scale (one)."""
    multipliers, shift = fixed_point(ratios)
    total = None
    for term, multiplier in zip(terms, multipliers):
        product = R.multiply(R.astype(term, "int32"), _const(multiplier, "int32"))
        total = product if total is None else R.add(total, product)
    total = R.add(total, _const(1 << (shift - 1), "int32"))
    return _clip_int8(bb, R.right_shift(total, _const(shift, "int32")), low, high)


def rounded_float_op(bb, q, op):
    """An averaging op (avg pool, mean) on int8 at an unchanged scale: ``clip(rint(op(f32(q))))``."""
    return _clip_int8(bb, R.round(op(R.astype(q, "float32"))))
