"""Independent numpy references for the shift family (no torch), loop per channel.

Written from the formulas in ``shared/notes/operators.md`` so that both the PyTorch custom ops
and the Relax operators are checked against a second implementation rather than themselves.
Convention: offsets are ``[C, 2]`` with columns ``(dy, dx)``; ``out[n,c,h,w] = in[n,c,h+dy,w+dx]``.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def shift_ref(x, offsets_int, fill=0):
    """Integer shift with zero fill (grouped shift, sparse shift at inference). Keeps x's dtype.

    ``fill``: the value shifted in (an int8 tensor's zero point)."""
    x = np.asarray(x)
    out = np.full_like(x, fill)
    _, channels, height, width = x.shape
    for c in range(channels):
        dy, dx = (int(v) for v in offsets_int[c])
        # Destination rows h whose source h + dy lies inside [0, height); same for columns.
        h0, h1 = max(0, -dy), min(height, height - dy)
        w0, w1 = max(0, -dx), min(width, width - dx)
        if h0 < h1 and w0 < w1:
            out[:, c, h0:h1, w0:w1] = x[:, c, h0 + dy : h1 + dy, w0 + dx : w1 + dx]
    return out


def circular_shift_ref(x, offsets_int):
    """Wrap-around shift (``torch.roll`` semantics): ``out[h, w] = in[(h + dy) % H, (w + dx) % W]``."""
    x = np.asarray(x)
    out = np.empty_like(x)
    _, channels, height, width = x.shape
    for c in range(channels):
        dy, dx = (int(v) for v in offsets_int[c])
        rows = (np.arange(height) + dy) % height
        cols = (np.arange(width) + dx) % width
        out[:, c] = x[:, c][:, rows[:, None], cols[None, :]]
    return out


def _active_out_size(size, stride, padding):
    return (size + 2 * padding - 1) // stride + 1


def _corners(image, beta, alpha, stride, padding):
    """The Caffe ASL kernel's q11, q21, q12, q22 (0 outside) and fractions dx, dy for one channel.

    ``image`` is ``[N, H, W]``; ``beta`` is the vertical offset (dy), ``alpha`` the horizontal (dx).
    """
    _, height, width = image.shape
    h0 = np.arange(_active_out_size(height, stride, padding)) * stride - padding
    w0 = np.arange(_active_out_size(width, stride, padding)) * stride - padding
    x1, y1 = math.floor(alpha), math.floor(beta)
    dx, dy = alpha - x1, beta - y1

    def pixel(rows, cols):
        inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
        values = image[:, np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None, :]]
        return values * inside

    q11 = pixel(h0 + y1, w0 + x1)
    q21 = pixel(h0 + y1, w0 + x1 + 1)
    q12 = pixel(h0 + y1 + 1, w0 + x1)
    q22 = pixel(h0 + y1 + 1, w0 + x1 + 1)
    return q11, q21, q12, q22, dx, dy


def active_shift_ref(x, offsets_float, stride=1, padding=0):
    """Active shift forward (Jeon & Kim), computed and returned in float64."""
    x = np.asarray(x, dtype=np.float64)
    n, channels, height, width = x.shape
    out = np.zeros((n, channels, _active_out_size(height, stride, padding), _active_out_size(width, stride, padding)))
    for c in range(channels):
        beta, alpha = (float(v) for v in offsets_float[c])
        q11, q21, q12, q22, dx, dy = _corners(x[:, c], beta, alpha, stride, padding)
        out[:, c] = q11 * (1 - dx) * (1 - dy) + q21 * dx * (1 - dy) + q12 * (1 - dx) * dy + q22 * dx * dy
    return out


def active_shift_offset_grad_ref(x, offsets_float, grad_out, stride=1, padding=0):
    """``[C, 2]`` (d/d dy, d/d dx) of ``sum(grad_out * Y)`` by the paper's formulas (floor-based at integers)."""
    x = np.asarray(x, dtype=np.float64)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    grad = np.zeros((x.shape[1], 2))
    for c in range(x.shape[1]):
        beta, alpha = (float(v) for v in offsets_float[c])
        q11, q21, q12, q22, dx, dy = _corners(x[:, c], beta, alpha, stride, padding)
        d_alpha = (1 - dy) * (q21 - q11) + dy * (q22 - q12)
        d_beta = (1 - dx) * (q12 - q11) + dx * (q22 - q21)
        grad[c] = (grad_out[:, c] * d_beta).sum(), (grad_out[:, c] * d_alpha).sum()
    return grad


# ------------------------------------------------------------------------------------------------------------------
# int8, from docs/int8-arithmetic.md (Python integers / Fractions; no code shared with relay_ops)


def active_offset_fixed_point_ref(offset, bits=7):
    """``(integer part, fraction)`` of ``q = floor(float32(offset) * 2^bits + 1/2)``."""
    q = math.floor(Fraction(float(np.float32(offset))) * 2**bits + Fraction(1, 2))
    return q // 2**bits, q % 2**bits


def active_shift_int8_ref(x, offsets_float, stride=1, padding=0, zero_point=0, bits=7):
    """int8 active shift: fixed-point bilinear taps (zero point outside), round half up, int8 out."""
    x = np.asarray(x).astype(np.int64)
    n, channels, height, width = x.shape
    out_h, out_w = _active_out_size(height, stride, padding), _active_out_size(width, stride, padding)
    out = np.zeros((n, channels, out_h, out_w), np.int64)
    rows = np.arange(out_h) * stride - padding
    cols = np.arange(out_w) * stride - padding

    def tap(c, r, k):
        inside = ((r >= 0) & (r < height))[:, None] & ((k >= 0) & (k < width))[None, :]
        values = x[:, c][:, np.clip(r, 0, height - 1)[:, None], np.clip(k, 0, width - 1)[None, :]]
        return np.where(inside, values, zero_point)

    one = 2**bits
    for c in range(channels):
        iy, fy = active_offset_fixed_point_ref(offsets_float[c][0], bits)
        ix, fx = active_offset_fixed_point_ref(offsets_float[c][1], bits)
        total = 0
        for dy, wy in ((0, one - fy), (1, fy)):
            for dx, wx in ((0, one - fx), (1, fx)):
                total = total + wy * wx * tap(c, rows + iy + dy, cols + ix + dx)
        out[:, c] = (total + 2 ** (2 * bits - 1)) // 2 ** (2 * bits)
    assert out.min() >= -128 and out.max() <= 127
    return out.astype(np.int8)


def fixed_point_ref(scale):
    """``(M, s)``: the smallest ``s`` with ``scale * 2^s >= 2^30``, ``M = round_half_even(scale * 2^s)``;
    ``M = 2^31`` becomes ``(2^30, s - 1)``."""
    exact = Fraction(scale)
    shift = 0
    while exact * 2**shift < 2**30:
        shift += 1
    while exact * 2**shift >= 2**31:
        shift -= 1
    multiplier = round(exact * 2**shift)
    return (2**30, shift - 1) if multiplier == 2**31 else (multiplier, shift)


def requantize_ref(acc, scales, zero_point, activation="none", output_scale=None, residual=None,
                   residual_scale=None, residual_zero_point=0):
    """int32 ``acc [N, O, H, W]`` (bias included) -> int8, per output channel ``o``:
    ``clip(zp + floor((acc * M + (r - zr) * M_r + 2^(s-1)) / 2^s), low, high)``, ``M_r = round(S_r * 2^s)``."""
    acc = np.asarray(acc).astype(object)
    out = np.empty(acc.shape, np.int64)
    low = max(-128, zero_point) if activation in ("relu", "relu6") else -128
    high = min(127, zero_point + round(6.0 / float(output_scale))) if activation == "relu6" else 127
    for o in range(acc.shape[1]):
        multiplier, shift = fixed_point_ref(scales[o])
        total = acc[:, o] * multiplier + 2 ** (shift - 1)
        if residual is not None:
            m_r = round(Fraction(residual_scale) * 2**shift)
            total = total + (np.asarray(residual)[:, o].astype(object) - residual_zero_point) * m_r
        out[:, o] = np.clip((total // 2**shift).astype(np.int64) + zero_point, low, high)
    return out.astype(np.int8)


def conv1x1_int_ref(shifted, w, x_zero_point=0, bias=None, stride=1):
    """int32 accumulator of a 1x1 conv of the (already shifted) int8 input: ``sum_c w (x - zx) + b``."""
    x = np.asarray(shifted).astype(np.int64)[:, :, ::stride, ::stride] - x_zero_point
    acc = np.einsum("nchw,oc->nohw", x, np.asarray(w).astype(np.int64)[:, :, 0, 0])
    if bias is not None:
        acc = acc + np.asarray(bias).astype(np.int64)[None, :, None, None]
    return acc
