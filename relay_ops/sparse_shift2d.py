"""``relax.ecnn.sparse_shift2d``: per-channel integer shifts (Chen et al. 2019, FE-Net).

Most channels of a trained sparse shift layer do not move. Two lowerings:

* out of place (default): a gather through the ``[C, 2]`` table, like any shift;
* in place (``inplace=True``, set by ``tvm_ecnn``'s pipeline when the input dies here and the
  offsets are constant): only the moved channels are rewritten, in a loop order that never reads
  an element after overwriting it, so channels with offset (0, 0) cost no data movement at all.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from . import _checks, quant, shift_index
from ._registry import attrs_of, call, register_op

NAME = "sparse_shift2d"
OFFSET_DTYPES = ("int32", "int64")


def sparse_shift2d(x, offsets, layout="NCHW", inplace=False, zero_point=0):
    """``offsets``: integer ``[C, 2]`` of ``(dy, dx)`` (already rounded, within int32).

    int8 ``x`` with ``zero_point``: exact, the border shifts in ``zero_point`` (the real 0).
    """
    _checks.choice(NAME, "layout", layout, shift_index.LAYOUTS)
    quant.zero_point(NAME, "zero_point", zero_point)
    attrs = dict(layout=layout, inplace=bool(inplace))
    if zero_point:  # only when set: float modules print (and compare) as before
        attrs["zero_point"] = zero_point
    return call(NAME, [x, offsets], attrs)


def _infer(call_node, _bb):
    attrs = attrs_of(call_node)
    x, offsets = call_node.args
    _, c, _, _ = _checks.activation_shape(NAME, "x", x, attrs["layout"])
    _checks.offsets_table(NAME, offsets, c, OFFSET_DTYPES)
    _checks.int32_offsets(NAME, offsets)
    _checks.quantized_only(NAME, x.ty.dtype, attrs)
    if attrs["inplace"] and (attrs["layout"] != "NCHW" or constant_offsets(offsets) is None):
        _checks.fail(NAME, "inplace", "needs NCHW layout and a constant offsets table")
    return relax.TensorType(x.ty.shape, x.ty.dtype)


constant_offsets = _checks.constant_value


def compute(x, offsets, layout, zero_point=0):
    def f(n, c, h, w):
        dy, dx = shift_index.table_offsets(offsets, c)
        return shift_index.shifted_load(x, n, c, h + dy, w + dx, layout, fill=zero_point)

    if layout == "NCHW4c":
        return te.compute(x.shape, lambda n, co, h, w, ci: f(n, co * 4 + ci, h, w), name=NAME, attrs={"ecnn_op": NAME})
    return te.compute(x.shape, f, name=NAME, attrs={"ecnn_op": NAME})


_INPLACE_TEMPLATE = """
@T.prim_func(private=True)
def ecnn_sparse_shift2d_inplace(x: T.Buffer(({N}, {C}, {H}, {W}), "{dtype}"),
                                chan: T.Buffer(({M},), "int32"), off: T.Buffer(({M}, 2), "int32")):
    T.func_attr({{"tirx.noalias": True, "tirx.is_scheduled": True, "ecnn.op": "sparse_shift2d_inplace"}})
    for n, m in T.grid({N}, {M}):
        for i, j in T.grid({H}, {W}):
            h = T.if_then_else(off[m, 0] > 0, i, {H} - 1 - i)
            w = T.if_then_else(off[m, 1] > 0, j, {W} - 1 - j)
            hs = h + off[m, 0]
            ws = w + off[m, 1]
            x[n, chan[m], h, w] = T.if_then_else(
                0 <= hs and hs < {H} and 0 <= ws and ws < {W}, x[n, chan[m], hs, ws], T.Cast("{dtype}", {fill}))
"""


def inplace_prim_func(shape, dtype: str, moved: int, fill: int = 0) -> tvm.tirx.PrimFunc:
    """Serial per (n, moved channel): rows run towards the read side, so reads precede writes."""
    n, c, h, w = shape
    source = _INPLACE_TEMPLATE.format(N=n, C=c, H=h, W=w, M=moved, dtype=dtype, fill=fill)
    return tvm.script.from_source(source)


def _legalize(bb, call_node):
    x, offsets = call_node.args
    attrs = attrs_of(call_node)
    fill = attrs.get("zero_point", 0)
    if not attrs["inplace"]:
        return bb.call_te(compute, x, offsets, layout=attrs["layout"], zero_point=fill, primfunc_name_hint="ecnn_" + NAME)
    shape = [int(d) for d in x.ty.shape.values]
    # an offset beyond the image empties the channel whatever its size: clamp so h + offset cannot wrap int32
    size = max(shape[2:])
    table = np.clip(constant_offsets(offsets).astype("int64"), -size, size).astype("int32")
    moved = np.flatnonzero(np.any(table != 0, axis=1)).astype("int32")
    if moved.size == 0:
        return x
    func = bb.add_func(inplace_prim_func(shape, x.ty.dtype, moved.size, fill), "ecnn_sparse_shift2d_inplace")
    return relax.call_tir_inplace(
        func, [x, relax.const(moved), relax.const(table[moved])], inplace_indices=[0], out_ty=x.ty
    )


OP = register_op(
    NAME,
    "Sparse integer shift (Chen et al. 2019): out[n,c,h,w] = x[n,c,h+dy_c,w+dx_c], zero padding",
    [("x", "NCHW (or NCHW4c) activation"), ("offsets", "integer [C, 2] table of (dy, dx)")],
    _infer,
    _legalize,
)
