"""Models using the third-party torchshifts package import, compile and match eager on the host.

Runs against the real package when it is installed (it is not on PyPI: build it from
github.com/DeadAt0m/ActiveSparseShifts-PyTorch), else against ``torchshifts_reference``'s stand-in,
registered the way the package registers itself (a composite op that reads tensor data, which
``torch.export`` cannot trace by itself). The 2.x schema (no ``borders``) runs in a subprocess:
one process can hold only one ``torchshifts::shift2d``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from import_helpers import assert_host_matches_eager
from torchshifts_reference import Shift2d
from tvm_ecnn.frontend import UnsupportedOperatorError, from_torch
from tvm_ecnn.nn import grouped_shift_offsets

X = torch.randn(2, 9, 7, 6, generator=torch.Generator().manual_seed(0))
SPARSE = torch.tensor([[0.4, 1.6], [-2.5, 0.0], [1.5, -1.2]] * 3)  # round half to even: -2.5 -> -2, 1.5 -> 2


def ecnn_ops(mod) -> Counter:
    script = mod.script()
    return Counter(op for op in ("sparse_shift2d", "active_shift2d", "shift2d", "shift_conv2d") if f"R.ecnn.{op}(" in script)


def test_package_op_cannot_be_traced_by_torch_alone():
    """Why from_torch routes it: torch.export of the bare composite reads data and fails."""
    with pytest.raises(Exception):
        torch.export.export(Shift2d(SPARSE), (X,), strict=False).run_decompositions()


@pytest.mark.parametrize(
    "weights, active, borders, expected",
    [
        (SPARSE, False, None, "sparse_shift2d"),
        (SPARSE * 0.7, True, None, "active_shift2d"),  # positive and negative fractions
        (SPARSE, False, [[1, 0], [0, 2]], "sparse_shift2d"),  # output cropped as check_borders says
        (SPARSE * 0.7, True, [[0, 1], [1, 1]], "active_shift2d"),
    ],
    ids=["sparse", "active", "sparse-borders", "active-borders"],
)
def test_torchshifts_shift2d_matches_eager(weights, active, borders, expected):
    mod, report = assert_host_matches_eager(Shift2d(weights, active=active, borders=borders), X, fuse=False)
    assert ecnn_ops(mod) == Counter({expected: 1})
    assert [r.pattern for r in report.rows] == ["torchshifts::shift2d"]


def test_torchshifts_block_fuses_with_the_conv():
    model = nn.Sequential(Shift2d(SPARSE), nn.Conv2d(9, 5, 1), nn.ReLU())
    mod, _ = assert_host_matches_eager(model, X)
    assert ecnn_ops(mod) == Counter({"shift_conv2d": 1})


def test_torchshifts_periodic_grouped_table_is_a_circular_shift2d():
    periodic = -torch.as_tensor(grouped_shift_offsets(9), dtype=torch.float32)
    mod, _ = assert_host_matches_eager(Shift2d(periodic, padding=2), X, fuse=False)
    assert "shift2d" in ecnn_ops(mod) and 'padding_mode="circular"' in mod.script()


@pytest.mark.parametrize("padding, name", [(1, "border"), (3, "reflect"), (4, "symmetric")])
def test_unsupported_padding_modes_are_named(padding, name):
    with pytest.raises(UnsupportedOperatorError, match=f"padding_mode {padding} \\({name}"):
        from_torch(Shift2d(SPARSE, padding=padding), (X,))


def test_non_finite_weights_name_the_layer():
    model = nn.Sequential(nn.Identity(), Shift2d(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]] + [[0.0, 0.0]] * 7)))
    with pytest.raises(ValueError, match=r"^1 \(Shift2d\): weights of channel 1 \(dy\) is nan"):
        from_torch(model, (X,))


LEGACY = """
import sys, torch
sys.path[:0] = {paths!r}
lib = torch.library.Library("torchshifts", "DEF")
lib.define("shift2d(Tensor input, Tensor weights, int padding_mode, bool active_flag) -> Tensor")
def shift2d(input, weights, padding_mode, active_flag):  # 2.x: the composite runs the CPU kernel itself
    h, w = input.shape[2:]
    bounds = torch.tensor([0, h, 0, w, 0, 1])
    bounds.tolist()  # a data read, like the C++ kernel's
    return _shift2d_forward(input, weights, bounds, None, padding_mode, active_flag)
lib.impl("shift2d", shift2d, "CompositeImplicitAutograd")
sys.modules["torchshifts"] = None  # this process emulates 2.x even where 3.x is installed
from import_helpers import assert_host_matches_eager
from torchshifts_reference import _shift2d_forward
class Legacy(torch.nn.Module):
    def __init__(self, weights, active):
        super().__init__()
        self.weight, self.active = torch.nn.Parameter(weights), active
    def forward(self, x):
        return torch.ops.torchshifts.shift2d(x, self.weight, 0, self.active)
x = torch.randn(1, 6, 5, 5)
weights = torch.tensor([[0.4, 1.6], [-2.5, 0.0], [1.5, -1.2]] * 2)
for active in (False, True):
    mod, report = assert_host_matches_eager(Legacy(weights * (0.7 if active else 1), active), x, fuse=False)
    assert [r.pattern for r in report.rows] == ["torchshifts::shift2d"]
print("legacy ok")
"""


def test_torchshifts_2x_schema_without_borders():
    tests = Path(__file__).resolve().parent
    script = textwrap.dedent(LEGACY).format(paths=[str(tests), str(tests.parent)])
    path = os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": path})
    assert result.returncode == 0 and "legacy ok" in result.stdout, result.stderr[-3000:]
