"""Weight and scale quantization (numpy, at compile time): symmetric int8 weights, int32 bias.

Every scale here is float32; every rounding is numpy's ``np.rint`` (ties to even), as in
docs/int8-quantization.md.
"""
from __future__ import annotations

import numpy as np

QMAX = 127  # weights use [-127, 127] (symmetric: -128 is never produced)


def activation_scale(low: float, high: float) -> np.float32:
    """Per-tensor symmetric activation scale (zero point 0): ``max(|low|, |high|) / 127``."""
    bound = max(abs(low), abs(high))
    return np.float32(bound / QMAX if bound > 0 else 1.0)


def per_channel_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 weight, float32 scale [O])``: one scale per output channel (axis 0), ``max|w[o]| / 127``."""
    flat = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    scale = np.where(flat > 0, flat / QMAX, 1.0).astype("float32")
    return _round_int8(weight / scale.reshape((-1,) + (1,) * (weight.ndim - 1))), scale


def int32_bias(bias: np.ndarray, input_scale: np.float32, weight_scale: np.ndarray) -> np.ndarray:
    """Bias in accumulator units: ``rint(b / (s_x * s_w[o]))`` as int32 (the accumulator's scale)."""
    acc_scale = (np.float32(input_scale) * weight_scale).astype("float32")
    return np.clip(np.rint(bias.astype("float32") / acc_scale), -(2**31), 2**31 - 1).astype("int32")


def _round_int8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), -QMAX, QMAX).astype("int8")


def fixed_point(ratios: list[float], max_abs_input: int = 128) -> tuple[list[int], int]:
    """``(integer multipliers, shift k)`` with ``M_i = rint(ratio_i * 2^k)``: the largest ``k <= 16`` such that
    ``sum(max_abs_input * |M_i|) + 2^(k-1)`` stays inside int32 (no overflow in the rescaling add)."""
    for shift in range(16, 0, -1):
        multipliers = [int(np.rint(np.float64(r) * 2**shift)) for r in ratios]
        if sum(max_abs_input * abs(m) for m in multipliers) + 2 ** (shift - 1) < 2**31:
            return multipliers, shift
    raise ValueError(f"scale ratios {ratios} are too large for an int32 fixed-point rescale")
