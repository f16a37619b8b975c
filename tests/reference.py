"""Independent numpy references for the shift family (no torch), loop per channel.

Written from the formulas in ``shared/notes/operators.md`` so that both the PyTorch custom ops
and the Relax operators are checked against a second implementation rather than themselves.
Convention: offsets are ``[C, 2]`` with columns ``(dy, dx)``; ``out[n,c,h,w] = in[n,c,h+dy,w+dx]``.
"""
from __future__ import annotations

import math

import numpy as np


def shift_ref(x, offsets_int):
    """Integer shift with zero fill (grouped shift, sparse shift at inference). Keeps x's dtype."""
    x = np.asarray(x)
    out = np.zeros_like(x)
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
