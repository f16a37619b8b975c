"""Integer arithmetic of the int8 ecnn operators (``docs/int8-arithmetic.md`` is the specification).

Everything here is integer-exact so that x86, AArch64 and OpenCL give the same bits (float epilogues
would not: LLVM and OpenCL compilers contract multiply-adds into FMAs differently):

* the active shift's bilinear weights are ``FRACTION_BITS``-bit fixed point (:func:`bilinear_int8`);
* requantization is a 31-bit fixed-point multiplier and a right shift per output channel with one
  round-half-up (:func:`fixed_point`, :func:`requantize`).
"""
from __future__ import annotations

import math

from tvm import tirx

from . import _checks

INT8_MIN, INT8_MAX = -128, 127
# Fraction bits of an active-shift offset. 7: the 2-D tap weights (2^7 - fy)(2^7 - fx) <= 2^14 fit int16,
# so a tap is an int16 x int8 product; four taps stay below 2^21 in int32.
FRACTION_BITS = 7
ONE = 1 << FRACTION_BITS
# |offset| bound of the int8 active shift: offset * 2^7 + 1/2 is exact in float32 below 2^23.
MAX_ACTIVE_OFFSET = 1 << 15
# Requantize multipliers: S = M * 2^-s with M in [2^30, 2^31), 1 <= s <= 62 (acc * M + 2^(s-1) < 2^63).
MIN_SCALE, MAX_SCALE = 2.0 ** -32, 2.0 ** 30
MAX_RESIDUAL_MULTIPLIER = 1 << 54  # (r - zr) * M_r stays below 2^62 for |r - zr| <= 255


def zero_point(op: str, arg: str, value) -> int:
    """An int8 zero point: an integer in [-128, 127]."""
    if isinstance(value, bool) or not isinstance(value, int) or not INT8_MIN <= value <= INT8_MAX:
        _checks.fail(op, arg, f"must be an integer zero point in [{INT8_MIN}, {INT8_MAX}], got {value!r}")
    return value


def scale(op: str, arg: str, value) -> float:
    """A positive finite real scale inside the fixed-point range."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        _checks.fail(op, arg, f"must be a real number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        _checks.fail(op, arg, f"must be a finite number > 0, got {value!r}")
    if not MIN_SCALE <= value < MAX_SCALE:
        _checks.fail(op, arg, f"must lie in [2^-32, 2^30) for the fixed-point requantize, got {value!r}")
    return value


def fixed_point(value: float) -> tuple[int, int]:
    """``(M, s)`` with ``value ~= M * 2^-s``, ``2^30 <= M < 2^31``: ``M = round_half_even(value * 2^s)``."""
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2^exponent, mantissa in [0.5, 1)
    shift = 31 - exponent
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:  # mantissa rounded up to 1.0
        multiplier, shift = 1 << 30, shift - 1
    return multiplier, shift


def relu6_bound(op: str, output_scale, output_zero_point: int) -> int:
    """The quantized 6: ``zp + round_half_even(6 / output_scale)``, at most 127."""
    return min(INT8_MAX, output_zero_point + round(6.0 / scale(op, "output_scale", output_scale)))


# ---------------------------------------------------------------------------------------------------------
# TE expressions


def offset_fixed_point(offset):
    """``(integer part, fraction in 1/2^k)`` of a float offset: ``q = floor(float32(o) * 2^k + 1/2)``."""
    q = tirx.floor(offset.astype("float32") * tirx.const(float(ONE), "float32") + tirx.const(0.5, "float32"))
    q = q.astype("int32")
    return tirx.floordiv(q, ONE), tirx.floormod(q, ONE)


def bilinear_int8(corner, fy, fx):
    """``(sum_taps w * q + 2^(2k-1)) >> 2k`` with ``w = (2^k - fy | fy) * (2^k - fx | fx)``, int8 result.

    ``corner(dh, dw)`` is the int8 tap (the zero point outside the image); the weights sum to ``2^2k``
    so the result is a convex combination of the taps: no clipping needed.
    """
    one = tirx.const(ONE, "int32")
    wy = (one - fy, fy)
    wx = (one - fx, fx)
    acc = sum(wy[dh] * wx[dw] * corner(dh, dw).astype("int32") for dh in (0, 1) for dw in (0, 1))
    half = tirx.const(1 << (2 * FRACTION_BITS - 1), "int32")
    return tirx.floordiv(acc + half, 1 << (2 * FRACTION_BITS)).astype("int8")


def requantize(acc, multiplier, shift, residual_term, zero_point_out: int, low: int, high: int):
    """``clip(zp + ((acc * M + residual_term + 2^(s-1)) >> s), low, high)`` in int64, as int8.

    ``multiplier``/``shift``/``residual_term`` are int64 expressions (immediates or table loads).
    """
    one = tirx.const(1, "int64")
    total = acc.astype("int64") * multiplier + residual_term + tirx.shift_left(one, shift - one)
    value = tirx.shift_right(total, shift) + tirx.const(zero_point_out, "int64")
    return tirx.max(tirx.min(value, tirx.const(high, "int64")), tirx.const(low, "int64")).astype("int8")
