"""BatchNormScaleShift: an inference BatchNorm with no conv to fold into (pre-activation) becomes x * s + t."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from relax_helpers import build_module, run_module
from tvm_ecnn.compiler_pass.fold_batch_norm import BatchNormScaleShift
from tvm_ecnn.pipeline import build, relax_pipeline

RNG = np.random.default_rng(0)
EPS = 1e-3


def _params(channels):
    gamma, beta, mean = (RNG.uniform(-1, 1, channels).astype("float32") for _ in range(3))
    return gamma, beta, mean, RNG.uniform(0.5, 2, channels).astype("float32")


def _norm(x, params, axis=1, scale=True, center=True, training=False):
    bn = relax.op.nn.batch_norm(x, *(relax.const(p) for p in params), axis=axis, epsilon=EPS, center=center,
                                scale=scale, training=training)
    return relax.TupleGetItem(bn, 0)


def _reference(x, params, axis=1, scale=True, center=True):
    shape = [1] * x.ndim
    shape[axis] = -1
    gamma, beta, mean, var = (p.astype("float64").reshape(shape) for p in params)
    y = (x - mean) / np.sqrt(var + EPS)
    return y * (gamma if scale else 1) + (beta if center else 0)


@pytest.mark.parametrize("axis, scale, center", [(1, True, True), (-1, False, True), (1, True, False)])
def test_batch_norm_becomes_one_multiply_add(axis, scale, center):
    x = RNG.standard_normal((2, 5, 4, 3)).astype("float32")
    params = _params(x.shape[axis])
    mod = build_module(lambda v: relax.op.nn.relu(_norm(v, params, axis, scale, center)), [(x.shape, "float32")])
    rewritten = BatchNormScaleShift()(mod)
    script = rewritten.script()
    assert "batch_norm" not in script and "R.multiply" in script and "R.add" in script
    np.testing.assert_allclose(run_module(rewritten, x), np.maximum(_reference(x, params, axis, scale, center), 0),
                               rtol=1e-5, atol=1e-5)


def test_training_batch_norm_is_left_alone():
    mod = build_module(lambda v: _norm(v, _params(5), training=True), [((2, 5, 4, 3), "float32")])
    assert "batch_norm" in BatchNormScaleShift()(mod).script()


def test_pipeline_runs_a_pre_activation_block_without_a_batch_norm_kernel():
    """Residual sum -> BN -> ReLU -> 1x1 conv, + the sum (AS-ResNet's block): the BN is one multiply-add kernel."""
    x, skip = RNG.standard_normal((2, 1, 8, 16, 16)).astype("float32")
    weight = RNG.standard_normal((8, 8, 1, 1)).astype("float32")
    params = _params(8)

    def block(u, v):
        total = relax.op.add(u, v)
        pre = relax.op.nn.relu(_norm(total, params))
        return relax.op.add(relax.op.nn.conv2d(pre, relax.const(weight)), total)

    mod = build_module(block, [(x.shape, "float32"), (skip.shape, "float32")])
    kernels = [gv.name_hint for gv, f in relax_pipeline("host")(mod).functions.items()
               if isinstance(f, tvm.tirx.PrimFunc)]
    assert not [k for k in kernels if "batch_norm" in k] and [k for k in kernels if "multiply" in k]
    out = relax.VirtualMachine(build(mod, "host"), tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(skip))
    total = x + skip
    pre = np.maximum(_reference(total, params), 0)
    expected = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0].astype("float64"), pre) + total
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)
