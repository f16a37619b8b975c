"""Independent numpy implementation of the int8 arithmetic of docs/int8-quantization.md (no TVM).

Given the activation scales, everything else (weight quantization, int32 bias, accumulation, requantize,
fixed-point add, pools) is recomputed here from the float weights, so a bit-for-bit match with the compiled
module checks the rewrite, the kernels and the document at once.
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
    n, c, h, w = q.shape
    return np.clip(np.rint(q.astype(F32).sum(axis=(2, 3), dtype=F32) / F32(h * w)), -128, 127).astype(np.int8)
