"""Independent numpy implementation of the int8 arithmetic of docs/int8-quantization.md (no TVM), the shift ops
included (their integer arithmetic as docs/int8-arithmetic.md specifies it).

Given the activation scales, everything else (weight quantization, int32 bias, accumulation, requantize,
fixed-point add, pools, shifts, the ``shift_conv2d`` fixed-point epilogue) is recomputed here from the float
weights, so a bit-for-bit match with the compiled module checks the rewrite, the kernels and the documents at once.
"""
import numpy as np

F32 = np.float32


def quantize(x, scale):
    return np.clip(np.rint(x.astype(F32) * (F32(1) / F32(scale))), -128, 127).astype(np.int8)


def quantize_weight(w):
    """Per-output-channel symmetric int8: ``(wq, scale[O])``."""
    bound = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(bound > 0, bound / 127, 1.0).astype(F32)
    wq = np.clip(np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return wq, scale


def int32_bias(b, x_scale, w_scale):
    return np.rint(b.astype(F32) / (F32(x_scale) * w_scale).astype(F32)).astype(np.int32)


def conv2d_acc(xq, wq, stride=1, padding=0, groups=1):
    """int32 accumulator of an NCHW/OIHW int8 convolution (exact: int64 sums)."""
    x = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, w = x.shape
    o, cg, kh, kw = wq.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    per_group = o // groups
    for oc in range(o):
        g = oc // per_group
        for i in range(kh):
            for j in range(kw):
                patch = x[:, g * cg:(g + 1) * cg, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, oc] += np.einsum("nchw,c->nhw", patch, wq[oc, :, i, j].astype(np.int64))
    return out.astype(np.int32)


def requantize(acc, multiplier, low=-128, high=127):
    return np.clip(np.rint(acc.astype(F32) * multiplier.astype(F32)), low, high).astype(np.int8)


def fixed_point_add(terms, ratios, low=-128, high=127):
    """``clip((sum q_i * M_i + 2^(k-1)) >> k)``, ``M_i = rint(ratio_i * 2^k)``, largest ``k <= 16`` without int32
    overflow."""
    for k in range(16, 0, -1):
        m = [int(np.rint(np.float64(r) * 2**k)) for r in ratios]
        if sum(128 * abs(v) for v in m) + 2 ** (k - 1) < 2**31:
            break
    total = sum(q.astype(np.int64) * v for q, v in zip(terms, m)) + 2 ** (k - 1)
    return np.clip(total >> k, low, high).astype(np.int8)


def max_pool(q, size):
    n, c, h, w = q.shape
    return q[:, :, :h // size * size, :w // size * size].reshape(n, c, h // size, size, w // size, size).max(axis=(3, 5))


def avg_pool(q, size):
    """Non-overlapping average: fp32 sum / count, ``rint``."""
    n, c, h, w = q.shape
    blocks = q.astype(F32).reshape(n, c, h // size, size, w // size, size)
    return np.clip(np.rint(blocks.sum(axis=(3, 5), dtype=F32) / F32(size * size)), -128, 127).astype(np.int8)


def global_mean(q):
    h, w = q.shape[2:]
    return np.clip(np.rint(q.astype(F32).sum(axis=(2, 3), dtype=F32) / F32(h * w)), -128, 127).astype(np.int8)


# ---- the shift ops (docs/int8-arithmetic.md): Python integers, zero point 0 ------------------------------------

def shift(q, offsets):
    """Data-movement shift: ``out[n, c, h, w] = q[n, c, h + dy_c, w + dx_c]``, 0 outside the image."""
    h, w = q.shape[2:]
    pad = int(np.abs(offsets).max())
    padded = np.pad(q, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(q)
    for ch, (dy, dx) in enumerate(np.asarray(offsets, dtype=np.int64)):
        out[:, ch] = padded[:, ch, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return out


def active_shift(q, offsets):
    """Active shift (stride 1, no padding): offsets to 1/128 (``floor(f32(o) * 128 + 1/2)``), four integer tap
    weights summing to 2^14, ``(acc + 2^13) >> 14``; 0 outside the image."""
    h, w = q.shape[2:]
    fixed = np.floor(np.asarray(offsets, dtype=F32) * F32(128) + F32(0.5)).astype(np.int64)
    pad = int(np.abs(fixed).max()) // 128 + 2
    padded = np.pad(q.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty_like(q)
    for ch, (qy, qx) in enumerate(fixed):
        (iy, fy), (ix, fx) = divmod(int(qy), 128), divmod(int(qx), 128)
        acc = 0
        for a, wy in ((0, 128 - fy), (1, fy)):
            for b, wx in ((0, 128 - fx), (1, fx)):
                acc = acc + wy * wx * padded[:, ch, pad + iy + a:pad + iy + a + h, pad + ix + b:pad + ix + b + w]
        out[:, ch] = (acc + 2**13) >> 14
    return out


def fixed_point_multiplier(scale: float) -> tuple[int, int]:
    """``(M, s)``: ``s`` the smallest integer with ``scale * 2^s >= 2^30``, ``M = round_half_even(scale * 2^s)``
    (``M = 2^31`` becomes ``2^30`` with ``s - 1``)."""
    s = 0
    while scale * 2.0**s < 2**30:
        s += 1
    while scale * 2.0 ** (s - 1) >= 2**30:
        s -= 1
    m = round(scale * 2.0**s)
    return (2**30, s - 1) if m == 2**31 else (m, s)


def shift_conv2d_requantize(acc, scales, residual=None, residual_scale=0.0, low=-128, high=127):
    """The int8 ``shift_conv2d`` epilogue: per output channel ``o`` with ``(M, s)`` of ``scales[o]`` and
    ``M_r = round_half_even(residual_scale * 2^s)``: ``clip((acc * M + r * M_r + 2^(s-1)) >> s, low, high)``."""
    out = np.empty(acc.shape, np.int8)
    for o, scale in enumerate(scales):
        m, s = fixed_point_multiplier(float(scale))
        total = acc[:, o].astype(object) * m + 2 ** (s - 1)
        if residual is not None:
            total = total + residual[:, o].astype(object) * round(residual_scale * 2.0**s)
        out[:, o] = np.clip((total >> s).astype(np.int64), low, high)
    return out


def relu6_high(out_scale) -> int:
    """The quantized 6 of the shift ops: ``min(127, round_half_even(6 / scale))`` in float64."""
    return min(127, round(6.0 / float(out_scale)))
