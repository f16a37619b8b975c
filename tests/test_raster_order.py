"""RasterOrderShiftGroups: interleaved shift groups become contiguous, numerics unchanged."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

import relay_ops
from relax_helpers import build_module, run_module
from tvm_ecnn.compiler_pass.raster_order_shift_groups import RasterOrderShiftGroups, interleaved_to_grouped
from tvm_ecnn.nn.offsets import grouped_shift_offsets


def test_permutation_maps_interleaved_groups_to_contiguous_blocks():
    for channels in (9, 20, 37):
        perm = interleaved_to_grouped(channels, 3)
        np.testing.assert_array_equal(grouped_shift_offsets(channels, mapping="interleaved")[perm],
                                      grouped_shift_offsets(channels, mapping="grouped"))


def test_pass_folds_permutation_into_producer_and_consumer():
    rng = np.random.default_rng(0)
    w0 = relax.const(rng.standard_normal((20, 8, 1, 1)).astype("float32"))
    b0 = relax.const(rng.standard_normal((1, 20, 1, 1)).astype("float32"))
    w1 = relax.const(rng.standard_normal((12, 20, 1, 1)).astype("float32"))

    def body(v):
        y = relax.op.nn.relu(relax.op.add(relax.op.nn.conv2d(v, w0), b0))
        return relay_ops.shift_conv2d(y, w1, "grouped", mapping="interleaved", activation="relu")

    mod = build_module(body, [((1, 8, 7, 7), "float32")])
    rewritten = RasterOrderShiftGroups()(mod)
    assert 'mapping="grouped"' in rewritten.script() and 'mapping="interleaved"' not in rewritten.script()
    x = rng.standard_normal((1, 8, 7, 7)).astype("float32")
    np.testing.assert_allclose(run_module(rewritten, x), run_module(mod, x), rtol=1e-5, atol=1e-5)


def test_pass_leaves_shared_or_non_constant_producers_alone():
    rng = np.random.default_rng(1)
    w1 = relax.const(rng.standard_normal((4, 9, 1, 1)).astype("float32"))
    # the shift reads a function parameter: there is no producer to permute
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, w1, "grouped"), [((1, 9, 5, 5), "float32")])
    tvm.ir.assert_structural_equal(RasterOrderShiftGroups()(mod), mod)
    w0 = relax.const(rng.standard_normal((9, 9, 1, 1)).astype("float32"))

    def shared(v):
        y = relax.op.nn.conv2d(v, w0)
        return relax.op.add(relay_ops.shift_conv2d(y, w1, "grouped"), relax.op.sum(y, axis=[1], keepdims=True))

    mod = build_module(shared, [((1, 9, 5, 5), "float32")])
    tvm.ir.assert_structural_equal(RasterOrderShiftGroups()(mod), mod)
