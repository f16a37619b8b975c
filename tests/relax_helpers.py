"""Build, compile and run small Relax modules on the host for operator tests."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

HOST = tvm.target.Target({"kind": "llvm"})


def build_module(fn, input_types):
    """``main(*inputs) = fn(*inputs)`` as an IRModule; ``input_types`` are ``(shape, dtype)``."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(input_types)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(fn(*params))
        bb.emit_func_output(out)
    return bb.get()


def multi_function_module(cases: dict) -> tvm.IRModule:
    """One function per case, ``{name: (make, x, reference)}``: one build and one upload for many kernels."""
    bb = relax.BlockBuilder()
    for name, (make, x, _) in cases.items():
        v = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
        with bb.function(name, [v]):
            with bb.dataflow():
                out = bb.emit_output(make(v))
            bb.emit_func_output(out)
    return bb.get()


def run_module(mod, *arrays, target=HOST):
    ex = tvm.compile(mod, target, relax_pipeline=relax.get_default_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]).numpy()


def run_op(fn, *arrays):
    mod = build_module(fn, [(a.shape, str(a.dtype)) for a in arrays])
    return run_module(mod, *arrays)


def to_nchw4c(a):
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.reshape(n, c // 4, 4, h, w).transpose(0, 1, 3, 4, 2))


def from_nchw4c(a):
    n, co, h, w, ci = a.shape
    return np.ascontiguousarray(a.transpose(0, 1, 4, 2, 3).reshape(n, co * ci, h, w))
