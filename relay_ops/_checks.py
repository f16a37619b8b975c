"""Validation shared by the ecnn operators: every error names the op and the argument."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .shift_index import LAYOUTS


def fail(op: str, arg: str, message: str):
    raise ValueError(f"relax.ecnn.{op}: argument '{arg}': {message}")


def tensor_type(op: str, arg: str, expr) -> relax.TensorType:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType):
        fail(op, arg, f"expected a tensor, got {ty}")
    return ty


def static_shape(op: str, arg: str, ty: relax.TensorType) -> list[int]:
    if ty.shape is None or not all(hasattr(d, "value") for d in ty.shape.values):
        fail(op, arg, f"needs a static shape, got {ty.shape}")
    return [int(d.value) for d in ty.shape.values]


def activation_shape(op: str, arg: str, expr, layout: str) -> list[int]:
    """Logical ``[N, C, H, W]`` of an activation in ``layout`` (``NCHW`` or ``NCHW4c``)."""
    if layout not in LAYOUTS:
        fail(op, "layout", f"must be one of {LAYOUTS}, got {layout!r}")
    shape = static_shape(op, arg, tensor_type(op, arg, expr))
    if 0 in shape:
        fail(op, arg, f"has an empty dimension (zero channels or pixels): shape {shape}")
    if layout == "NCHW4c":
        if len(shape) != 5 or shape[4] != 4:
            fail(op, arg, f"must be 5-D NCHW4c [N, C/4, H, W, 4], got shape {shape}")
        return [shape[0], shape[1] * 4, shape[2], shape[3]]
    if len(shape) != 4:
        fail(op, arg, f"must be 4-D NCHW, got shape {shape}")
    return shape


def physical_shape(logical: list[int], layout: str) -> list[int]:
    n, c, h, w = logical
    return [n, c // 4, h, w, 4] if layout == "NCHW4c" else [n, c, h, w]


def offsets_table(op: str, expr, num_channels: int, dtypes: tuple[str, ...]) -> str:
    """Check an offsets operand is ``[C, 2]`` of an allowed dtype; returns the dtype."""
    ty = tensor_type(op, "offsets", expr)
    shape = static_shape(op, "offsets", ty)
    if shape != [num_channels, 2]:
        fail(op, "offsets", f"must have shape [C, 2] = [{num_channels}, 2], got {shape}")
    if ty.dtype not in dtypes:
        fail(op, "offsets", f"dtype must be one of {dtypes}, got {ty.dtype}")
    return ty.dtype


def constant_value(expr) -> np.ndarray | None:
    """The value of a constant operand, ``None`` for a runtime tensor (checked only when known)."""
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        return None
    return expr.value.numpy()


def finite_offsets(op: str, expr, bound: float | None = None) -> None:
    """A constant float offsets table must be finite (and below ``bound`` in magnitude)."""
    table = constant_value(expr)
    if table is None:
        return
    table = table.astype("float64")
    if not np.isfinite(table).all():
        fail(op, "offsets", f"must be finite, got {table[~np.isfinite(table)][:4].tolist()} (NaN/inf offsets)")
    if bound is not None and (np.abs(table) >= bound).any():
        fail(op, "offsets", f"int8 offsets must satisfy |offset| < {bound}, got max {np.abs(table).max()}")


def int32_offsets(op: str, expr) -> None:
    """A constant integer offsets table must fit int32, the offsets' documented range (the in-place kernel
    indexes in int32: an int64 table would wrap there)."""
    table = constant_value(expr)
    limit = np.iinfo("int32").max
    if table is not None and table.size and np.abs(table.astype("int64")).max() > limit:
        fail(op, "offsets", f"must fit int32 (|offset| <= {limit}), got {table.flat[np.abs(table).argmax()]}")


def quantized_only(op: str, dtype: str, attrs: dict) -> None:
    """A zero point belongs to int8 tensors only."""
    if attrs.get("zero_point", 0) and dtype != "int8":
        fail(op, "zero_point", f"a zero point needs an int8 tensor, got {dtype}")


def positive_int(op: str, arg: str, value, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        fail(op, arg, f"must be an integer >= {minimum}, got {value!r}")
    return value


def choice(op: str, arg: str, value, options: tuple) -> str:
    if value not in options:
        fail(op, arg, f"must be one of {options}, got {value!r}")
    return value
