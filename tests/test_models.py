"""Model zoo: published sizes, shapes, export, registry and weight loading."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from tvm_ecnn import models
from tvm_ecnn.analysis import count_macs, count_params
from tvm_ecnn.nn import ActiveShift2d, Shift2d, SparseShift2d

NAMES = models.names()
REQUIRED = {"squeezenet1_0", "squeezenet1_1", "shiftresnet20", "shiftresnet56", "asresnet_w32",
            "fenet1_0", "mobilenet_v2", "mobilenet_v2_se"}


@functools.lru_cache(maxsize=None)
def built(name: str) -> nn.Module:
    torch.manual_seed(0)
    return models.get(name).eval()


def within(value: float, published: float, tolerance: float) -> bool:
    return abs(value / published - 1) <= tolerance


def test_registry_has_every_family():
    assert REQUIRED <= set(NAMES)
    assert NAMES == sorted(NAMES)


@pytest.mark.parametrize("name, params", [
    ("squeezenet1_0", 1_248_424),
    ("squeezenet1_1", 1_235_496),
    ("mobilenet_v2", 3_504_872),
])
def test_torchvision_parameter_counts_exact(name, params):
    assert count_params(built(name)) == params


@pytest.mark.parametrize("name, published_m, tolerance", [
    ("asresnet_w32", 0.90, 0.10),
    ("asresnet_w50", 1.96, 0.10),
    ("asresnet_w68", 3.42, 0.10),
    ("fenet1_0", 3.7, 0.10),
    ("fenet1_37", 5.9, 0.10),
    ("shiftresnet20", 0.19, 0.05),  # Wu et al. CIFAR table, expansion 6
    ("shiftresnet56", 0.58, 0.05),
])
def test_parameter_counts_match_published(name, published_m, tolerance):
    assert within(count_params(built(name)), published_m * 1e6, tolerance)


@pytest.mark.parametrize("name, published_m, tolerance", [
    ("squeezenet1_1", 350, 0.10),
    ("squeezenet1_0", 820, 0.10),
    ("fenet1_0", 301, 0.10),
    ("fenet1_37", 563, 0.10),
    ("mobilenet_v2", 300, 0.05),
])
def test_mac_counts_match_published(name, published_m, tolerance):
    assert within(count_macs(built(name), models.default_input_shape(name)), published_m * 1e6, tolerance)


def test_se_variant_adds_squeeze_excite_but_few_macs():
    plain, se = built("mobilenet_v2"), built("mobilenet_v2_se")
    assert count_params(se) > count_params(plain)
    shape = models.default_input_shape("mobilenet_v2")
    assert count_macs(se, shape) / count_macs(plain, shape) < 1.02  # SE works on pooled vectors
    assert any(isinstance(m, nn.Hardsigmoid) for m in se.modules())
    assert any(isinstance(m, nn.Sigmoid) for m in models.get("mobilenet_v2_se", gate="sigmoid").modules())


@pytest.mark.parametrize("name", NAMES)
def test_forward_at_default_input_shape(name):
    shape = models.default_input_shape(name)
    classes = 10 if shape[-1] == 32 else 1000
    with torch.no_grad():
        out = built(name)(torch.randn(shape))
    assert out.shape == (shape[0], classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["shiftresnet20", "fenet1_0", "squeezenet1_1", "mobilenet_v2_se"])
def test_num_classes_and_in_channels(name):
    model = models.get(name, num_classes=7, in_channels=1).eval()
    size = models.default_input_shape(name)[-1] if name == "shiftresnet20" else 64
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name, shift_type", [
    ("shiftresnet20", Shift2d), ("asresnet_w32", ActiveShift2d), ("fenet1_0", SparseShift2d),
])
def test_shift_networks_use_the_plugin_shift_modules(name, shift_type):
    assert any(isinstance(m, shift_type) for m in built(name).modules())


@pytest.mark.parametrize("name", NAMES)
def test_torch_export(name):
    """Static shapes and no data-dependent control flow: export works and matches eager.
    ImageNet models are exported at 64x64 to keep the test fast."""
    side = 32 if models.default_input_shape(name)[-1] == 32 else 64
    x = torch.randn(1, 3, side, side)
    model = built(name)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_deterministic_under_manual_seed():
    def state(name):
        torch.manual_seed(123)
        return models.get(name).state_dict()

    for name in ("fenet1_0", "asresnet_w32"):
        a, b = state(name), state(name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_default_input_shapes():
    assert models.default_input_shape("shiftresnet20") == (1, 3, 32, 32)
    assert models.default_input_shape("fenet1_0") == (1, 3, 224, 224)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="shiftresnet20") as info:
        models.get("resnet9000")
    assert "resnet9000" in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        models.default_input_shape("nope")


def test_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    source = models.get("shiftresnet20").eval()
    path = tmp_path / "shiftresnet20.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = models.get("shiftresnet20", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    # A training checkpoint wrapping the state dict loads too.
    torch.save({"epoch": 3, "state_dict": source.state_dict()}, path)
    assert torch.equal(models.get("shiftresnet20", weights=str(path)).linear.weight, source.linear.weight)


def test_weights_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "cifar100.pt"
    torch.save(models.get("shiftresnet20", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatch.*linear\.weight"):
        models.get("shiftresnet20", weights=path)
    with pytest.raises(ValueError, match="missing keys"):
        models.get("shiftresnet56", weights=models.get("shiftresnet20").state_dict())
    with pytest.raises(FileNotFoundError):
        models.get("shiftresnet20", weights=tmp_path / "absent.pt")
