"""Graph-level (Relax) operators of the shift family.

Relay no longer exists in TVM >= 0.20; the package keeps the name of the user's design card but
holds **Relax** operators: ``relax.ecnn.shift2d``, ``active_shift2d``, ``sparse_shift2d`` and
``shift_conv2d`` (any shift fused into the following 1x1 convolution). Importing this package
registers them with TVM (type inference, purity, legalization to TE) and lets TVMScript print and
parse them as ``R.ecnn.<name>(...)``.
"""
from .active_shift2d import active_shift2d
from .shift2d import shift2d
from .shift_conv2d import shift_conv2d
from .sparse_shift2d import sparse_shift2d

__all__ = ["active_shift2d", "shift2d", "shift_conv2d", "sparse_shift2d"]
