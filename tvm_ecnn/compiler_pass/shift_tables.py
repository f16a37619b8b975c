"""Per-channel ``[C, 2]`` (dy, dx) offset tables: which grouped shift one is, how many channels move."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tvm_ecnn.nn.offsets import MAPPINGS, grouped_shift_offsets


class GroupedShift(NamedTuple):
    kernel_size: int
    dilation: int
    mapping: str


def channels_moved(table) -> int:
    """Channels with a nonzero offset: the ones that cost data movement."""
    return int(np.count_nonzero(np.any(np.asarray(table) != 0, axis=1)))


def match_grouped(table, period: tuple[int, int] | None = None) -> GroupedShift | None:
    """The ``(kernel_size, dilation, mapping)`` whose grouped table equals ``table``, if any.

    ``shift2d`` is cheaper to schedule than a table lookup (its offsets are quasi-affine in the
    channel), so an integer table that happens to be grouped should become ``shift2d``. With
    ``period=(H, W)`` (circular shifts) offsets are compared modulo the image size.
    """
    table = np.asarray(table, dtype=np.int64)
    channels = table.shape[0]
    reach = int(np.abs(table).max(initial=0))
    if reach == 0:
        return None

    def same(candidate):
        if period is None:
            return np.array_equal(candidate, table)
        return np.array_equal(candidate % period, table % period)

    for kernel_size in range(3, 2 * reach + 2, 2):
        if kernel_size * kernel_size > channels or reach % (kernel_size // 2):
            continue
        dilation = reach // (kernel_size // 2)
        for mapping in MAPPINGS:
            if same(grouped_shift_offsets(channels, kernel_size, dilation, mapping)):
                return GroupedShift(kernel_size, dilation, mapping)
    return None
