"""Integer indexing through from_torch: every index-taking converter of TVM 0.27's importer, checked
against eager torch on the host, with negative indices, full slices between index tensors and
partial index_put (README, "Known TVM 0.27 issues": select/index read out of bounds on negative indices).

Stock TVM gives garbage (an out-of-bounds read) for the select and index cases, a wrong shape for
the mixed ones and an import error for the partial index_put ones; ``frontend/index_converters.py``
replaces those converters. The rest are right as TVM converts them and are here to keep them so.
"""
from __future__ import annotations

import pytest
import torch

from import_helpers import Fn, assert_host_matches_eager

T = torch.tensor


def _assign(index, value=5.0):
    def fn(x):
        y = x.clone()
        y[index] = value
        return y

    return fn


CASES = {
    # aten.select.int
    "select-negative": lambda x: x[:, -1],
    "select-negative-dim": lambda x: x.select(-1, -2),
    "select-kornia-H": lambda x: x[..., -1, -1],
    # aten.index.Tensor (also torch.take, which decomposes to it)
    "index-one-negative": lambda x: x[:, T([-1, 0, -2])],
    "index-last-axis": lambda x: x[..., T([-1, 0])],
    "index-two-leading": lambda x: x[T([0, -1]), T([-1, 1])],
    "index-adjacent-after-slice": lambda x: x[:, T([-1, 0]), T([1, -3])],
    "index-separated-by-slice": lambda x: x[:, T([-1, 0]), :, T([1, -2])],
    "index-broadcast": lambda x: x[:, T([[2], [-1]]), T([1, 3, -4])],
    "index-int-and-tensor": lambda x: x[-1, T([0, -1])],
    "index-computed-at-runtime": lambda x: x[:, (x[0, :, 0, 0].argmax() - 3).reshape(1)],
    "take-negative": lambda x: torch.take(x, T([-1, 0, -5])),
    # aten.index_put (slice assignment with index tensors, index_fill, index_copy)
    "index-put-all-dims": _assign((T([-1]), T([0]), T([1]), T([-2]))),
    "index-put-leading": _assign((T([-1]),)),
    "index-put-after-slice": _assign((slice(None), T([-1, 0]))),
    "index-put-separated": _assign((slice(None), T([2, -3]), slice(None), T([1, -2]))),
    "index-fill": lambda x: x.index_fill(1, T([2]), 3.0),
    "index-copy": lambda x: x.index_copy(1, T([2]), torch.ones(2, 1, 4, 5)),
    # converted right by TVM: slices and scatters normalise their bounds, torch rejects negative
    # gather/index_select/scatter/embedding indices itself
    "slice-negative": lambda x: x[:, -3:-1, -100:2],
    "slice-step": lambda x: x[:, -4::2],
    "narrow-negative": lambda x: x.narrow(1, -3, 2),
    "select-scatter": lambda x: torch.select_scatter(x, torch.zeros(2, 4, 5), 1, -1),
    "slice-scatter": lambda x: torch.slice_scatter(x, torch.zeros(2, 2, 4, 5), 1, -2),
    "assign-negative-slices": _assign((slice(None), -1), 0.0),
    "gather": lambda x: torch.gather(x, 1, T([[[[2, 0, 1, 1, 0]]]]).expand(2, 1, 4, 5)),
    "take-along-dim-negative": lambda x: torch.take_along_dim(x, T([[[[-1]]]]), -1),
    "index-select": lambda x: x.index_select(1, T([2, 0])),
    "roll-negative": lambda x: torch.roll(x, -1, -1),
    "unbind-negative-dim": lambda x: torch.unbind(x, -1)[-1],
    "split-negative-dim": lambda x: torch.split(x, 2, -2)[-1],
    "diagonal-negative": lambda x: torch.diagonal(x, -1, -2, -1),
    "embedding": lambda x: torch.nn.functional.embedding(T([[1, 0]]), x[0, 0]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_indexing_matches_eager_on_host(name):
    torch.manual_seed(0)
    assert_host_matches_eager(Fn(CASES[name]), torch.randn(2, 3, 4, 5), rtol=0)
