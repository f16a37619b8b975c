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


def _plus_zero_point(value, zero_point: int):
    """``value + zp`` in fp32 (exact: both are small integers); nothing added for zero point 0."""
    return R.add(value, _const(zero_point, "float32")) if zero_point else value


def quantize(bb, x, scale: np.float32, zero_point: int = 0):
    """fp32 -> int8: ``clip(rint(x * f32(1/s)) + zp, -128, 127)``."""
    inverse = np.float32(1.0) / np.float32(scale)
    return _clip_int8(bb, _plus_zero_point(R.round(R.multiply(x, _const(inverse, "float32"))), zero_point))


def dequantize(bb, q, scale, zero_point: int = 0):
    """int8/int32 -> fp32: ``(f32(q) - zp) * s`` (``s`` a scalar or a per-channel ``[1, O, 1, 1]`` / ``[O]``
    array)."""
    value = R.astype(q, "float32")
    if zero_point:
        value = R.subtract(value, _const(zero_point, "float32"))
    return bb.emit(R.multiply(value, _const(scale, "float32")))


def requantize(bb, acc, multiplier: np.ndarray, low: int = -128, high: int = 127, zero_point: int = 0,
               offset: np.ndarray | None = None):
    """int32 accumulator -> int8: ``clip(rint(f32(acc) * m[o] (+ c[o])) + zp, low, high)``, ``m = s_x * s_w[o] /
    s_out`` in fp32, ``c = f32(b / s_out)`` an fp32 offset (an unfolded BatchNorm's). ``low``/``high`` carry a
    fused ReLU (``low = zp``) or ReLU6 (``high = zp + rint(6 / s_out)``)."""
    scaled = R.multiply(R.astype(acc, "float32"), _const(multiplier, "float32"))
    if offset is not None:
        scaled = R.add(scaled, _const(offset, "float32"))
    return _clip_int8(bb, _plus_zero_point(R.round(scaled), zero_point), low, high)


def zero_point_correction(weight_q: np.ndarray, zero_point: int) -> np.ndarray:
    """``-zp * sum(Wq[o])`` per output channel (int32): what an accumulator of raw ``xq * Wq`` (the input padded
    with ``zp``) needs to be ``sum((xq - zp) * Wq)``. Folded into the int32 bias."""
    sums = weight_q.reshape(weight_q.shape[0], -1).astype("int64").sum(axis=1)
    return (-int(zero_point) * sums).astype("int32")


def channel_shape(values: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector broadcastable over NCHW (``[1, O, 1, 1]``) or over ``[N, O]``."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def rescale_sum(bb, terms: list, ratios: list[float], low: int = -128, high: int = 127,
                zero_points: list[int] | None = None, out_zero_point: int = 0):
    """int8 tensors ``q_i`` (scales ``s_i``, zero points ``z_i``) -> int8 at ``s_out`` / ``z_out``,
    ``ratio_i = s_i / s_out``, in int32 fixed point: ``clip((sum_i q_i * M_i + C) >> k, low, high)`` with
    ``M_i = rint(ratio_i * 2^k)`` and ``C = 2^(k-1) + z_out * 2^k - sum_i z_i * M_i`` (arithmetic shift: rounds
    half up). Used by the residual add (two terms), concat inputs on another scale and PT2E requantizes (one)."""
    zero_points = zero_points or [0] * len(terms)
    if any(zero_points) or out_zero_point:
        # |q_i - z_i| <= 255, and |z_out * 2^k| <= 256 * (0.5 * 2^k): the whole sum stays inside int32
        multipliers, shift = fixed_point(list(ratios) + [0.5], 256)
        multipliers = multipliers[:-1]
    else:
        multipliers, shift = fixed_point(ratios)
    total = None
    for term, multiplier in zip(terms, multipliers):
        product = R.multiply(R.astype(term, "int32"), _const(multiplier, "int32"))
        total = product if total is None else R.add(total, product)
    constant = (1 << (shift - 1)) + (out_zero_point << shift) - sum(z * m for z, m in zip(zero_points, multipliers))
    total = R.add(total, _const(constant, "int32"))
    return _clip_int8(bb, R.right_shift(total, _const(shift, "int32")), low, high)


def rounded_float_op(bb, q, op, zero_point: int = 0):
    """An averaging op (avg pool, mean) on int8 at an unchanged scale: ``clip(rint(op(f32(q) - zp)) + zp)``
    (centred first: ties to even are taken on the real value, as PyTorch's quantize does)."""
    value = R.astype(q, "float32")
    if zero_point:
        value = R.subtract(value, _const(zero_point, "float32"))
    return _clip_int8(bb, _plus_zero_point(R.round(op(value)), zero_point))
