"""Host schedules (tvm_ecnn.pipeline.build): numerics of every scheduled ecnn op, and that the
hand schedule is actually applied."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from hypothesis import given, settings, strategies as st
from tvm import relax

import relay_ops
from reference import active_shift_ref, shift_ref
from relax_helpers import build_module
from tvm_ecnn.nn.offsets import grouped_shift_offsets
from tvm_ecnn.pipeline import build, relax_pipeline


def run_built(mod, *arrays, target="host"):
    vm = relax.VirtualMachine(build(mod, target), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def _reference(kind, x, w, offsets, stride, bias, activation):
    shifted = {
        "none": lambda: x.astype(np.float64),
        "grouped": lambda: shift_ref(x, grouped_shift_offsets(x.shape[1])).astype(np.float64),
        "sparse": lambda: shift_ref(x, offsets).astype(np.float64),
        "active": lambda: active_shift_ref(x, offsets),
    }[kind]()[:, :, ::stride, ::stride]
    y = np.einsum("nchw,oc->nohw", shifted, w[:, :, 0, 0].astype(np.float64)) + bias[None, :, None, None]
    return {"none": y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6)}[activation]


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["none", "grouped", "sparse", "active"]), channels=st.integers(1, 40),
       out_channels=st.sampled_from([1, 3, 8, 16, 40, 64]), size=st.integers(1, 13), stride=st.integers(1, 2),
       activation=st.sampled_from(["none", "relu", "relu6"]))
def test_scheduled_shift_conv2d_matches_numpy(kind, channels, out_channels, size, stride, activation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, size, size + 1)).astype("float32")
    w = rng.standard_normal((out_channels, channels, 1, 1)).astype("float32")
    b = rng.standard_normal(out_channels).astype("float32")
    offsets = {"sparse": rng.integers(-2, 3, (channels, 2)).astype("int32"),
               "active": rng.uniform(-2, 2, (channels, 2)).astype("float32")}.get(kind)
    off = None if offsets is None else relax.const(offsets)
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=off, stride=stride,
                                                        bias=relax.const(b), activation=activation), [(x.shape, "float32")])
    np.testing.assert_allclose(run_built(mod, x), _reference(kind, x, w, offsets, stride, b, activation), rtol=1e-4, atol=1e-4)


def _checked_active_stage(x, w, b, offsets, stride):
    """The active ``shift_conv2d`` built for the host and checked against numpy; its host kernel's schedule and
    input staging block."""
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), "active", offsets=relax.const(offsets),
                                                        stride=stride, bias=relax.const(b)), [(x.shape, "float32")])
    np.testing.assert_allclose(run_built(mod, x), _reference("active", x, w, offsets, stride, b, "none"),
                               rtol=1e-4, atol=1e-4)
    (fused,) = [f for gv, f in relax_pipeline(tvm.target.Target("host"))(mod).functions.items()
                if "shift_conv2d" in gv.name_hint]
    sch = tvm.s_tir.Schedule(fused)
    (stage,) = [blk for blk in _all_blocks(sch) if sch.get(blk).name_hint == "shift_conv2d_input"]
    return sch, stage


@pytest.mark.parametrize("shape, stride", [((1, 5, 7, 56), 1), ((2, 4, 5, 50), 1), ((1, 5, 7, 112), 2),
                                           ((2, 6, 13, 29), 2), ((1, 4, 28, 28), 2)])
def test_active_shift_blended_row_by_row_matches_numpy(shape, stride):
    """Output rows of 48 pixels and wider, and of 14 and wider at stride 2, stage the bilinear shift per output row as
    two 2-tap blends (``bilinear_rows.blend_rows``, taken at every shape; at stride 2 the horizontal one reads
    every other column): offsets beyond the map both ways, negative fractions, odd heights and widths, batch 2."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype("float32")
    w = rng.standard_normal((8, shape[1], 1, 1)).astype("float32")
    b = rng.standard_normal(8).astype("float32")
    offsets = rng.uniform(-2, 2, (shape[1], 2)).astype("float32")
    offsets[0] = (-0.25, -1.75)
    offsets[1] = (shape[2] + 0.5, -shape[3] - 0.5)  # every tap off the map: zeros
    offsets[2] = (-shape[2] + 0.5, shape[3] - 0.5)  # one corner of taps on the map
    sch, stage = _checked_active_stage(x, w, b, offsets, stride)
    assert len(sch.get(stage).iter_vars) == 3, "one block per output row"
    blends = [loop for loop in _loops_in(sch.get(stage).body) if loop.kind == tvm.tirx.ForKind.VECTORIZED]
    assert [int(loop.extent) for loop in blends][-2:] == [shape[3], -(-shape[3] // stride)], "both blends vectorized"
    assert sch.get(sch.get_loops(stage)[0]).kind == tvm.tirx.ForKind.PARALLEL, "the rows' blends run in parallel"


@pytest.mark.parametrize("shape, out_channels", [((2, 16, 7, 7), 32), ((1, 24, 14, 14), 64), ((1, 8, 28, 28), 32),
                                                 ((1, 12, 56, 56), 32)])
def test_active_shift_blended_plane_by_plane_matches_numpy(shape, out_channels):
    """At stride 1 the bilinear shift staged once per call is blended plane by plane (``bilinear_rows.blend_planes``:
    a flat test-free blend over the taps' common interior, the rows and columns off it redone clamped), in parallel
    over the planes: offsets beyond the map both ways, whole, negative and fractional, batch 2."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype("float32")
    w = rng.standard_normal((out_channels, shape[1], 1, 1)).astype("float32")
    b = rng.standard_normal(out_channels).astype("float32")
    offsets = rng.uniform(-2.5, 2.5, (shape[1], 2)).astype("float32")
    offsets[:6] = [(-0.25, -1.75), (shape[2] + 0.5, -shape[3] - 0.5), (-shape[2] + 0.5, shape[3] - 0.5),
                   (1.0, -1.0), (0.0, 0.0), (-shape[2] - 3.0, 0.5)]
    sch, stage = _checked_active_stage(x, w, b, offsets, 1)
    assert len(sch.get(stage).iter_vars) == 2, "one block per plane"
    assert sch.get(sch.get_loops(stage)[0]).kind == tvm.tirx.ForKind.PARALLEL, "the planes blended in parallel"


@pytest.mark.parametrize("shape, mapping", [((2, 20, 3, 32), "interleaved"), ((1, 11, 2, 16), "interleaved"),
                                            ((2, 20, 3, 32), "grouped"), ((1, 29, 4, 8), "grouped")])
def test_grouped_shift_read_in_place_matches_numpy(shape, mapping):
    """The grouped shift read in place (no staging): rows of two pixel vectors, of one, two rows per vector,
    the first and last channels' reads (which would leave the input) tested per lane, unshifted trailing
    channels (their own loop under the raster mapping's per-cell reduction), batch 2."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype("float32")
    w = rng.standard_normal((16, shape[1], 1, 1)).astype("float32")
    b = rng.standard_normal(16).astype("float32")
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), "grouped", mapping=mapping,
                                                        bias=relax.const(b)), [(x.shape, "float32")])
    want = _reference("sparse", x, w, grouped_shift_offsets(shape[1], 3, 1, mapping), 1, b, "none")
    np.testing.assert_allclose(run_built(mod, x), want, rtol=1e-4, atol=1e-4)


def test_raster_grouped_shift_reduces_one_shift_cell_at_a_time():
    """Raster-order groups (what RasterOrderShiftGroups makes of a network's shifts): the reduction runs
    per shift cell (9 cells of 20 // 9 = 2 channels, then the 2 unshifted trailing ones; 29 channels in
    ``test_grouped_shift_read_in_place_matches_numpy`` leave 2 channels past the last run of 3 to a loop of
    their own), the offsets written as the cell's, so that LLVM hoists them and the lane mask out of the loop
    over the cell's channels."""
    w = relax.const(np.ones((16, 20, 1, 1), "float32"))
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, w, "grouped", mapping="grouped"),
                       [((1, 20, 16, 16), "float32")])
    (fused,) = [f for gv, f in relax_pipeline(tvm.target.Target("host"))(mod).functions.items()
                if "shift_conv2d" in gv.name_hint]
    sch = tvm.s_tir.Schedule(fused)
    updates = [b for b in _all_blocks(sch) if sch.get(b).name_hint.startswith("shift_conv2d_update")]
    extents = sorted(tuple(int(sch.get(loop).extent) for loop in sch.get_loops(b)[1:-2]) for b in updates)
    assert extents == [(10, 2)], "runs of one shift cell's channels"


@pytest.mark.parametrize("op", ["shift2d", "sparse_shift2d", "active_shift2d"])
def test_scheduled_standalone_shifts_match_numpy(op):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 19, 9, 17)).astype("float32")
    offsets = {"sparse_shift2d": rng.integers(-3, 4, (19, 2)).astype("int32"),
               "active_shift2d": rng.uniform(-2, 2, (19, 2)).astype("float32")}.get(op)
    make = {"shift2d": lambda v: relax.op.nn.relu(relay_ops.shift2d(relax.op.nn.relu(v))),
            "sparse_shift2d": lambda v: relay_ops.sparse_shift2d(v, relax.const(offsets)),
            "active_shift2d": lambda v: relay_ops.active_shift2d(v, relax.const(offsets))}[op]
    ref = {"shift2d": lambda: np.maximum(shift_ref(np.maximum(x, 0), grouped_shift_offsets(19)), 0),
           "sparse_shift2d": lambda: shift_ref(x, offsets),
           "active_shift2d": lambda: active_shift_ref(x, offsets)}[op]()
    np.testing.assert_allclose(run_built(build_module(make, [(x.shape, "float32")]), x), ref, rtol=1e-5, atol=1e-5)


def test_hand_schedule_is_applied_after_fusion():
    w = relax.const(np.ones((16, 9, 1, 1), "float32"))
    mod = build_module(lambda v: relax.op.nn.relu(relay_ops.shift_conv2d(v, w, "grouped")), [((1, 9, 8, 8), "float32")])
    target = tvm.target.Target("host")
    lowered = relax_pipeline(target)(mod)
    kernels = {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    fused = [f for name, f in kernels.items() if "shift_conv2d" in name]
    assert len(fused) == 1, "shift_conv2d and the trailing relu must be one kernel"
    assert fused[0].attrs["tirx.is_scheduled"]
    assert "T.parallel" in fused[0].script() and "T.vectorized" in fused[0].script()


@pytest.mark.parametrize("kind", ["grouped", "sparse", "active"])
def test_shifted_input_is_staged_as_planes_and_the_weight_packed_at_compile_time(kind):
    """Pixel vectors: the shift is computed out of the FMA loop into NCHW planes, and the weight is packed
    [O / tile, C, 1, 1, tile] at compile time (a constant; the kernel copies no weight panel). Sparse
    (table) offsets are staged once per call, a plane as one contiguous copy (LLVM vectorizes it) whose
    wrapped columns are zeroed after; active shifts per output row, inside the parallel loop. The grouped shift is not staged: its vector of pixels is read in place, a Select (not a per-lane
    if_then_else, which vectorize scalarizes) zeroing the lanes outside the image."""
    rng = np.random.default_rng(4)
    w = relax.const(rng.standard_normal((32, 16, 1, 1)).astype("float32"))
    off = {"sparse": relax.const(rng.integers(-2, 3, (16, 2)).astype("int32")),
           "active": relax.const(rng.uniform(-1, 1, (16, 2)).astype("float32"))}.get(kind)
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, w, kind, offsets=off), [((1, 16, 8, 16), "float32")])
    lowered = relax_pipeline(tvm.target.Target("host"))(mod)
    (fused,) = [f for gv, f in lowered.functions.items() if "shift_conv2d" in gv.name_hint]
    sch = tvm.s_tir.Schedule(fused)
    if kind == "grouped":
        assert not [b for b in _all_blocks(sch) if sch.get(b).name_hint == "shift_conv2d_input"], "not staged"
        (update,) = [b for b in _all_blocks(sch) if sch.get(b).name_hint == "shift_conv2d_update"]
        assert "T.Select(" in sch.get(update).script(), "lanes outside the image zeroed by a Select"
        assert sch.get(sch.get_loops(update)[-1]).kind == tvm.tirx.ForKind.VECTORIZED
    elif kind != "sparse":
        (block,) = [b for b in _all_blocks(sch) if sch.get(b).name_hint == "shift_conv2d_input"]
        loops = sch.get_loops(block)
        assert sch.get(loops[0]).kind == tvm.tirx.ForKind.PARALLEL and len(loops) == 2, "a block per channel and output row"
        assert "T.vectorized" in sch.get(block).script(), "the two blends vectorized"
    else:
        (block,) = [b for b in _all_blocks(sch) if sch.get(b).name_hint == "shift_conv2d_input"]
        assert [int(d) for d in sch.get(block).writes[0].source.shape] == [1, 16, 8, 16], "staged as NCHW planes"
        (copy,) = [loop for loop in _loops_in(sch.get(block).body) if loop.loop_var.name == "p"]
        assert isinstance(copy.body.value, tvm.ir.TensorLoad), "one copy over the flattened plane"
        assert not _guarded_loads(sch.get(block).body), "no bounds tests at all (the wrapped columns zeroed after)"
    _assert_weight_packed_at_compile_time(lowered, fused, [2, 16, 1, 1, 16], [32, 16, 1, 1])


@pytest.mark.parametrize("shape, stride", [((1, 24, 7, 7), 1), ((2, 24, 14, 13), 1), ((1, 24, 9, 9), 2)])
def test_sparse_shift_staged_as_plane_copies_matches_numpy(shape, stride):
    """The sparse shift staged once per call as a shifted copy of each flattened plane (``copy_shifted_planes``):
    offsets past the map (all zero), rows and columns shifted out either way, odd maps, batch 2; stride 2
    keeps the per-row split."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype("float32")
    w = rng.standard_normal((64, shape[1], 1, 1)).astype("float32")
    b = rng.standard_normal(64).astype("float32")
    far = shape[3] + 2
    offsets = np.concatenate([rng.integers(-2, 3, (shape[1] - 4, 2)),
                              [[0, far], [-far, 0], [1, -far], [far, far]]]).astype("int32")
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), "sparse", offsets=relax.const(offsets),
                                                        stride=stride, bias=relax.const(b)), [(x.shape, "float32")])
    want = _reference("sparse", x, w, offsets, stride, b, "none")
    np.testing.assert_allclose(run_built(mod, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind, size, stride, tile", [(kind, 7, 1, 32) for kind in ("none", "grouped", "sparse",
                                                                                    "active")] + [("none", 16, 2, 64)])
def test_shift_conv2d_takes_channel_vectors_where_the_plain_conv_does(kind, size, stride, tile):
    """7x7 maps: a 7-pixel vector would fill under half an AVX-512 register, and the unshifted input read in
    place at stride 2 would gather (a staged shift there takes the GEMM over its planes), so (as the plain 1x1 conv)
    the accumulators are [pixels, tile channels] vectors over the
    shifted input staged once per call as NCHW planes (outside the conv's parallel loop), and the weight is
    packed [O / tile, C, 1, 1, tile] at compile time."""
    rng = np.random.default_rng(5)
    w = relax.const(rng.standard_normal((64, 24, 1, 1)).astype("float32"))
    off = {"sparse": relax.const(rng.integers(-1, 2, (24, 2)).astype("int32")),
           "active": relax.const(rng.uniform(-1, 1, (24, 2)).astype("float32"))}.get(kind)
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, w, kind, offsets=off, stride=stride),
                       [((1, 24, size, size), "float32")])
    lowered = relax_pipeline(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))(mod)
    (fused,) = [f for gv, f in lowered.functions.items() if "shift_conv2d" in gv.name_hint]
    sch = tvm.s_tir.Schedule(fused)
    out = -(-size // stride)
    blocks = {sch.get(b).name_hint: b for b in _all_blocks(sch)}
    assert [int(d) for d in sch.get(blocks["shift_conv2d_update"]).writes[0].source.shape] == [1, out, out, 64]
    inner = sch.get(sch.get_loops(blocks["shift_conv2d_update"])[-1])
    assert inner.kind == tvm.tirx.ForKind.VECTORIZED and int(inner.extent) == tile, "a vector of output channels"
    _assert_weight_packed_at_compile_time(lowered, fused, [64 // tile, 24, 1, 1, tile], [64, 24, 1, 1])
    if kind == "none":
        assert "shift_conv2d_input" not in blocks, "no shift, nothing staged"
    else:
        stage = blocks["shift_conv2d_input"]
        assert [int(d) for d in sch.get(stage).writes[0].source.shape] == [1, 24, out, out], "staged as NCHW planes"
        conv_rows = sch.get(sch.get_loops(blocks["shift_conv2d_update"])[0])
        assert not sch.get(sch.get_loops(stage)[0]).same_as(conv_rows), "staged once per call, not per row"


# (shift, C, O, batch, map, stride): the GEMM's 12 x 2-vector tile over a padded copy of planes of 81, 63, 99
# and 49 pixels (not whole 32-pixel tiles), batch 2, staged stride-2 planes (8x8: whole tiles), and the grouped
# shift on 9x9 (no whole pixel vectors: staged, not read in place)
GEMM_CASES = [("grouped", 64, 36, 1, (9, 9), 1), ("sparse", 48, 24, 2, (13, 17), 2),
              ("active", 50, 36, 1, (9, 11), 1), ("sparse", 64, 24, 1, (7, 7), 1), ("grouped", 24, 48, 1, (16, 16), 2)]


@pytest.mark.parametrize("kind, channels, out_channels, batch, size, stride", GEMM_CASES)
def test_shift_conv2d_as_the_1x1_gemm_matches_numpy(kind, channels, out_channels, batch, size, stride):
    """Where the plain 1x1 conv is a GEMM (``cpu_conv2d_1x1.py``) the shift conv runs the same one over its
    staged planes: bias, residual add and ReLU fused into the epilogue, which stores only the real pixels."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((batch, channels, *size)).astype("float32")
    w = rng.standard_normal((out_channels, channels, 1, 1)).astype("float32")
    b = rng.standard_normal(out_channels).astype("float32")
    out_shape = (batch, out_channels, -(-size[0] // stride), -(-size[1] // stride))
    res = rng.standard_normal(out_shape).astype("float32") * 4
    offsets = {"sparse": rng.integers(-3, 4, (channels, 2)).astype("int32"),
               "active": rng.uniform(-2, 2, (channels, 2)).astype("float32")}.get(kind)
    off = None if offsets is None else relax.const(offsets)
    mod = build_module(lambda v, r: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=off, stride=stride,
                                                           bias=relax.const(b), residual=r, activation="relu"),
                       [(x.shape, "float32"), (out_shape, "float32")])
    sch = tvm.s_tir.Schedule(_shift_conv_kernel(mod, tvm.target.Target("host")))
    (update,) = [b for b in _all_blocks(sch) if sch.get(b).name_hint == "shift_conv2d_update"]
    pixels = out_shape[2] * out_shape[3]
    assert [int(d) for d in sch.get(update).writes[0].source.shape] == [batch, out_channels, -(-pixels // 32) * 32], \
        "accumulators over the flattened plane, padded to whole tiles"
    want = np.maximum(_reference(kind, x, w, offsets, stride, b, "none") + res, 0)
    np.testing.assert_allclose(run_built(mod, x, res), want, rtol=1e-4, atol=1e-4)


def test_shift_conv2d_gemm_reads_planes_staged_once_padded_to_whole_tiles():
    """The sparse shift on 9x9 (81 pixels): staged once per call as NCHW planes, copied padded to whole tiles of
    12 channels x 2 vectors of 16 pixels (96), the weight packed [O / 12, C, 1, 1, 12] at compile time."""
    rng = np.random.default_rng(9)
    w = relax.const(rng.standard_normal((36, 64, 1, 1)).astype("float32"))
    off = relax.const(rng.integers(-2, 3, (64, 2)).astype("int32"))
    mod = build_module(lambda v: relay_ops.shift_conv2d(v, w, "sparse", offsets=off), [((1, 64, 9, 9), "float32")])
    lowered = relax_pipeline(tvm.target.Target({"kind": "llvm", "mcpu": "znver5"}))(mod)
    fused = _shift_conv_kernel(mod, tvm.target.Target({"kind": "llvm", "mcpu": "znver5"}))
    sch = tvm.s_tir.Schedule(fused)
    blocks = {sch.get(b).name_hint: b for b in _all_blocks(sch)}
    stage, update = blocks["shift_conv2d_input"], blocks["shift_conv2d_update"]
    planes = sch.get(stage).writes[0].source
    assert [int(d) for d in planes.shape] == [1, 64, 9, 9], "staged as NCHW planes"
    padded = [sch.get(b) for b in sch.get_producers(update) if sch.get(b).writes[0].source.shape[-1] == 96]
    assert any(r.source.same_as(planes) for b in padded for r in b.reads), "the GEMM reads a padded copy of them"
    loops = [sch.get(loop) for loop in sch.get_loops(update)]
    assert loops[0].kind == tvm.tirx.ForKind.PARALLEL
    assert not sch.get(sch.get_loops(stage)[0]).same_as(loops[0]), "staged once per call, not per task"
    assert [(int(loop.extent), loop.kind) for loop in loops[-3:]] == [
        (12, tvm.tirx.ForKind.UNROLLED), (2, tvm.tirx.ForKind.UNROLLED), (16, tvm.tirx.ForKind.VECTORIZED)]
    _assert_weight_packed_at_compile_time(lowered, fused, [3, 64, 1, 1, 12], [36, 64, 1, 1])


def _shift_conv_kernel(mod, target):
    (fused,) = [f for gv, f in relax_pipeline(target)(mod).functions.items() if "shift_conv2d" in gv.name_hint]
    return fused


def _assert_weight_packed_at_compile_time(lowered, kernel, packed, weight) -> None:
    """The weight is a ``packed``-shaped constant of the lowered module, the kernel neither copies nor packs it."""
    constants = []
    relax.analysis.post_order_visit(lowered["main"], lambda e: constants.append(list(e.value.shape))
                                    if isinstance(e, tvm.ir.expr.GenericConst) and hasattr(e.value, "shape") else None)
    assert packed in constants and weight not in constants, "the weight is a packed constant"
    assert "shift_conv2d_weight" not in kernel.script() and "layout_rewrite_preproc" not in kernel.script()


def _guarded_loads(expr) -> list:
    """``if_then_else(test, load, 0)`` calls: a zero-padding test per element (index arithmetic may branch)."""
    found = []
    tvm_ffi.structural_walk(expr, (tvm.ir.Call, lambda c: found.append(c) if c.op.name == "prim.if_then_else"
                                   and isinstance(c.args[1], tvm.ir.TensorLoad) else None))
    return found


def _loops_in(stmt) -> list:
    found = []
    tvm_ffi.structural_walk(stmt, (tvm.tirx.For, found.append))
    return found


def _all_blocks(sch):
    found, todo = [], [sch.get_sblock("root")]
    while todo:
        children = sch.get_child_blocks(todo.pop())
        found += children
        todo += children
    return found


def test_ops_compile_for_arm_and_adreno_without_host_fallback():
    rng = np.random.default_rng(2)
    w = relax.const(rng.standard_normal((16, 18, 1, 1)).astype("float32"))
    act = relax.const(rng.uniform(-1, 1, (18, 2)).astype("float32"))
    sparse = relax.const(rng.integers(-1, 2, (18, 2)).astype("int32"))

    def body(v):
        y = relay_ops.active_shift2d(relay_ops.shift2d(v), act)
        return relay_ops.shift_conv2d(relay_ops.sparse_shift2d(y, sparse), w, "sparse", offsets=sparse, activation="relu")

    mod = build_module(body, [((1, 18, 16, 16), "float32")])
    for name in ("arm", "aarch64-linux"):
        kinds = [m.kind for m in build(mod, name).mod._collect_from_import_tree(lambda m: True)]
        assert kinds == ["relax.VMExecutable", "llvm"], name
    for name in ("adreno", "adreno-texture"):
        ex = build(mod, name)
        cl = [m for m in ex.mod._collect_from_import_tree(lambda m: m.kind == "opencl")]
        assert len(cl) == 1, f"{name}: the ecnn kernels must be OpenCL, not host code"
        source = cl[0].inspect_source()
        for op in ("shift2d", "active_shift2d", "sparse_shift2d", "shift_conv2d"):
            assert f"ecnn_{op}" in source, (name, op)


def test_pipeline_runs_single_use_sparse_shifts_in_place():
    offsets = np.zeros((8, 2), "int32")
    offsets[2] = [1, -1]
    off = relax.const(offsets)
    # relu's output dies in the shift -> in place; the parameter x itself must never be mutated
    mod = build_module(lambda v: relay_ops.sparse_shift2d(relax.op.nn.relu(v), off), [((1, 8, 5, 5), "float32")])
    lowered = relax_pipeline(tvm.target.Target("host"))(mod)
    assert "sparse_shift2d_inplace" in " ".join(gv.name_hint for gv in lowered.functions)
    x = np.random.default_rng(3).standard_normal((1, 8, 5, 5)).astype("float32")
    x_before = x.copy()
    np.testing.assert_array_equal(run_built(mod, x), shift_ref(np.maximum(x, 0), offsets))
    np.testing.assert_array_equal(x, x_before)
    direct = build_module(lambda v: relay_ops.sparse_shift2d(v, off), [((1, 8, 5, 5), "float32")])
    assert "inplace" not in " ".join(gv.name_hint for gv in relax_pipeline(tvm.target.Target("host"))(direct).functions)
