"""Compiler passes of tvm-ecnn, one per file, named after what they do.

Torch-side passes take and return a ``torch.export.ExportedProgram`` (they run before conversion,
where values can be evaluated); Relax passes are ``tvm.transform.Pass`` objects.
"""
from .fold_batch_norm import FoldBatchNorm
from .fold_constant_checks import fold_constant_checks
from .fuse_shift_conv import FuseShiftConv
from .recognize_data_movement_shift import recognize_data_movement_shifts
from .recognize_grid_sample_shift import recognize_grid_sample_shift
from .recognize_onehot_dwconv import recognize_onehot_dwconv
from .apply_ecnn_schedules import ApplyEcnnSchedules
from .raster_order_shift_groups import RasterOrderShiftGroups
from .sparse_shift_inplace import SparseShiftInplace
from .ecnn_texture_layout import EcnnTextureLayout, EcnnTextureScopes
