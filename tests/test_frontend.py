"""from_torch: shift idioms and the ecnn modules become R.ecnn.* ops, fused, and equal torch eager on the host.

Each idiom is written the way people write it. Torch-side recogniser tests run the rewritten
ExportedProgram in torch (fast, exact); end-to-end tests import, compile for the host and
compare with torch eager (relative error <= 1e-5 of the output's magnitude).
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from tvm import relax

from relax_helpers import build_module, run_module
from relay_ops._registry import attrs_of
from tvm_ecnn import models
import relay_ops
from tvm_ecnn.compiler_pass import (
    FoldBatchNorm,
    FuseShiftConv,
    recognize_data_movement_shifts,
    recognize_grid_sample_shift,
    recognize_onehot_dwconv,
)
from tvm_ecnn.compiler_pass.canonical_ops import BILINEAR_SHIFT, INT_SHIFT
from tvm_ecnn.compiler_pass.shift_tables import match_grouped
from tvm_ecnn.frontend import ExportError, UnsupportedOperatorError, from_torch
from tvm_ecnn.nn import ActiveShift2d, Shift2d, SparseShift2d, grouped_shift_offsets

SETTINGS = settings(max_examples=8, deadline=None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- helpers
def ecnn_calls(mod) -> list[tuple[str, dict]]:
    """``(op, attrs)`` of every R.ecnn.* call in ``main``, in order."""
    calls = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "").startswith("relax.ecnn."):
                calls.append((value.op.name.rsplit(".", 1)[-1], attrs_of(value)))
    return calls


def op_counts(mod) -> Counter:
    return Counter(name for name, _ in ecnn_calls(mod))


def assert_matches_torch(mod, model, x):
    out = run_module(mod, x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape
    error = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12)
    assert error <= 1e-5, f"relative error {error:.2e}"


def import_and_check(model, x, **kwargs):
    """Import, compile for the host, compare with torch eager; returns ``(mod, report)``."""
    model.eval()
    mod, report = from_torch(model, (x,), with_report=True, **kwargs)
    assert_matches_torch(mod, model, x)
    return mod, report


def exported(model, x):
    return torch.export.export(model.eval(), (x,)).run_decompositions()


def rewritten_tables(ep, target) -> list:
    return [node.args[1] for node in ep.graph.nodes if node.target is target]


def assert_program_equals_model(ep, model, x):
    """The rewritten program, run by torch, computes what the model does."""
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-5, atol=1e-5)


def randomize_batch_norm(model: nn.Module) -> nn.Module:
    """Non-trivial statistics, so that BatchNorm folding is actually exercised."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=generator) - 0.5)
    return model


class Fn(nn.Module):
    """A module whose forward is a plain function of x (the idioms below)."""

    def __init__(self, fn, *args):
        super().__init__()
        self.fn, self.args = fn, args

    def forward(self, x):
        return self.fn(x, *self.args)


class ThenConv(nn.Module):
    """spatial -> 1x1 conv (-> BN) -> + x -> relu: the block every shift network is made of."""

    def __init__(self, spatial: nn.Module, channels: int, bn: bool = True):
        super().__init__()
        self.spatial = spatial
        self.conv = nn.Conv2d(channels, channels, 1, bias=not bn)
        self.bn = nn.BatchNorm2d(channels) if bn else nn.Identity()

    def forward(self, x):
        return torch.relu(self.bn(self.conv(self.spatial(x))) + x)


# ----------------------------------------------------------------------------- idioms, as people write them
def groups_of(sizes_and_offsets):
    """``[(size, dy, dx)]`` -> ``(channel ranges, [C, 2] table)``."""
    table, ranges, start = [], [], 0
    for size, dy, dx in sizes_and_offsets:
        ranges.append((start, start + size, dy, dx))
        table += [(dy, dx)] * size
        start += size
    return ranges, np.array(table, dtype=np.int64)


def pad_slice_cat(x, ranges, pad):
    """ShiftNet-style: zero-pad once, cut each group's window at its offset, concatenate."""
    h, w = x.shape[2:]
    p = F.pad(x, (pad, pad, pad, pad))
    return torch.cat([p[:, c0:c1, pad + dy : pad + dy + h, pad + dx : pad + dx + w] for c0, c1, dy, dx in ranges], 1)


def slice_assign(x, ranges):
    """ShiftViT/S2-MLP-style: zeros_like + one slice assignment per group."""
    h, w = x.shape[2:]
    out = torch.zeros_like(x)
    for c0, c1, dy, dx in ranges:
        out[:, c0:c1, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
            :, c0:c1, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)
        ]
    return out


def roll_cat(x, ranges):
    """Circular shift per group with torch.roll (roll by s moves content by +s: offset -s)."""
    return torch.cat([torch.roll(x[:, c0:c1], (-dy, -dx), (2, 3)) for c0, c1, dy, dx in ranges], 1)


def shift_feat(x, n_div):
    """ShiftViT's published shift (Wang et al. 2022), verbatim."""
    B, C, H, W = x.shape
    g = C // n_div
    out = torch.zeros_like(x)
    out[:, g * 0 : g * 1, :, :-1] = x[:, g * 0 : g * 1, :, 1:]  # shift left
    out[:, g * 1 : g * 2, :, 1:] = x[:, g * 1 : g * 2, :, :-1]  # shift right
    out[:, g * 2 : g * 3, :-1, :] = x[:, g * 2 : g * 3, 1:, :]  # shift up
    out[:, g * 3 : g * 4, 1:, :] = x[:, g * 3 : g * 4, :-1, :]  # shift down
    out[:, g * 4 :, :, :] = x[:, g * 4 :, :, :]  # no shift
    return out


def per_channel_gather(x, table):
    """Sparse integer shift via index tensors and torch.where (a common FE-Net inference port)."""
    c, h, w = x.shape[1:]
    offsets = torch.as_tensor(table)
    rows = torch.arange(h)[None, :] + offsets[:, :1]
    cols = torch.arange(w)[None, :] + offsets[:, 1:]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    picked = x[:, torch.arange(c)[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return torch.where(inside, picked, 0.0)


def grid_active_shift(x, offsets, align_corners=True):
    """Active shift with F.grid_sample on a per-channel grid (channels folded into the batch)."""
    n, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    px = xs[None] + offsets[:, 1, None, None]
    py = ys[None] + offsets[:, 0, None, None]
    if align_corners:
        grid = torch.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], -1)
    else:
        grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)
    out = F.grid_sample(x.reshape(n * c, 1, h, w), grid.repeat(n, 1, 1, 1), "bilinear", "zeros", align_corners)
    return out.view(n, c, h, w)


class GridActiveShift(nn.Module):
    def __init__(self, channels, align_corners=True):
        super().__init__()
        self.offset = nn.Parameter(torch.empty(channels, 2).uniform_(-1.5, 1.5))
        self.align_corners = align_corners

    def forward(self, x):
        return grid_active_shift(x, self.offset, self.align_corners)


def onehot_dwconv(channels, table, kernel_size=3, dilation=1):
    conv = nn.Conv2d(channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                     groups=channels, bias=False)
    weight = torch.zeros_like(conv.weight)
    half = kernel_size // 2
    for c, (dy, dx) in enumerate(np.asarray(table) // dilation):
        weight[c, 0, dy + half, dx + half] = 1.0
    conv.weight.data.copy_(weight)
    return conv


# ----------------------------------------------------------------------------- torch-side recognisers
group = st.tuples(st.integers(1, 4), st.integers(-2, 2), st.integers(-2, 2))
group_lists = st.lists(group, min_size=1, max_size=7).filter(lambda gs: any(dy or dx for _, dy, dx in gs))


@SETTINGS
@given(groups=group_lists, idiom=st.sampled_from(["pad-slice-cat", "slice-assign"]))
def test_zero_padded_idioms_any_group_sizes_and_order(groups, idiom):
    ranges, table = groups_of(groups)
    model = Fn(pad_slice_cat, ranges, 2) if idiom == "pad-slice-cat" else Fn(slice_assign, ranges)
    x = torch.randn(2, len(table), 6, 5)
    ep = recognize_data_movement_shifts(exported(model, x))
    assert rewritten_tables(ep, INT_SHIFT) == [table.flatten().tolist()]
    assert_program_equals_model(ep, model, x)


@SETTINGS
@given(groups=group_lists)
def test_roll_is_rewritten_only_when_grouped(groups):
    ranges, table = groups_of(groups)
    model = Fn(roll_cat, ranges)
    x = torch.randn(1, len(table), 6, 7)
    ep = recognize_data_movement_shifts(exported(model, x))
    grouped = match_grouped(table, (6, 7)) is not None  # other circular tables stay rolls
    assert rewritten_tables(ep, INT_SHIFT) == ([table.flatten().tolist()] if grouped else [])
    assert_program_equals_model(ep, model, x)


@pytest.mark.parametrize("mapping", ["grouped", "interleaved"])
def test_roll_of_a_grouped_table_is_rewritten(mapping):
    table = grouped_shift_offsets(20, 3, 1, mapping)
    ranges = [(c, c + 1, int(dy), int(dx)) for c, (dy, dx) in enumerate(table)]  # one roll per channel
    model = Fn(roll_cat, ranges)
    x = torch.randn(1, 20, 5, 6)
    ep = recognize_data_movement_shifts(exported(model, x))
    assert rewritten_tables(ep, INT_SHIFT) == [table.flatten().tolist()]
    assert [n.args[2] for n in ep.graph.nodes if n.target is INT_SHIFT] == ["circular"]
    assert_program_equals_model(ep, model, x)


def test_gather_and_where_per_channel_offsets():
    table = np.array([[0, 0], [2, -1], [-3, 0], [0, 0], [1, 1], [0, -2]])
    model = Fn(per_channel_gather, table)
    x = torch.randn(1, 6, 7, 7)
    ep = recognize_data_movement_shifts(exported(model, x))
    assert rewritten_tables(ep, INT_SHIFT) == [table.flatten().tolist()]
    assert_program_equals_model(ep, model, x)


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 1), (3, 2)])
def test_onehot_dwconv_any_taps(kernel_size, dilation):
    rng = np.random.default_rng(kernel_size + dilation)
    half = kernel_size // 2
    table = rng.integers(-half, half + 1, (12, 2)) * dilation
    model = onehot_dwconv(12, table, kernel_size, dilation)
    x = torch.randn(1, 12, 7, 6)
    ep = recognize_onehot_dwconv(exported(model, x))
    assert rewritten_tables(ep, INT_SHIFT) == [table.flatten().tolist()]
    assert_program_equals_model(ep, model, x)


@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_per_channel_translation(align_corners):
    model = GridActiveShift(6, align_corners)
    x = torch.randn(2, 6, 5, 7)
    ep = recognize_grid_sample_shift(exported(model, x))
    (offsets,) = rewritten_tables(ep, BILINEAR_SHIFT)
    np.testing.assert_allclose(np.reshape(offsets, (6, 2)), model.offset.detach().numpy(), atol=1e-5)
    assert_program_equals_model(ep, model, x)


def test_grid_sample_that_is_not_a_translation_stays():
    def zoom(x):
        n, c, h, w = x.shape
        theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]]).repeat(n * c, 1, 1)
        grid = F.affine_grid(theta, (n * c, 1, h, w), align_corners=True)
        return F.grid_sample(x.reshape(n * c, 1, h, w), grid, align_corners=True).view(n, c, h, w)

    model = Fn(zoom)
    x = torch.randn(1, 4, 6, 6)
    assert rewritten_tables(recognize_grid_sample_shift(exported(model, x)), BILINEAR_SHIFT) == []
    mod, _ = import_and_check(model, x)  # the generic grid_sample converter (bug E fixed)
    assert op_counts(mod) == Counter()


# ----------------------------------------------------------------------------- end to end: idioms
def test_pad_slice_cat_becomes_grouped_shift_fused_with_the_conv():
    table = grouped_shift_offsets(18, 3, 1, "grouped")
    ranges = [(2 * g, 2 * g + 2, int(table[2 * g, 0]), int(table[2 * g, 1])) for g in range(9)]
    model = randomize_batch_norm(ThenConv(Fn(pad_slice_cat, ranges, 1), 18))
    mod, report = import_and_check(model, torch.randn(1, 18, 8, 8))
    ((name, attrs),) = ecnn_calls(mod)
    assert name == "shift_conv2d" and attrs["shift"] == "grouped" and attrs["mapping"] == "grouped"
    assert attrs["has_bias"] and attrs["has_residual"] and attrs["activation"] == "relu"
    assert report.counts() == {"pad-slice-cat": 1, "fold-batch-norm": 1, "shift-conv": 1}
    assert [(r.module_path, r.channels_moved) for r in report.rows if r.pattern == "pad-slice-cat"] == [("spatial", 16)]
    assert "spatial" in str(report) and "total 3" in str(report)


def test_shiftvit_slice_assign_becomes_sparse_shift():
    model = ThenConv(Fn(shift_feat, 12), 24)
    mod, report = import_and_check(model, torch.randn(1, 24, 7, 7))
    ((name, attrs),) = ecnn_calls(mod)
    assert (name, attrs["shift"]) == ("shift_conv2d", "sparse")
    (row,) = [r for r in report.rows if r.pattern == "slice-assign"]
    assert (row.channels_moved, row.result) == (8, "sparse_shift2d")


def test_unfused_import_keeps_standalone_shift():
    mod, _ = import_and_check(ThenConv(Fn(shift_feat, 12), 24), torch.randn(1, 24, 7, 7), fuse=False)
    assert op_counts(mod) == Counter({"sparse_shift2d": 1})


def test_roll_idioms_grouped_and_arbitrary():
    table = grouped_shift_offsets(9, 3, 1, "interleaved")
    grouped = [(c, c + 1, int(dy), int(dx)) for c, (dy, dx) in enumerate(table)]
    mod, _ = import_and_check(Fn(roll_cat, grouped), torch.randn(1, 9, 5, 5), fuse=False)
    ((name, attrs),) = ecnn_calls(mod)
    assert (name, attrs["padding_mode"], attrs["mapping"]) == ("shift2d", "circular", "interleaved")
    arbitrary = [(0, 3, 2, 0), (3, 5, 0, -1), (5, 9, 1, 1)]
    mod, _ = import_and_check(Fn(roll_cat, arbitrary), torch.randn(1, 9, 5, 5))
    assert op_counts(mod) == Counter()  # no circular sparse op: converted as rolls, still exact


def test_gather_idiom_and_onehot_dwconv_become_sparse_shifts():
    table = np.array([[0, 0], [2, -1], [-3, 0], [0, 0], [1, 1], [0, -2]])
    mod, _ = import_and_check(ThenConv(Fn(per_channel_gather, table), 6), torch.randn(1, 6, 7, 7))
    assert [(n, a["shift"]) for n, a in ecnn_calls(mod)] == [("shift_conv2d", "sparse")]
    table = np.random.default_rng(0).integers(-1, 2, (10, 2))
    mod, report = import_and_check(ThenConv(onehot_dwconv(10, table), 10), torch.randn(1, 10, 6, 6))
    assert op_counts(mod) == Counter({"shift_conv2d": 1})
    assert report.counts()["onehot-dwconv"] == 1


def test_onehot_dwconv_in_grouped_layout_becomes_shift2d():
    table = grouped_shift_offsets(18, 3, 1, "interleaved")
    mod, _ = import_and_check(onehot_dwconv(18, table), torch.randn(1, 18, 6, 6))
    assert [(n, a["mapping"]) for n, a in ecnn_calls(mod)] == [("shift2d", "interleaved")]


def test_grid_sample_active_shift_fused():
    mod, report = import_and_check(ThenConv(GridActiveShift(8), 8), torch.randn(2, 8, 6, 6))
    assert [(n, a["shift"]) for n, a in ecnn_calls(mod)] == [("shift_conv2d", "active")]
    assert "grid-sample" in report.counts()


# ----------------------------------------------------------------------------- look-alikes stay untouched
def _scaled_reorder(x):
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[2:]
    return torch.cat([p[:, 4:8, 1 : h + 1, 0:w] * 2, p[:, 0:4, 2 : h + 2, 1 : w + 1]], 1)


def _reorder(x):
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[2:]
    return torch.cat([p[:, 4:8, 1 : h + 1, 0:w], p[:, 0:4, 2 : h + 2, 1 : w + 1]], 1)


def _s2mlp_spatial_shift(x):
    """S2-MLP's shift: channels-last, the border row keeps its old value (not zero fill).

    (The paper's code assigns in place, which eager torch evaluates differently from the
    exported, functional program when source and destination overlap; this copy does not.)
    """
    x = x.permute(0, 2, 3, 1)
    out = x.clone()
    b, w, h, c = x.size()
    out[:, 1:, :, : c // 4] = x[:, : w - 1, :, : c // 4]
    out[:, : w - 1, :, c // 4 : c // 2] = x[:, 1:, :, c // 4 : c // 2]
    out[:, :, 1:, c // 2 : c * 3 // 4] = x[:, :, : h - 1, c // 2 : c * 3 // 4]
    out[:, :, : h - 1, 3 * c // 4 :] = x[:, :, 1:, 3 * c // 4 :]
    return out.permute(0, 3, 1, 2)


def _dense_dwconv():
    return nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)


def _onehot_times_two():
    conv = onehot_dwconv(8, np.ones((8, 2), dtype=np.int64))
    conv.weight.data *= 2
    return conv


@pytest.mark.parametrize(
    "model",
    [
        Fn(_scaled_reorder),
        Fn(_reorder),
        Fn(lambda x: torch.roll(x, 1, 1)),  # roll along channels
        Fn(_s2mlp_spatial_shift),
        Fn(lambda x: F.pad(x, (1, 1, 1, 1), mode="replicate")[:, :, 2:, 1:-1]),
        _dense_dwconv(),
        _onehot_times_two(),
    ],
    ids=["pad-slice-cat-scaled", "pad-slice-cat-reordered", "roll-channels", "s2mlp-border", "replicate-pad",
         "dense-dwconv", "onehot-times-2"],
)
def test_look_alikes_are_not_shifts(model):
    mod, report = import_and_check(model, torch.randn(1, 8, 6, 6))
    assert op_counts(mod) == Counter()
    assert report.rows == []


# ----------------------------------------------------------------------------- our modules (torchshifts: test_import_torchshifts.py)
def test_ecnn_modules_become_ecnn_ops_and_fuse():
    spatials = {"shift2d": Shift2d(16, 3, 1, "grouped"), "sparse": SparseShift2d(16), "active": ActiveShift2d(16)}
    for kind, spatial in spatials.items():
        mod, report = import_and_check(ThenConv(spatial, 16, bn=False), torch.randn(1, 16, 6, 6))
        ((name, attrs),) = ecnn_calls(mod)
        assert name == "shift_conv2d" and attrs["has_bias"] and attrs["has_residual"]
        assert report.counts()["shift-conv"] == 1
        unfused, _ = import_and_check(spatial, torch.randn(1, 16, 6, 6), fuse=False)
        assert len(ecnn_calls(unfused)) == 1


def test_active_shift_stride_and_conv_stride_multiply():
    model = nn.Sequential(ActiveShift2d(8, stride=2, padding=1), nn.Conv2d(8, 4, 1, stride=2), nn.ReLU6())
    mod, _ = import_and_check(model, torch.randn(1, 8, 11, 11))
    ((name, attrs),) = ecnn_calls(mod)
    assert (name, attrs["stride"], attrs["padding"], attrs["activation"]) == ("shift_conv2d", 4, 1, "relu6")


def test_fusion_needs_single_use_and_a_pointwise_conv():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift, self.conv = Shift2d(9), nn.Conv2d(9, 9, 1)

        def forward(self, x):
            s = self.shift(x)
            return self.conv(s) + s

    mod, _ = import_and_check(TwoReaders(), torch.randn(1, 9, 5, 5))
    assert op_counts(mod) == Counter({"shift2d": 1})
    mod, _ = import_and_check(nn.Sequential(Shift2d(9), nn.Conv2d(9, 9, 1, bias=False), Fn(lambda c: c + c)),
                              torch.randn(1, 9, 5, 5))
    ((name, attrs),) = ecnn_calls(mod)  # conv output read twice: fused without the add
    assert (name, attrs["has_residual"]) == ("shift_conv2d", False)
    mod, _ = import_and_check(nn.Sequential(Shift2d(9), nn.Conv2d(9, 9, 3, padding=1)), torch.randn(1, 9, 5, 5))
    assert op_counts(mod) == Counter({"shift2d": 1})


def test_relax_passes_work_alone():
    """FoldBatchNorm + FuseShiftConv on a hand-built module: sparse shift -> 1x1 conv -> BN -> + r -> relu6."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 6, 1, 1)).astype("float32")
    gamma, beta, mean = (rng.standard_normal(4).astype("float32") for _ in range(3))
    var = rng.uniform(0.5, 2, 4).astype("float32")
    offsets = rng.integers(-1, 2, (6, 2)).astype("int32")

    def block(x, r):
        s = relay_ops.sparse_shift2d(x, relax.const(offsets))
        y = relax.op.nn.conv2d(s, relax.const(weight), strides=2)
        bn = relax.op.nn.batch_norm(y, *(relax.const(a) for a in (gamma, beta, mean, var)), axis=1, training=False)
        return relax.op.clip(relax.op.add(relax.TupleGetItem(bn, 0), r), 0, 6)

    mod = build_module(block, [((1, 6, 7, 7), "float32"), ((1, 4, 4, 4), "float32")])
    fused = FuseShiftConv()(FoldBatchNorm()(mod))
    ((name, attrs),) = ecnn_calls(fused)
    assert (name, attrs["stride"], attrs["has_bias"], attrs["has_residual"], attrs["activation"]) == (
        "shift_conv2d", 2, True, True, "relu6")
    x, r = rng.standard_normal((1, 6, 7, 7)).astype("float32"), rng.standard_normal((1, 4, 4, 4)).astype("float32")
    np.testing.assert_allclose(run_module(fused, x, r), run_module(mod, x, r), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- BatchNorm folding
@pytest.mark.parametrize("conv_bias", [False, True])
def test_batch_norm_folds_into_conv(conv_bias):
    model = randomize_batch_norm(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(6), nn.ReLU()))
    mod, report = import_and_check(model, torch.randn(1, 4, 5, 5))
    assert "batch_norm" not in mod.script()
    assert [(r.pattern, r.module_path) for r in report.rows] == [("fold-batch-norm", "1")]


# ----------------------------------------------------------------------------- the model zoo
# R.ecnn.shift_conv2d per model: one per shift block (every shift is followed by its 1x1 conv).
ZOO_SHIFT_CONVS = {
    "shiftresnet20": 9,  # 3 stages x 3 blocks
    "shiftresnet56": 27,  # 3 stages x 9 blocks
    "asresnet_w32": 17,  # 1 + 3 + 4 + 6 + 3 blocks
    "asresnet_w50": 17,
    "asresnet_w68": 17,
    "fenet1_0": 10,  # IBSSL blocks; IBPool blocks have no shift
    "fenet1_37": 10,
    "squeezenet1_0": 0,
    "squeezenet1_1": 0,
    "mobilenet_v2": 0,  # depthwise convs with trained (random) kernels are not shifts
    "mobilenet_v2_se": 0,
}


def test_zoo_table_covers_every_model():
    assert sorted(ZOO_SHIFT_CONVS) == models.names()


@pytest.mark.parametrize("name", models.names())
def test_zoo_model_imports_fuses_and_matches_torch(name):
    model = randomize_batch_norm(models.get(name))
    shifts = sum(isinstance(m, (Shift2d, SparseShift2d, ActiveShift2d)) for m in model.modules())
    assert shifts == ZOO_SHIFT_CONVS[name]
    size = 32 if models.default_input_shape(name)[-1] == 32 else 64
    mod, report = import_and_check(model, torch.randn(1, 3, size, size))
    assert op_counts(mod) == (Counter({"shift_conv2d": shifts}) if shifts else Counter())
    assert report.counts().get("shift-conv", 0) == shifts
    print(f"\n{name}: {report.counts()}")


def test_shiftresnet20_import_time():
    model = models.get("shiftresnet20")
    start = time.perf_counter()
    from_torch(model, (torch.randn(1, 3, 32, 32),))
    print(f"\nshiftresnet20 from_torch: {time.perf_counter() - start:.2f} s")


# ----------------------------------------------------------------------------- errors
class _Cumulative(nn.Module):
    def forward(self, x):
        return torch.cummax(x, 1)[0]


class _Digamma(nn.Module):
    def forward(self, x):
        return torch.digamma(x)


def test_unsupported_ops_are_listed_with_module_paths():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(_Cumulative(), nn.ReLU()), _Digamma())
    with pytest.raises(UnsupportedOperatorError) as info:
        from_torch(model, (torch.rand(1, 3, 4, 4) + 1,))
    ops = {(op, path, kind) for op, path, kind, _ in info.value.ops}
    assert ops == {("aten.cummax.default", "1.0", "_Cumulative"), ("aten.digamma.default", "2", "_Digamma")}
    assert "aten.cummax.default  in 1.0 (_Cumulative)" in str(info.value)


def test_export_failure_comes_with_a_hint():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ExportError, match="hint") as info:
        from_torch(DataDependent(), (torch.randn(1, 3, 4, 4),))
    assert "static shapes" in str(info.value) and "strict=False" in str(info.value)


def test_keep_params_as_input_still_recognises_shifts():
    model = ThenConv(Fn(shift_feat, 12), 12).eval()
    mod = from_torch(model, (torch.randn(1, 12, 5, 5),), keep_params_as_input=True)
    assert op_counts(mod) == Counter({"sparse_shift2d": 1})  # no constant weights: no fusion
    assert len(mod["main"].params) > 1
