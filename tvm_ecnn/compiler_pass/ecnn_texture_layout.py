"""Keep ecnn ops in ``NCHW4c`` on the Adreno texture path (our stand-in for ``FRelaxInferLayout``).

The texture pipeline's ``ConvertLayout`` packs activations as ``NCHW4c`` around every convolution, but an op
without layout inference is wrapped in ``layout_transform(NCHW4c -> NCHW) -> op -> layout_transform(NCHW ->
NCHW4c)``: two extra kernels and a round trip through global memory per ecnn op. TVM 0.27 has no Python
constructor for ``InferLayoutOutput``, so ``EcnnTextureLayout`` runs right after ``ConvertLayout`` and rewrites
such ops into their ``layout="NCHW4c"`` form on the packed tensor. Chains of ecnn ops stay packed, a residual
operand is taken packed (packed once if it only exists as NCHW), and an unpack remains only where an NCHW
consumer needs one; dead transforms are dropped.

``EcnnTextureScopes`` then lets ``AnnotateCustomMemoryScope`` put the packed operands in textures (see there).
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from relay_ops._registry import attrs_of, call, op_name
from relay_ops.shift_conv2d import split_args

from .relax_dataflow import map_relax_functions

_LAYOUT_TRANSFORM = tvm.ir.Op.get("relax.layout_transform")
_FLOATS = ("float32", "float16")
_ECNN_OPS = {tvm.ir.Op.get(op_name(n)): n for n in ("shift2d", "sparse_shift2d", "active_shift2d", "shift_conv2d")}


def _to_nchw4c(n, c, h, w):
    return n, c // 4, h, w, c % 4


def _to_nchw(n, co, h, w, ci):
    return n, co * 4 + ci, h, w


_PACK, _UNPACK = tirx.IndexMap.from_func(_to_nchw4c), tirx.IndexMap.from_func(_to_nchw)


def _transform_input(value, index_map: tirx.IndexMap) -> relax.Expr | None:
    """The input of ``value`` if it is exactly the layout transform ``index_map`` (no padding)."""
    if not (isinstance(value, relax.Call) and value.op.same_as(_LAYOUT_TRANSFORM)):
        return None
    attrs = value.attrs
    rank = len(index_map.initial_indices)
    if attrs.pad_value is not None or len(value.args[0].ty.shape.values) != rank:
        return None
    return value.args[0] if attrs.index_map.is_equivalent_to(index_map) else None


def _channels(expr) -> int:
    return int(expr.ty.shape.values[1])


def _packable(name: str, node: relax.Call, attrs: dict) -> bool:
    """Float NCHW op whose activations and output have whole channel quads (not the CPU-only in-place sparse
    form; integer tensors have no RGBA float texels)."""
    if attrs.get("layout") != "NCHW" or attrs.get("inplace", False) or node.args[0].ty.dtype not in _FLOATS:
        return False
    if name == "shift_conv2d":
        x, weight, _, _, _ = split_args(node.args, attrs)
        return _channels(x) % 4 == 0 and int(weight.ty.shape.values[0]) % 4 == 0
    return _channels(node.args[0]) % 4 == 0


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.packed: dict[relax.Var, relax.Var] = {}  # NCHW var -> the NCHW4c var holding the same tensor

    def packed_form(self, var) -> relax.Expr | None:
        """``var`` as an NCHW4c value if one exists (an ecnn result, or the source of an unpack)."""
        return self.packed.get(var) if isinstance(var, relax.Var) else None

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if (source := _transform_input(value, _UNPACK)) is not None:
            self.packed[binding.var] = self.visit_expr(source)
        elif (source := _transform_input(value, _PACK)) is not None:
            existing = self.packed_form(source)  # packing what is already packed: reuse it
            if existing is None:
                self.packed[source] = binding.var
            self._bind(binding.var, self.visit_expr(value) if existing is None else existing)
            return None
        elif isinstance(value, relax.Call) and value.op in _ECNN_OPS:
            name = _ECNN_OPS[value.op]
            attrs = attrs_of(value)
            if _packable(name, value, attrs) and self.packed_form(value.args[0]) is not None:
                packed = self.builder_.emit(self._packed_call(name, value, attrs))
                self.packed[binding.var] = packed
                self._bind(binding.var, relax.op.layout_transform(packed, index_map=_to_nchw))
                return None
        return super().visit_var_binding_(binding)

    def _bind(self, var: relax.Var, value: relax.Expr) -> None:
        """Re-bind the original ``var``: later bindings keep referring to it."""
        self.builder_.emit_normalized(relax.VarBinding(var, self.builder_.normalize(value)))

    def _packed_call(self, name: str, node: relax.Call, attrs: dict) -> relax.Call:
        args = [self.visit_expr(a) for a in node.args]
        args[0] = self.packed_form(node.args[0])
        if name == "shift_conv2d" and attrs["has_residual"]:
            residual = node.args[-1]
            args[-1] = self.packed_form(residual)
            if args[-1] is None:
                packed = relax.op.layout_transform(self.visit_expr(residual), index_map=_to_nchw4c)
                args[-1] = self.builder_.emit(packed)
        return call(name, args, {**attrs, "layout": "NCHW4c"})


@tvm.transform.module_pass(opt_level=0, name="EcnnTextureLayout")
class EcnnTextureLayout:
    """Run right after ``ConvertLayout`` (before legalization) in the Adreno texture pipeline."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = map_relax_functions(mod, lambda copy, func: _Rewriter(copy).visit_expr(func))
        return relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))


# AnnotateCustomMemoryScope gives every NCHW4c operand of an op with these attributes a texture scope.
_TEXTURE_OPERANDS = tvm.ir.make_node("relax.attrs.Pool2DAttrs", layout="NCHW4c", out_layout="NCHW4c", pool_size=[1, 1],
                                     strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1], ceil_mode=False,
                                     count_include_pad=False)


def _is_packed_ecnn(func: tirx.PrimFunc) -> bool:
    """A legalized ecnn op with an NCHW4c operand."""
    blocks = []
    tvm_ffi.structural_walk(func.body, ((s_tir.SBlock, blocks.append),))
    packed = any(len(p.ty.shape) == 5 and int(p.ty.shape[4]) == 4 for p in func.params if hasattr(p.ty, "shape"))
    return packed and any("ecnn_op" in b.annotations for b in blocks)


@tvm.transform.module_pass(opt_level=0, name="EcnnTextureScopes")
class EcnnTextureScopes:
    """Run right before ``AnnotateCustomMemoryScope``: let the packed ecnn ops read and write textures.

    That pass gives texture scopes to the operands of elementwise PrimFuncs and of NCHW4c conv2d/pool2d (it
    recognises them by their attributes); a legalized ``shift_conv2d`` is a reduction with neither, so its
    activations would stay buffers and every tensor it shares with a convolution would be copied between a
    buffer and a texture (``R.to_vdevice``). Declaring NCHW4c pooling attributes (``op_attrs``, which only that
    pass reads) makes all its 5-D operands textures: the kernels then ``read_imagef``/``write_imagef``.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.clone()  # `mod[gvar] =` would otherwise rewrite the caller's module
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, tirx.PrimFunc) and _is_packed_ecnn(func):
                mod[gvar] = func.with_attr("op_attrs", _TEXTURE_OPERANDS)
        return mod
