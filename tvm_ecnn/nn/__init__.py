"""PyTorch side of the shift family: custom ops (``torch.ops.ecnn.*``) and modules.

Imports torch and numpy only, never tvm, so that training code does not need TVM installed.
"""
from .functional import active_shift2d, shift2d, sparse_shift2d
from .offsets import grouped_shift_offsets
from .shift import ActiveShift2d, Shift2d, SparseShift2d, param_groups, sparse_shift_penalty

__all__ = [
    "Shift2d",
    "ActiveShift2d",
    "SparseShift2d",
    "grouped_shift_offsets",
    "shift2d",
    "active_shift2d",
    "sparse_shift2d",
    "sparse_shift_penalty",
    "param_groups",
]
