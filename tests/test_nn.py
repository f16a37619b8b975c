"""tvm_ecnn.nn: the shift custom ops and modules against the numpy references in reference.py."""
from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    active_shift_offset_grad_ref,
    active_shift_ref,
    circular_shift_ref,
    shift_ref,
)

from tvm_ecnn.nn import (
    ActiveShift2d,
    Shift2d,
    SparseShift2d,
    active_shift2d,
    grouped_shift_offsets,
    param_groups,
    shift2d,
    sparse_shift2d,
    sparse_shift_penalty,
)

FEW = settings(max_examples=25, deadline=None)


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


# --------------------------------------------------------------------------- the references themselves
def test_references_on_hand_computed_values():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(shift_ref(x, [[1, -1]])[0, 0], [[0, 3, 4], [0, 6, 7], [0, 0, 0]])
    np.testing.assert_array_equal(circular_shift_ref(x, [[1, -1]])[0, 0], [[5, 3, 4], [8, 6, 7], [2, 0, 1]])
    # Half a pixel down: the average of a row and the next one, the missing row below counts as 0.
    np.testing.assert_allclose(active_shift_ref(x, [[0.5, 0.0]])[0, 0], [[1.5, 2.5, 3.5], [4.5, 5.5, 6.5], [3, 3.5, 4]])
    # Stride 2, padding 1: H_out = (3 + 2 - 1) // 2 + 1 = 3, output (i, j) samples input (2i - 1, 2j - 1).
    np.testing.assert_array_equal(
        active_shift_ref(x, [[0.0, 0.0]], stride=2, padding=1)[0, 0], [[0, 0, 0], [0, 4, 0], [0, 0, 0]]
    )


def test_references_agree_with_each_other():
    x = _randn(2, 3, 5, 6).numpy()
    offsets = np.array([[2, -1], [-3, 4], [0, 0]])
    padded = np.pad(x, ((0, 0), (0, 0), (3, 3), (4, 4)))
    np.testing.assert_array_equal(circular_shift_ref(padded, offsets)[:, :, 3:-3, 4:-4], shift_ref(x, offsets))
    np.testing.assert_array_equal(circular_shift_ref(x, offsets)[:, 0], np.roll(x[:, 0], (-2, 1), axis=(1, 2)))
    np.testing.assert_allclose(active_shift_ref(x, offsets.astype(float)), shift_ref(x, offsets))


# --------------------------------------------------------------------------- grouped shift
def test_grouped_shift_offsets_follow_the_reference_kernel():
    interleaved = grouped_shift_offsets(20, 3, 1, "interleaved")
    np.testing.assert_array_equal(interleaved[:4], [[-1, -1], [-1, 0], [-1, 1], [0, -1]])
    np.testing.assert_array_equal(interleaved[18:], 0)  # 20 % 9 trailing channels stay put
    grouped = grouped_shift_offsets(18, 3, 2, "grouped")
    np.testing.assert_array_equal(grouped[[0, 1, 2, 17]], [[-2, -2], [-2, -2], [-2, 0], [2, 2]])
    np.testing.assert_array_equal(Shift2d(18, 3, 2, "grouped").offsets().numpy(), grouped)


@pytest.mark.parametrize("mapping", ["interleaved", "grouped"])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("kernel_size, channels", [(1, 3), (3, 4), (3, 20), (5, 27)])
def test_shift2d_matches_reference(mapping, dilation, kernel_size, channels):
    x = _randn(2, channels, 6, 5)
    table = grouped_shift_offsets(channels, kernel_size, dilation, mapping)
    out = shift2d(x, kernel_size, dilation, mapping)
    np.testing.assert_array_equal(out.numpy(), shift_ref(x.numpy(), table))
    np.testing.assert_array_equal(Shift2d(channels, kernel_size, dilation, mapping)(x).numpy(), out.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_shift2d_dtypes(dtype):
    x = torch.randint(-100, 100, (1, 9, 4, 4)).to(dtype)
    out = shift2d(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.numpy(), shift_ref(x.numpy(), grouped_shift_offsets(9)))


def test_shift2d_gradient_is_the_reverse_shift():
    x = _randn(1, 9, 4, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: shift2d(t, 3, 2, "grouped"), (x,))
    grad = _randn(1, 9, 4, 5, seed=1)
    shift2d(x).backward(grad)
    np.testing.assert_array_equal(x.grad.numpy(), shift_ref(grad.numpy(), -grouped_shift_offsets(9)))


# --------------------------------------------------------------------------- active shift
def _offset_values(bound):
    """Fractional, integer-valued, zero and half-pixel offsets, out of the image too (|v| > size)."""
    return st.one_of(
        st.floats(-bound, bound, allow_nan=False, width=32),
        st.integers(-bound, bound).map(float),
        st.sampled_from([0.0, 0.5, -0.5, 1.5, -2.5]),
    )


@st.composite
def _shift_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    offsets = draw(st.lists(st.tuples(_offset_values(h + 3), _offset_values(w + 3)), min_size=c, max_size=c))
    x = _randn(n, c, h, w, seed=draw(st.integers(0, 2**32 - 1)))
    return x, torch.tensor(offsets, dtype=torch.float64)


@FEW
@given(case=_shift_cases(), stride=st.integers(1, 3), padding=st.integers(0, 2))
def test_active_shift2d_matches_reference(case, stride, padding):
    x, offsets = case
    out = active_shift2d(x, offsets, stride, padding)
    np.testing.assert_allclose(out.numpy(), active_shift_ref(x.numpy(), offsets.numpy(), stride, padding), atol=1e-12)


def test_active_shift2d_float32_and_module():
    x = _randn(2, 4, 6, 6, dtype=torch.float32)
    module = ActiveShift2d(4, stride=2, padding=1)
    out = module(x)
    assert out.dtype == torch.float32 and out.shape == (2, 4, 4, 4)
    expected = active_shift_ref(x.numpy(), module.offset.detach().numpy(), 2, 1)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def _fractional_offsets(channels, seed, spread=4.0):
    """Offsets whose fractional part stays in [0.2, 0.8]: away from the kinks at integers."""
    rng = np.random.default_rng(seed)
    whole = np.floor(rng.uniform(-spread, spread, (channels, 2)))
    return torch.from_numpy(whole + rng.uniform(0.2, 0.8, (channels, 2)))


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (3, 2)])
def test_active_shift2d_gradcheck(stride, padding):
    x = _randn(2, 3, 5, 6).requires_grad_()
    offsets = _fractional_offsets(3, seed=stride).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: active_shift2d(a, b, stride, padding), (x, offsets))


def test_active_shift2d_input_grad_is_the_opposite_shift():
    x = _randn(1, 3, 5, 5).requires_grad_()
    offsets = _fractional_offsets(3, seed=4)
    grad = _randn(1, 3, 5, 5, seed=5)
    active_shift2d(x, offsets).backward(grad)
    np.testing.assert_allclose(x.grad.numpy(), active_shift_ref(grad.numpy(), -offsets.numpy()), atol=1e-12)


@pytest.mark.parametrize("call", [active_shift2d, torch.ops.ecnn.active_shift2d], ids=["eager", "custom-op"])
@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 2)])
def test_active_shift2d_offset_grad_at_integers_follows_floor(stride, padding, call):
    x = _randn(2, 4, 5, 5)
    offsets = torch.tensor([[0.0, 0.0], [1.0, -2.0], [-1.0, 3.0], [6.0, 0.5]], requires_grad=True)
    grad = _randn(*active_shift2d(x, offsets, stride, padding).shape, seed=6)
    call(x, offsets, stride, padding).backward(grad)
    expected = active_shift_offset_grad_ref(x.numpy(), offsets.detach().numpy(), grad.numpy(), stride, padding)
    np.testing.assert_allclose(offsets.grad.numpy(), expected, atol=1e-12)


def test_offsets_changed_in_place_are_seen():
    """Sampling windows are cached by the offsets' integer values, never by the tensor: ``.data`` edits count."""
    x = _randn(1, 3, 6, 6)
    offsets = torch.tensor([[0.3, 1.0], [-1.2, 0.0], [2.0, -2.6]])
    for _ in range(2):
        np.testing.assert_allclose(active_shift2d(x, offsets).numpy(), active_shift_ref(x.numpy(), offsets.numpy()),
                                   atol=1e-12)
        np.testing.assert_array_equal(sparse_shift2d(x, offsets).numpy(),
                                      shift_ref(x.numpy(), torch.round(offsets).long().numpy()))
        offsets.data.add_(torch.tensor([[1.0, -1.0]]))


@pytest.mark.parametrize(
    "clone", [lambda m: m, copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))], ids=["same", "deepcopy", "pickle"]
)
def test_normalize_grad_gives_unit_rows(clone):
    plain, normalized = ActiveShift2d(4), clone(ActiveShift2d(4, normalize_grad=True))
    normalized.offset.data.copy_(plain.offset.data)
    x = _randn(2, 4, 5, 5, dtype=torch.float32)
    x[:, 3] = 0  # a channel with zero gradient must stay zero, not NaN
    for module in (plain, normalized):
        module(x).pow(2).sum().backward()
    raw, unit = plain.offset.grad[:3], normalized.offset.grad[:3]
    np.testing.assert_allclose(unit.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit.numpy(), (raw / raw.norm(dim=1, keepdim=True)).numpy())
    assert torch.equal(normalized.offset.grad[3], torch.zeros(2))


# --------------------------------------------------------------------------- sparse shift
@FEW
@given(case=_shift_cases())
def test_sparse_shift2d_matches_reference(case):
    x, offsets = case
    # np.rint rounds half to even, like torch.round: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2.
    np.testing.assert_array_equal(sparse_shift2d(x, offsets).numpy(), shift_ref(x.numpy(), np.rint(offsets.numpy())))


def test_sparse_shift2d_int8():
    x = torch.randint(-100, 100, (1, 3, 4, 4), dtype=torch.int8)
    offsets = torch.tensor([[0.5, 1.5], [-1.2, 0.0], [2.6, -3.0]])
    out = sparse_shift2d(x, offsets)
    assert out.dtype == torch.int8
    np.testing.assert_array_equal(out.numpy(), shift_ref(x.numpy(), [[0, 2], [-1, 0], [3, -3]]))


def test_sparse_shift2d_straight_through_gradients():
    x = _randn(2, 4, 5, 6).requires_grad_()
    offsets = torch.tensor([[0.3, -0.7], [1.5, 2.2], [-2.5, 0.0], [0.49, 7.3]], dtype=torch.float64, requires_grad=True)
    grad = _randn(2, 4, 5, 6, seed=7)
    sparse_shift2d(x, offsets).backward(grad)
    np.testing.assert_array_equal(x.grad.numpy(), shift_ref(grad.numpy(), -np.rint(offsets.detach().numpy())))
    expected = active_shift_offset_grad_ref(x.detach().numpy(), offsets.detach().numpy(), grad.numpy())
    np.testing.assert_allclose(offsets.grad.numpy(), expected, atol=1e-12)
    # The input gradient is exact: rounding does not depend on x.
    assert torch.autograd.gradcheck(lambda t: sparse_shift2d(t, offsets.detach()), (x.detach().requires_grad_(),))


def test_sparse_module_sparsity_and_penalty():
    module = SparseShift2d(4)
    with torch.no_grad():
        module.offset.copy_(torch.tensor([[0.4, -0.4], [0.5, -0.5], [1.5, 0.0], [-2.5, 0.2]]))
    assert torch.equal(module.integer_offsets(), torch.tensor([[0, 0], [0, 0], [2, 0], [-2, 0]]))
    assert module.sparsity() == 0.5
    assert math.isclose(module.l1_penalty().item(), 6.0, rel_tol=1e-6)
    other = SparseShift2d(2)
    model = torch.nn.Sequential(module, torch.nn.Conv2d(4, 2, 1), other)
    total = sparse_shift_penalty(model)
    assert math.isclose(total.item(), module.l1_penalty().item() + other.l1_penalty().item(), rel_tol=1e-6)
    total.backward()
    assert torch.equal(other.offset.grad, other.offset.detach().sign())
    assert sparse_shift_penalty(torch.nn.Conv2d(1, 1, 1)).item() == 0.0


# --------------------------------------------------------------------------- modules
@pytest.mark.parametrize("cls", [ActiveShift2d, SparseShift2d])
def test_offset_init_is_seeded_and_in_unit_box(cls):
    torch.manual_seed(3)
    first = cls(16).offset.detach().clone()
    torch.manual_seed(3)
    assert torch.equal(cls(16).offset.detach(), first)
    assert first.shape == (16, 2) and first.abs().max() <= 1.0


def test_extra_repr():
    assert repr(Shift2d(9, 3, 2, "grouped")) == "Shift2d(9, kernel_size=3, dilation=2, mapping='grouped')"
    assert repr(ActiveShift2d(4, 2, 1, True)) == "ActiveShift2d(4, stride=2, padding=1, normalize_grad=True)"
    assert repr(SparseShift2d(4)) == "SparseShift2d(4)"


def test_param_groups_slow_down_active_shift_offsets():
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), ActiveShift2d(4), SparseShift2d(4))
    rest, shift = param_groups(model, lr=0.1, weight_decay=1e-4)
    assert shift["params"] == [model[1].offset] and shift["weight_decay"] == 0.0
    assert math.isclose(shift["lr"], 0.1 * ActiveShift2d.lr_mult)
    assert len(rest["params"]) == 3 and rest["lr"] == 0.1
    torch.optim.SGD(param_groups(model, 0.1), lr=0.1)


class _ShiftNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(3, 9, 1)
        self.grouped = Shift2d(9)
        self.active = ActiveShift2d(9, stride=2, padding=1, normalize_grad=True)
        self.sparse = SparseShift2d(9)

    def forward(self, x):
        return self.sparse(self.active(self.grouped(self.expand(x))))


def test_export_keeps_one_node_per_module():
    model, x = _ShiftNet().eval(), torch.randn(1, 3, 8, 8)
    exported = torch.export.export(model, (x,))
    calls = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    ops = torch.ops.ecnn
    assert [t for t in calls if t.namespace == "ecnn"] == [
        ops.shift2d.default,
        ops.active_shift2d.default,
        ops.sparse_shift2d.default,
    ]
    torch.testing.assert_close(exported.module()(x), model(x))


def test_export_with_dynamic_batch_and_size():
    model = _ShiftNet().eval()
    dims = {0: torch.export.Dim("n"), 2: torch.export.Dim("h", min=2), 3: torch.export.Dim("w", min=2)}
    exported = torch.export.export(model, (torch.randn(2, 3, 8, 8),), dynamic_shapes={"x": dims})
    x = torch.randn(3, 3, 11, 7)
    torch.testing.assert_close(exported.module()(x), model(x))


# --------------------------------------------------------------------------- validation
_X = torch.zeros(1, 4, 5, 5)
_OFFSETS = torch.zeros(4, 2)
_INVALID = {
    "shift2d 3-D x": (lambda: shift2d(_X[0]), "x"),
    "active 3-D x": (lambda: active_shift2d(_X[0], _OFFSETS), "x"),
    "sparse 3-D x": (lambda: sparse_shift2d(_X[0], _OFFSETS), "x"),
    "active integer x": (lambda: active_shift2d(_X.long(), _OFFSETS), "x"),
    "active offsets channels": (lambda: active_shift2d(_X, torch.zeros(3, 2)), "offsets"),
    "active offsets columns": (lambda: active_shift2d(_X, torch.zeros(4, 3)), "offsets"),
    "sparse offsets 1-D": (lambda: sparse_shift2d(_X, torch.zeros(8)), "offsets"),
    "active NaN offsets": (lambda: active_shift2d(_X, torch.full((4, 2), math.nan)), "offsets"),
    "sparse inf offsets": (lambda: sparse_shift2d(_X, torch.full((4, 2), math.inf)), "offsets"),
    "even kernel_size": (lambda: shift2d(_X, kernel_size=2), "kernel_size"),
    "zero dilation": (lambda: shift2d(_X, dilation=0), "dilation"),
    "unknown mapping": (lambda: shift2d(_X, mapping="diagonal"), "mapping"),
    "stride 0": (lambda: active_shift2d(_X, _OFFSETS, stride=0), "stride"),
    "negative padding": (lambda: active_shift2d(_X, _OFFSETS, padding=-1), "padding"),
    "module even kernel_size": (lambda: Shift2d(4, kernel_size=4), "kernel_size"),
    "module unknown mapping": (lambda: Shift2d(4, mapping="diagonal"), "mapping"),
    "module stride 0": (lambda: ActiveShift2d(4, stride=0), "stride"),
    "module negative padding": (lambda: ActiveShift2d(4, padding=-1), "padding"),
    "module zero channels": (lambda: SparseShift2d(0), "channels"),
    "Shift2d channel mismatch": (lambda: Shift2d(3)(_X), "channels"),
    "ActiveShift2d channel mismatch": (lambda: ActiveShift2d(3)(_X), "channels"),
    "SparseShift2d channel mismatch": (lambda: SparseShift2d(3)(_X), "channels"),
}


@pytest.mark.parametrize("case", list(_INVALID), ids=list(_INVALID))
def test_invalid_arguments_raise_value_error_naming_them(case):
    call, name = _INVALID[case]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_import_does_not_pull_in_tvm():
    code = "import sys, tvm_ecnn.nn; assert 'tvm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- eager fast path, large tensors, compile
def test_large_inputs_take_the_copy_path_and_stay_exact():
    """Above ``_GATHER_MAX`` elements integer shifts copy one slice (grouped) or index set (sparse, planes from
    16x16) per offset."""
    from tvm_ecnn.nn.functional import _GATHER_MAX

    x = _randn(2, 20, 90, 91, dtype=torch.float32)
    assert x.numel() > _GATHER_MAX
    for mapping in ("interleaved", "grouped"):
        np.testing.assert_array_equal(shift2d(x, 5, 2, mapping).numpy(),
                                      shift_ref(x.numpy(), grouped_shift_offsets(20, 5, 2, mapping)))
    offsets = torch.from_numpy(np.random.default_rng(8).integers(-3, 4, (20, 2))).double()
    offsets[3] = torch.tensor([200.0, 0.0])  # entirely outside
    np.testing.assert_array_equal(sparse_shift2d(x, offsets).numpy(), shift_ref(x.numpy(), offsets.numpy()))


_OPS = {
    "shift2d": (lambda x, o: shift2d(x, 3, 1, "interleaved"), lambda x, o: torch.ops.ecnn.shift2d(x, 3, 1, "interleaved")),
    "active": (lambda x, o: active_shift2d(x, o, 2, 1), lambda x, o: torch.ops.ecnn.active_shift2d(x, o, 2, 1)),
    "sparse": (sparse_shift2d, torch.ops.ecnn.sparse_shift2d),
}


@pytest.mark.parametrize("size", [(7, 6), (120, 130)], ids=["autograd-of-kernel", "function"])
@pytest.mark.parametrize("name", list(_OPS))
def test_eager_path_equals_the_custom_op(name, size):
    """Plain eager calls skip the dispatcher (small inputs: autograd through the kernel; large ones: an
    autograd.Function on the op's own formulas): same outputs and gradients as the custom op."""
    fast, op = _OPS[name]
    results = []
    for call in (fast, op):
        x = _randn(2, 9, *size).requires_grad_()
        offsets = _fractional_offsets(9, seed=9).requires_grad_()
        out = call(x, offsets)
        out.backward(_randn(*out.shape, seed=10))
        results.append((out.detach(), x.grad, offsets.grad))
    for a, b in zip(*results):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_torch_compile_runs_the_ops():
    model = _ShiftNet()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()
    assert model.active.offset.grad is not None and model.sparse.offset.grad is not None


def test_opcheck_forward_and_gradient_ops():
    """torch.library.opcheck: the fake kernels match the real ones (shapes, strides), autograd is registered."""
    x = _randn(2, 9, 7, 6).requires_grad_()
    offsets = _fractional_offsets(9, seed=11).requires_grad_()
    ops = torch.ops.ecnn
    cases = [
        (ops.shift2d.default, (x, 3, 1, "interleaved")),
        (ops.active_shift2d.default, (x, offsets, 2, 1)),
        (ops.sparse_shift2d.default, (x, offsets)),
        (ops.reverse_shift2d.default, (x.detach(), 3, 1, "interleaved")),
        (ops.reverse_sparse_shift2d.default, (x.detach(), offsets.detach())),
        (ops.active_shift2d_input_grad.default, (x.detach(), offsets.detach(), _randn(2, 9, 5, 4), 2, 1)),
        (ops.shift_offset_grad.default, (x.detach(), offsets.detach(), _randn(2, 9, 5, 4), 2, 1)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
