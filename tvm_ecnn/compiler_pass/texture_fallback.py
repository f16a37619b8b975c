"""Keep ops whose ``NCHW4c`` layout inference is broken in TVM 0.27 on plain ``NCHW`` buffers (texture path).

The texture pipeline's ``ConvertLayout`` packs every activation a convolution touches as ``NCHW4c`` and asks each
consumer's ``FRelaxInferLayout`` to follow. For ops that normalise or reduce over the channel axis that inference
is wrong and the compile fails inside ``ConvertLayout``:

* ``group_norm`` / ``instance_norm``: "the size of input 1 must be equal to the size of channel_axis" (gamma keeps
  C entries, the packed channel axis has C/4);
* ``layer_norm`` over channels (``F.layer_norm(x, x.shape[1:])``): the same check;
* ``sum`` / ``mean`` / ``variance`` / ... over the channel axis: an index map that cannot be inverted;
* an elementwise op broadcasting a one-channel map over channels (``x * x.sum(1, keepdim=True)``): "Cannot
  broadcast from 5 to 4".

``KeepOffTextures`` runs right before ``ConvertLayout`` and legalizes each such call to its ``call_tir`` (TVM's own
``FLegalize``), which ``ConvertLayout`` treats as opaque: its operands are unpacked to ``NCHW`` and the kernel
reads and writes global buffers. The rest of the model stays packed in textures.

Every op with an 8-bit integer tensor is kept off too (marked ``(int8)``): TVM 0.27's OpenCL codegen only has
64/128-bit texels (``half4``/``float4``), so int8 tensors live in ``char`` buffers on the texture target, as on
``adreno`` (why: docs/int8-quantization.md, Targets). The module records what was kept
off under ``FALLBACK_ATTR`` (op name -> count) for the compile summary.
"""
from __future__ import annotations

from collections import Counter

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

FALLBACK_ATTR = "ecnn_texture_fallback"
INT8 = "int8"  # the mark of an op kept on buffers for its 8-bit integer tensors
_CHANNEL = (1, -3)  # the channel axis of a 4-D NCHW tensor
_NORMS = {"relax.nn.group_norm", "relax.nn.instance_norm"}
_BINARY = {f"relax.{n}" for n in ("add", "subtract", "multiply", "divide", "floor_divide", "power", "maximum",
                                  "minimum", "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
                                  "where")}
_BYTES = ("int8", "uint8")
_REDUCTIONS = {f"relax.{n}" for n in ("sum", "mean", "max", "min", "prod", "variance", "std", "argmax", "argmin")}


def _axes(value) -> list[int] | None:
    if value is None:
        return None
    return [int(a) for a in value] if isinstance(value, (list, tuple, tvm_ffi.Array)) else [int(value)]


def _channels(arg) -> int | None:
    """The channel count of a 4-D tensor of static shape, else None."""
    ty = arg.ty
    if not isinstance(ty, relax.TensorType) or ty.ndim != 4 or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    channels = ty.shape.values[1]
    return int(channels) if isinstance(channels, tvm.tirx.IntImm) else None


def _int8(call: relax.Call) -> bool:
    """``call`` reads or writes an 8-bit integer tensor."""
    tensors = [a.ty for a in call.args if isinstance(a.ty, relax.TensorType)] + [call.ty]
    return any(isinstance(t, relax.TensorType) and t.dtype in _BYTES for t in tensors)


def _keeps_off_textures(call: relax.Call) -> bool:
    """A call on a 4-D tensor that ``ConvertLayout`` cannot move to ``NCHW4c``."""
    if not isinstance(call.op, tvm.ir.Op) or not call.args or call.op.get_attr("FLegalize") is None:
        return False
    name, data = call.op.name, call.args[0]
    channels = {_channels(a) for a in call.args} - {None}
    if name in _BINARY and 1 in channels and len(channels) > 1:
        return True  # a one-channel map broadcast over channels
    if _channels(data) is None:
        return False
    if name in _NORMS:
        return True
    if name == "relax.nn.layer_norm":
        return any(a in _CHANNEL for a in _axes(call.attrs.axes))
    if name in _REDUCTIONS:
        axes = _axes(call.attrs.axis)
        return axes is None or any(a in _CHANNEL for a in axes)
    return False


@mutator
class _KeepOff(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.kept: Counter = Counter()

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.get_attr("FLegalize") is None:
            return call
        name = call.op.name.rsplit(".", 1)[-1]
        if _int8(call):
            self.kept[f"{name} ({INT8})"] += 1
        elif _keeps_off_textures(call):
            self.kept[name] += 1
        else:
            return call
        return call.op.get_attr("FLegalize")(self.builder_, call)


def texture_fallback(mod: tvm.IRModule) -> dict[str, int]:
    """What ``KeepOffTextures`` kept on buffers in ``mod`` (or any module lowered from it): op name -> calls."""
    return {str(k): int(v) for k, v in (mod.attrs or {}).get(FALLBACK_ATTR, {}).items()}


@tvm.transform.module_pass(opt_level=0, name="KeepOffTextures")
class KeepOffTextures:
    """Run right before ``ConvertLayout`` in the texture pipeline."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _KeepOff(mod.clone())
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        out = rewriter.builder_.get()
        if not rewriter.kept:
            return out
        kept = Counter(texture_fallback(mod)) + rewriter.kept
        return out.with_attr(FALLBACK_ATTR, dict(kept))
