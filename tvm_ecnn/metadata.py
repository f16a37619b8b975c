"""What a compiled ``.so`` takes, carried inside it: input names, shapes and dtypes, and what it was built from.

Why inside: a sidecar file gets lost or mismatched, and RPC uploads one file. The JSON is the return value of an
extra Relax function, ``ecnn_metadata``, compiled into the VM executable: it survives ``export_library``, loading
here and loading on an RPC device, and costs nothing at run time. Files built before it have no such function:
``read`` returns None and callers fall back to what TVM reports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

FUNCTION = "ecnn_metadata"
FORMAT = 1


@dataclass(frozen=True)
class InputSpec:
    """One input: a dim is an int, or ``(min, max)`` for a dynamic one (``max`` None when unbounded)."""

    name: str
    shape: tuple
    dtype: str

    def __str__(self) -> str:
        return f"{self.name}: {shape_text(self.shape)} {self.dtype}"

    def mismatch(self, array: np.ndarray) -> str | None:
        """Why ``array`` cannot be this input, or None."""
        if str(array.dtype) != self.dtype:
            return f"dtype {array.dtype}"
        if len(array.shape) != len(self.shape) or not all(_dim_fits(n, d) for n, d in zip(array.shape, self.shape)):
            return f"shape {tuple(array.shape)}"
        return None

    def example_shape(self) -> tuple[int, ...]:
        """A concrete shape: dynamic dims at their minimum."""
        return tuple(d if isinstance(d, int) else d[0] for d in self.shape)


def _dim_fits(n: int, dim) -> bool:
    if isinstance(dim, int):
        return n == dim
    low, high = dim
    return n >= low and (high is None or n <= high)


def dim_text(dim) -> str:
    return str(dim) if isinstance(dim, int) else f"{dim[0]}..{'' if dim[1] is None else dim[1]}"


def shape_text(shape) -> str:
    dims = [dim_text(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def attach(mod: tvm.IRModule, inputs: list[InputSpec], **built_from) -> tvm.IRModule:
    """A copy of ``mod`` with the ``ecnn_metadata`` function returning the inputs and ``built_from`` as JSON."""
    text = json.dumps({"format": FORMAT, "inputs": [{"name": s.name, "shape": [list(d) if isinstance(d, tuple) else d
                                                                              for d in s.shape], "dtype": s.dtype}
                                                    for s in inputs], **built_from})
    func = relax.Function([], tvm.ir.StringImm(text)).with_attr("global_symbol", FUNCTION)
    mod = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    mod[FUNCTION] = func
    return mod


def read(vm: relax.VirtualMachine) -> dict | None:
    """The metadata of a loaded module (local or remote) with ``inputs`` as ``InputSpec``s; None for older files."""
    try:
        function = vm.module.get_function(FUNCTION, query_imports=False)
    except AttributeError:
        return None
    data = json.loads(str(function()))
    data["inputs"] = [InputSpec(i["name"], tuple(tuple(d) if isinstance(d, list) else d for d in i["shape"]),
                                i["dtype"]) for i in data["inputs"]]
    return data
