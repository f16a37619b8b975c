"""FoldPackedWeights: the conv micro-kernels' weight packing runs once, at compile time."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import tvm
from relax_helpers import build_module
from tvm import relax

from tvm_ecnn.pipeline import build, relax_pipeline

RNG = np.random.default_rng(5)


def _conv(x_shape, w):
    return build_module(lambda x: relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w), padding=1)),
                        [(x_shape, "float32")])


def _constant_shapes(mod) -> list:
    return [list(c.shape) for c in _constants(mod)]


def test_conv_weight_becomes_a_packed_constant_and_the_kernel_loses_its_packing_loop():
    w = RNG.standard_normal((64, 32, 3, 3)).astype("float32")
    lowered = relax_pipeline("host")(_conv((1, 32, 16, 16), w))
    assert [64 // 16, 32, 3, 3, 16] in _constant_shapes(lowered), "the [O / 16, C, kh, kw, 16] weight is a constant"
    assert [64, 32, 3, 3] not in _constant_shapes(lowered), "the OIHW weight is gone"
    kernels = {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert not [name for name in kernels if "prepack" in name and "prepacked" not in name], "no packing function left"
    (conv,) = [f for name, f in kernels.items() if "conv2d" in name]
    script = conv.script()
    assert "_global" in script and "meta_schedule.layout_rewrite_preproc" not in script, "no packing loop in the kernel"
    packed = np.asarray(w.reshape(4, 16, 32, 3, 3).transpose(0, 2, 3, 4, 1))
    constant = [c for c in _constants(lowered) if list(c.shape) == [4, 32, 3, 3, 16]]
    np.testing.assert_array_equal(constant[0], packed)


def _constants(mod) -> list:
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e.value.numpy())
                                    if isinstance(e, tvm.ir.expr.GenericConst) and hasattr(e.value, "numpy") else None)
    return found


def test_shared_kernel_gets_each_callers_packed_weights():
    """One fused kernel called with two different weights: each call site gets its own packed constant."""
    w1, w2 = (RNG.standard_normal((32, 32, 3, 3)).astype("float32") for _ in range(2))

    def body(x):
        y = relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w1), padding=1))
        return relax.op.nn.relu(relax.op.nn.conv2d(y, relax.const(w2), padding=1))

    x = RNG.standard_normal((1, 32, 12, 12)).astype("float32")
    mod = build_module(body, [(x.shape, "float32")])
    out = relax.VirtualMachine(build(mod), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    t = torch.from_numpy
    ref = torch.relu(F.conv2d(torch.relu(F.conv2d(t(x), t(w1), padding=1)), t(w2), padding=1)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_runtime_weight_is_packed_per_call_and_still_correct():
    """A weight that is a function input cannot be folded: the split-out packing runs per call."""
    x = RNG.standard_normal((1, 8, 10, 10)).astype("float32")
    w = RNG.standard_normal((16, 8, 3, 3)).astype("float32")
    mod = build_module(lambda a, b: relax.op.nn.conv2d(a, b, padding=1), [(x.shape, "float32"), (w.shape, "float32")])
    vm = relax.VirtualMachine(build(mod), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_allclose(out, F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_texture_target_keeps_its_vdevices_when_int8_conv_weights_are_packed():
    """``adreno-texture``: the int8 conv's weights are packed into a constant as on ``adreno``, and the rebuilt module
    keeps the vdevices ``AnnotateCustomMemoryScope`` registered (without them ``CallTIRRewrite``, later in the same
    pipeline, fails with "key is not in Map")."""
    w = RNG.integers(-127, 128, (8, 4, 3, 3)).astype("int8")
    mod = build_module(lambda x: relax.op.nn.conv2d(x, relax.const(w), padding=1, out_dtype="int32"),
                       [((1, 4, 6, 8), "int8")])
    lowered = relax_pipeline("adreno-texture")(mod)
    assert "vdevice" in lowered.global_infos
    assert [8 // 4, 4, 3, 3, 4] in _constant_shapes(lowered), "the [O / 4, C, kh, kw, 4] weight is a constant"
    assert [8, 4, 3, 3] not in _constant_shapes(lowered)
