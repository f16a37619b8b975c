"""Per-channel offset tables of the grouped shift (Wu et al. 2018).

Pure numpy so that the PyTorch modules, the Relax operators and the importer agree on one
definition. Convention everywhere: ``out[n, c, h, w] = in[n, c, h + dy_c, w + dx_c]``.
"""
from __future__ import annotations

import numpy as np

MAPPINGS = ("interleaved", "grouped")


def check_kernel_size(kernel_size: int, dilation: int = 1) -> None:
    if not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    if not isinstance(dilation, (int, np.integer)) or dilation < 1:
        raise ValueError(f"dilation must be a positive integer, got {dilation!r}")


def grouped_shift_offsets(
    channels: int, kernel_size: int = 3, dilation: int = 1, mapping: str = "interleaved"
) -> np.ndarray:
    """Return the ``[channels, 2]`` int64 table of ``(dy, dx)`` offsets.

    ``interleaved`` is the reference CUDA kernel's assignment (channel index modulo k*k);
    ``grouped`` is the paper's contiguous blocks of ``channels // k**2``. In both, the
    ``channels % k**2`` trailing channels are not shifted.
    """
    if not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    check_kernel_size(kernel_size, dilation)
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    k2 = kernel_size * kernel_size
    half = kernel_size // 2
    per_group = channels // k2
    shifted = per_group * k2
    c = np.arange(channels)
    cell = c % k2 if mapping == "interleaved" else c // max(per_group, 1)
    table = np.stack([dilation * (cell // kernel_size - half), dilation * (cell % kernel_size - half)], axis=1)
    table[shifted:] = 0
    return table.astype(np.int64)
