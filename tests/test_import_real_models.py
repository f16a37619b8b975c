"""Idioms of public shift networks, written the way their authors write them, through from_torch and the
host build: a kornia-based Active Shift layer, S2-MLP's in-place shift, and offsets that cannot be
int32 pixel offsets.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from import_helpers import Fn, assert_host_matches_eager, run_on_host
from test_frontend import _s2mlp_spatial_shift
from tvm_ecnn.frontend import UnsupportedOperatorError, from_torch
from tvm_ecnn.nn import ActiveShift2d, SparseShift2d


# ----------------------------------------------------------------------------- kornia's translate, by hand
def _normal_transform_pixel(height: int, width: int) -> torch.Tensor:
    matrix = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    matrix[0, 0] = matrix[0, 0] * 2.0 / (width - 1)
    matrix[1, 1] = matrix[1, 1] * 2.0 / (height - 1)
    return matrix.unsqueeze(0)


def _to_homography(affine: torch.Tensor) -> torch.Tensor:
    homography = F.pad(affine, [0, 0, 0, 1], "constant", value=0.0)
    homography[..., -1, -1] += 1.0  # the negative index TVM 0.27 reads out of bounds
    return homography


def warp_affine(src: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """kornia.geometry.transform.warp_affine (bilinear, zeros, align_corners=True)."""
    b, c, h, w = src.shape
    normal = _normal_transform_pixel(h, w).to(src)
    dst_norm_trans_src_norm = normal @ (_to_homography(matrix) @ torch.inverse(normal))
    src_norm_trans_dst_norm = torch.inverse(dst_norm_trans_src_norm)
    grid = F.affine_grid(src_norm_trans_dst_norm[:, :2, :], [b, c, h, w], align_corners=True)
    return F.grid_sample(src, grid, align_corners=True, mode="bilinear", padding_mode="zeros")


def translate(tensor: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """kornia.geometry.transform.translate: one (dx, dy) per batch entry."""
    matrix = torch.eye(3, dtype=tensor.dtype).repeat(translation.shape[0], 1, 1)
    dx, dy = torch.chunk(translation, chunks=2, dim=-1)
    matrix[..., 0, 2:3] += dx
    matrix[..., 1, 2:3] += dy
    return warp_affine(tensor, matrix[..., :2, :3])


class KorniaActiveShift(nn.Module):
    """An Active Shift layer on kornia: channels folded into the batch with transpose, one translation each."""

    def __init__(self, channels: int):
        super().__init__()
        self.shift = nn.Parameter(torch.empty(channels, 2).uniform_(-1.5, 1.5))

    def forward(self, x):
        return translate(x.transpose(0, 1), self.shift).transpose(0, 1)


def test_kornia_transpose_folded_active_shift_becomes_active_shift2d():
    torch.manual_seed(0)
    model = nn.Sequential(KorniaActiveShift(6), nn.Conv2d(6, 4, 1), nn.ReLU())
    mod, report = assert_host_matches_eager(model, torch.randn(2, 6, 5, 7))
    assert report.counts() == {"grid-sample": 1, "shift-conv": 1}
    assert "R.ecnn.shift_conv2d(" in mod.script() and "grid_sample" not in mod.script()
    unfused, _ = assert_host_matches_eager(model, torch.randn(2, 6, 5, 7), fuse=False)
    assert "R.ecnn.active_shift2d(" in unfused.script()


def _zoom(x):
    """A transpose-folded grid_sample that zooms: no shift."""
    x = x.transpose(0, 1)
    theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]]).repeat(x.shape[0], 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True).transpose(0, 1)


def test_transposed_grid_sample_that_is_not_a_translation_stays():
    mod, report = assert_host_matches_eager(Fn(_zoom), torch.randn(2, 4, 6, 6))
    assert report.rows == [] and "R.ecnn" not in mod.script()


# ----------------------------------------------------------------------------- S2-MLP
def spatial_shift1(x):
    """S2-MLP's shift (Yu et al. 2021), verbatim: channels-last, in place."""
    b, w, h, c = x.size()
    x[:, 1:, :, : c // 4] = x[:, : w - 1, :, : c // 4]
    x[:, : w - 1, :, c // 4 : c // 2] = x[:, 1:, :, c // 4 : c // 2]
    x[:, :, 1:, c // 2 : c * 3 // 4] = x[:, :, : h - 1, c // 2 : c * 3 // 4]
    x[:, :, : h - 1, 3 * c // 4 :] = x[:, :, 1:, 3 * c // 4 :]
    return x


class S2Block(nn.Module):
    def __init__(self, channels: int, shift=spatial_shift1):
        super().__init__()
        self.mlp1, self.mlp2, self.shift = nn.Linear(channels, channels), nn.Linear(channels, channels), shift

    def forward(self, x):
        return self.mlp2(self.shift(self.mlp1(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)


def test_in_place_overlapping_shift_warns_that_eager_differs():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"S2Block .* differs from eager PyTorch .* max abs difference [0-9.]+") as caught:
        from_torch(S2Block(8), (torch.randn(1, 8, 6, 6),))
    (message,) = [str(w.message) for w in caught if "differs from eager" in str(w.message)]
    assert "in-place write whose source overlaps" in message


def test_functional_shift_and_float_noise_do_not_warn():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert_host_matches_eager(S2Block(8, _functional_shift), torch.randn(1, 8, 6, 6))
        # decompositions reorder float sums (softmax, layer norm): below the warning's tolerance
        from_torch(nn.Sequential(nn.LayerNorm(6), nn.Softmax(-1)), (torch.randn(1, 8, 6, 6) * 100,))


def _functional_shift(x):
    """The same shift reading a copy of its source (channels-last): what torch.export makes of ``spatial_shift1``."""
    return _s2mlp_spatial_shift(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def test_s2mlp_compiled_follows_the_exported_program():
    torch.manual_seed(0)
    model, x = S2Block(8).eval(), torch.randn(1, 8, 6, 6)
    with pytest.warns(UserWarning):
        mod = from_torch(model, (x,))
    with torch.no_grad():
        intended = S2Block(8, _functional_shift).eval()
        intended.load_state_dict(model.state_dict())
        torch.testing.assert_close(torch.from_numpy(run_on_host(mod, x)), intended(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- offsets that are not int32 offsets
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2.0**32, -(2.0**40)])
@pytest.mark.parametrize("layer", [SparseShift2d, ActiveShift2d])
def test_offsets_that_are_not_int32_name_the_layer(layer, bad):
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sequential(layer(4)))
    with torch.no_grad():
        model[1][0].offset[2, 1] = bad
    with pytest.raises(ValueError, match=rf"^1\.0 \({layer.__name__}\): offsets of channel 2 \(dx\) is"):
        from_torch(model, (torch.randn(1, 4, 5, 5),))


# ----------------------------------------------------------------------------- the same idioms on every target
class NegativeIndexing(nn.Module):
    """Channel gather, select and slice with negative indices between two convolutions (kornia-style ``[..., -1]``)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        y = y[:, torch.tensor([-1, 0, -2, 1, -3, 2, -4, 3])] + y[:, -1:, -1:, -1:]
        return self.conv2(torch.relu(y))


def _real_models() -> dict:
    """name -> (model, input): each idiom above in a tiny network, checked against eager on every target."""
    torch.manual_seed(0)
    zoom = nn.Sequential(nn.Conv2d(4, 4, 1), Fn(_zoom))
    return {
        "kornia_active_shift": (nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), KorniaActiveShift(8), nn.Conv2d(8, 4, 1),
                                              nn.ReLU()), torch.randn(1, 4, 6, 6)),
        "transposed_grid_sample": (zoom, torch.randn(1, 4, 6, 6)),
        "s2mlp_shift": (S2Block(8, _functional_shift), torch.randn(1, 8, 6, 6)),
        "negative_indexing": (NegativeIndexing(), torch.randn(1, 4, 6, 6)),
        "adaptive_max_pool": (nn.Sequential(nn.Conv2d(4, 8, 1), nn.AdaptiveMaxPool2d((2, 3)), nn.Conv2d(8, 4, 1)),
                              torch.randn(1, 4, 6, 7)),
    }


REAL_MODELS = _real_models()


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_idioms_on_host(name):
    assert_host_matches_eager(*REAL_MODELS[name])



# ---------------------------------------------------------------------- nn.AdaptiveMaxPool2d (no TVM 0.27 converter)
@pytest.mark.parametrize("output_size", [(3, 7), 1, (2, 3), (4, 5)])  # divides 6x7 (a max_pool2d) or not
def test_adaptive_max_pool_matches_eager(output_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveMaxPool2d(output_size))
    mod, _ = assert_host_matches_eager(model, torch.randn(2, 3, 6, 7))
    divides = output_size in ((3, 7), 1)
    assert ("R.nn.max_pool2d(" in mod.script()) == divides, mod.script()


def test_adaptive_max_pool_indices_are_refused():
    def pool_with_indices(x):
        values, indices = F.adaptive_max_pool2d(x, 2, return_indices=True)
        return values + indices

    with pytest.raises(UnsupportedOperatorError, match=r"adaptive_max_pool2d.* indices of an adaptive max pool"):
        from_torch(Fn(pool_with_indices), (torch.randn(1, 2, 4, 4),))
