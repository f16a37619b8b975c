"""Register a Python-defined Relax operator (``relax.ecnn.<name>``) with TVM.

TVM 0.27 lets Python register first-class Relax ops through ``ir.RegisterOp`` plus the
``FInferType``/``FPurity``/``FLegalize`` attributes. Registering under the ``relax.`` prefix makes
the op print as ``R.ecnn.<name>(...)``; the parser shim installed here makes that text parse back.
"""
from __future__ import annotations

import types
from typing import Callable

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.script import parser as _relax_parser

PREFIX = "relax.ecnn."
# ``ToMixedPrecision``'s kFollow: an ecnn op runs in fp16 when its inputs are fp16 (``--dtype fp16``);
# its schedules choose the accumulator (Adreno widens it to fp32).
MIXED_PRECISION_FOLLOW = 1
_parser_namespace = types.SimpleNamespace()


def op_name(name: str) -> str:
    return PREFIX + name


def register_op(
    name: str,
    description: str,
    arguments: list[tuple[str, str]],
    infer_type: Callable,
    legalize: Callable,
) -> tvm.ir.Op:
    """Register ``relax.ecnn.<name>``; idempotent so that re-imports do not fail.

    The TVMScript parser gets a raw constructor for ``R.ecnn.<name>(*args, **attrs)``: printed text
    carries every attribute, including derived ones the Python builders compute.
    """
    full = op_name(name)
    if full not in tvm.ir.Op.list_op_names():
        tvm.ir._ffi_api.RegisterOp(full, description)
        op = tvm.ir.Op.get(full)
        op.set_num_inputs(len(arguments))
        for arg_name, arg_doc in arguments:
            op.add_argument(arg_name, "Tensor", arg_doc)
    op = tvm.ir.Op.get(full)
    for attr, value in (("FInferType", infer_type), ("FPurity", True), ("FLegalize", legalize),
                        ("TMixedPrecisionPolicy", MIXED_PRECISION_FOLLOW)):
        if op.has_attr(attr):
            op.reset_attr(attr)
        op.set_attr(attr, value)
    setattr(_parser_namespace, name, lambda *args, **attrs: call(name, list(args), attrs))
    _relax_parser.ecnn = _parser_namespace
    return op


def call(name: str, args: list, attrs: dict) -> relax.Call:
    return relax.Call(tvm.ir.Op.get(op_name(name)), list(args), attrs=attrs)


def attrs_of(call_node: relax.Call) -> dict:
    """The call's attributes as plain Python values (FFI arrays become lists)."""
    return {
        str(k): list(v) if isinstance(v, tvm_ffi.Array) else v for k, v in call_node.attrs.items()
    }
