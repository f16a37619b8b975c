"""Static int8 post-training quantization (``tvm_ecnn.quantize``, ``compile_model(dtype="int8")``).

Bit-exact against the independent numpy int8 arithmetic of ``int8_reference.py`` (docs/int8-quantization.md),
close to PyTorch fp32, every shift op int8 (grouped / active ``shift_conv2d`` with residual and ReLU6, standalone
shifts), float islands listed, calibration inputs checked.
"""
import numpy as np
import pytest
import torch
import tvm
from torch import nn
from torch.nn import functional as F

import int8_reference as ref
from test_adreno import plugin_lowering, run_on_pocl  # noqa: F401  (fixture: the plugin's lowering on PoCL)
import tvm_ecnn
from tvm_ecnn import from_torch
from tvm_ecnn.nn import ActiveShift2d, Shift2d, SparseShift2d
from tvm_ecnn.pipeline import relax_pipeline
from tvm_ecnn.quantize import agreement, load_samples, quantize, run_host


class ConvPoolAdd(nn.Module):
    """conv 3x3 + ReLU, depthwise 3x3 + ReLU6, 1x1, residual add + ReLU, max pool, avg pool, mean, dense."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu6(self.c2(a))
        c = self.c3(b)
        d = F.relu(c + a)
        e = F.avg_pool2d(F.max_pool2d(d, 2), 2)
        return self.fc(e.mean((2, 3)))

    def int8_reference(self, x, scales):
        """The same network in numpy int8; ``scales``: input, c1, c2, c3, add outputs."""
        s_x, s1, s2, s3, s4 = (np.float32(s) for s in scales)
        xq = ref.quantize(x, s_x)
        a = _int8_conv(xq, s_x, self.c1.weight, self.c1.bias, s1, 0, padding=1)
        b = _int8_conv(a, s1, self.c2.weight, self.c2.bias, s2, 0, int(min(127, np.rint(np.float32(6) / s2))),
                       padding=1, groups=8)
        c = _int8_conv(b, s2, self.c3.weight, self.c3.bias, s3)
        d = ref.fixed_point_add([c, a], [s3 / s4, s1 / s4], low=0)
        e = ref.global_mean(ref.avg_pool(ref.max_pool(d, 2), 2))
        # max pool, avg pool and mean keep the add's scale s4
        return _int8_dense_logits(e, s4, self.fc)


def _int8_conv(q, s_in, weight, bias, s_out, low=-128, high=127, **kw):
    """Reference int8 conv2d (+ bias, clip) with the fp32 requantize of docs/int8-quantization.md."""
    wq, ws = ref.quantize_weight(weight.detach().numpy())
    acc = ref.conv2d_acc(q, wq, **kw) + ref.int32_bias(bias.detach().numpy(), s_in, ws)[None, :, None, None]
    m = ((s_in * ws).astype(np.float32) / s_out).astype(np.float32)
    return ref.requantize(acc, m[None, :, None, None], low, high)


def _int8_shift_conv(shifted, s_in, weight, bias, s_out, residual=None, low=-128, high=127):
    """Reference int8 ``shift_conv2d`` after its shift: 1x1 conv, int32 bias, fixed-point requantize
    (docs/int8-arithmetic.md) with the residual ``(q, scale)`` on its own scale."""
    wq, ws = ref.quantize_weight(weight.detach().numpy())
    acc = ref.conv2d_acc(shifted, wq).astype(np.int64) + ref.int32_bias(bias.detach().numpy(), s_in, ws)[None, :, None, None]
    scales = ((s_in * ws).astype(np.float32) / np.float32(s_out)).astype(np.float32)
    if residual is None:
        return ref.shift_conv2d_requantize(acc, scales, low=low, high=high)
    r_scale = float(np.float32(residual[1]) / np.float32(s_out))
    return ref.shift_conv2d_requantize(acc, scales, residual[0], r_scale, low, high)


def _int8_dense_logits(q, s_in, fc):
    """The last dense layer: int32 accumulator dequantized in its epilogue."""
    wq, ws = ref.quantize_weight(fc.weight.detach().numpy())
    acc = q.astype(np.int64) @ wq.T.astype(np.int64) + ref.int32_bias(fc.bias.detach().numpy(), s_in, ws)
    return acc.astype(np.int32).astype(np.float32) * (s_in * ws).astype(np.float32)


@pytest.fixture(scope="module")
def conv_pool_add():
    torch.manual_seed(0)
    net = ConvPoolAdd().eval()
    samples = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype("float32")
    quantized = quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples)
    return net, samples, quantized, run_host(quantized.mod, samples)


def test_int8_matches_numpy_reference_bit_exactly(conv_pool_add):
    net, samples, quantized, int8_out = conv_pool_add
    assert quantized.float_ops == {}
    scales = [s for _, s in quantized.scales]
    assert len(scales) == 5, quantized.scales
    # the calibrated scales are max|x| / 127 of the fp32 tensors (recomputed here with torch)
    with torch.no_grad():
        x = torch.from_numpy(samples)
        a = F.relu(net.c1(x))
        b = F.relu6(net.c2(a))
        c = net.c3(b)
        d = F.relu(c + a)
    for got, tensor in zip(scales, (x, a, b, c, d)):
        np.testing.assert_allclose(got, float(tensor.abs().max()) / 127, rtol=1e-5)
    # the int8 arithmetic, bit for bit: the logits are the dequantized int32 accumulator of the dense layer
    np.testing.assert_array_equal(int8_out, net.int8_reference(samples, scales))


def test_int8_close_to_pytorch_fp32(conv_pool_add):
    net, samples, quantized, int8_out = conv_pool_add
    with torch.no_grad():
        fp32 = net(torch.from_numpy(samples)).numpy()
    agreed = agreement(int8_out, fp32)
    assert agreed.max_rel < 0.05 and agreed.top1 >= 5 / 6, agreed  # stated tolerance: 5% of the largest logit
    np.testing.assert_allclose(quantized.fp32_outputs, fp32, rtol=1e-4, atol=1e-5)


def test_requantize_is_in_the_conv_kernel(conv_pool_add):
    """After FuseOps/FuseTIR each int8 conv is one kernel: conv2d, bias, multiply, round, clip, cast (and the
    residual add is fused into the producing 1x1 conv)."""
    lowered = relax_pipeline("host")(conv_pool_add[2].mod)
    kernels = [gv.name_hint for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 3 and all("round" in k and "cast" in k for k in convs), kernels
    assert not any("round" in k and "conv2d" not in k and "pool" not in k and "mean" not in k
                   and not k.startswith("fused_multiply_tir_round") for k in kernels), kernels
    assert any("right_shift" in k for k in convs), kernels


@pytest.mark.usefixtures("pocl_platform")
def test_int8_adreno_kernels_match_the_host_on_pocl(conv_pool_add, plugin_lowering):
    """The buffer Adreno path in int8 (char storage, int32 accumulation, fp32 requantize with OpenCL ``rint``):
    every kernel on PoCL equals the host build here (not claimed in general: docs/int8-quantization.md)."""
    _, samples, quantized, int8_out = conv_pool_add
    run = run_on_pocl(quantized.mod, "adreno", {"x": samples[:1]})
    assert len(run.checks) == 8 and all(c.max_abs_err == 0 for c in run.checks), run.checks
    np.testing.assert_array_equal(np.asarray(run.outputs[0] if isinstance(run.outputs, (list, tuple)) else run.outputs),
                                  int8_out[:1])


class ShiftBlock(nn.Module):
    def __init__(self, shift):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.shift = shift
        self.pw = nn.Conv2d(16, 16, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a = F.relu(self.stem(x))
        b = F.relu(self.bn(self.pw(self.shift(a))) + a)
        return self.fc(b.mean((2, 3)))


def _shift_net(shift):
    torch.manual_seed(1)
    net = ShiftBlock(shift).eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net


def test_shift_conv2d_runs_in_int8():
    net = _shift_net(Shift2d(16, kernel_size=3))
    samples = np.random.default_rng(1).standard_normal((4, 3, 12, 12)).astype("float32")
    quantized = tvm_ecnn.quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples)
    assert quantized.float_ops == {}
    lines = [line for line in quantized.mod.script(show_meta=False).splitlines() if "R.ecnn.shift_conv2d" in line]
    assert len(lines) == 1 and 'dtype="int8"' in lines[0] and "requant_scale=0.0," not in lines[0], lines
    with torch.no_grad():
        fp32 = net(torch.from_numpy(samples)).numpy()
    assert agreement(run_host(quantized.mod, samples), fp32).max_rel < 0.05


def test_ops_without_int8_form_stay_float_and_are_listed():
    net = _shift_net(nn.Sigmoid())
    samples = np.random.default_rng(2).standard_normal((4, 3, 12, 12)).astype("float32")
    quantized = quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples)
    assert quantized.float_ops == {"relax.sigmoid": 1}
    assert "in float    sigmoid x1" in quantized.summary_lines(None)
    with torch.no_grad():
        fp32 = net(torch.from_numpy(samples)).numpy()
    assert agreement(run_host(quantized.mod, samples), fp32).max_rel < 0.05


class PreActivation(nn.Module):
    """conv 3x3; BatchNorm + ReLU before the next conv (pre-activation: no conv to fold the BN into); residual."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)
        with torch.no_grad():  # a BN that does something, a negative gamma included
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        a = self.c1(x)
        return self.c2(F.relu(self.bn(a))) + a

    def int8_reference(self, x, scales):
        """``scales``: input, c1, BN + ReLU, c2 and add outputs. The BN: ``clip(rint(f32(q) * m[c] + c[c]), 0,
        127)``, ``m = s_a * a / s_bn``, ``c = b / s_bn`` (docs/int8-quantization.md)."""
        s_x, s1, s_bn, s2, s_out = (np.float32(v) for v in scales)
        bn = self.bn
        a_bn = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
        b_bn = (bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a_bn).astype(np.float32)
        a = _int8_conv(ref.quantize(x, s_x), s_x, self.c1.weight, self.c1.bias, s1, padding=1)
        m = ((s1 * a_bn.astype(np.float32)).astype(np.float32) / s_bn).astype(np.float32)
        offset = (b_bn / s_bn).astype(np.float32)
        scaled = a.astype(np.float32) * m[None, :, None, None] + offset[None, :, None, None]
        b = np.clip(np.rint(scaled), 0, 127).astype(np.int8)
        c = _int8_conv(b, s_bn, self.c2.weight, self.c2.bias, s2)
        return ref.fixed_point_add([c, a], [s2 / s_out, s1 / s_out]).astype(np.float32) * s_out


@pytest.fixture(scope="module")
def pre_activation():
    torch.manual_seed(3)
    net = PreActivation().eval()
    samples = np.random.default_rng(3).standard_normal((6, 3, 10, 10)).astype("float32")
    return net, samples, quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples)


def test_pre_activation_batch_norm_is_an_int8_requantize_bit_exactly(pre_activation):
    """AS-ResNet's unfoldable BN + ReLU: int8 in, int8 out (one requantize), not a float island."""
    net, samples, quantized = pre_activation
    assert quantized.float_ops == {}
    scales = [s for _, s in quantized.scales]
    assert len(scales) == 5, quantized.scales
    np.testing.assert_array_equal(run_host(quantized.mod, samples), net.int8_reference(samples, scales))


@pytest.mark.usefixtures("pocl_platform")
@pytest.mark.parametrize("target", ["adreno", "adreno-texture"])
def test_pre_activation_batch_norm_on_pocl_equals_the_host_build(pre_activation, plugin_lowering, target):
    """The same int8 values (the output's dequantize scale is a constant OpenCL prints with 7 digits: 1 ulp)."""
    _, samples, quantized = pre_activation
    run = run_on_pocl(quantized.mod, target, {"x": samples[:1]})
    s_out = quantized.scales[-1][1]
    np.testing.assert_array_equal(np.rint(run.outputs / s_out), np.rint(run_host(quantized.mod, samples[:1]) / s_out))
    np.testing.assert_allclose(run.outputs, run_host(quantized.mod, samples[:1]), rtol=1e-6)


class ShiftNet(nn.Module):
    """conv 3x3 + ReLU; grouped shift -> 1x1 + residual -> ReLU6; active shift -> 1x1 + ReLU (both fused into
    ``shift_conv2d``); a standalone active shift; mean; dense."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.shift, self.pw1 = Shift2d(16, kernel_size=3), nn.Conv2d(16, 16, 1)
        self.active, self.pw2 = ActiveShift2d(16), nn.Conv2d(16, 16, 1)
        self.tail = ActiveShift2d(16)
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():
            for layer in (self.active, self.tail):
                layer.offset.uniform_(-2.5, 2.5)
                # ties of the 1/128 rounding (half up), integers, an offset past the border
                layer.offset[:4] = torch.tensor([[-0.5 / 128, 0.5 / 128], [1.5 / 128, -2.5 / 128], [1.0, -2.0],
                                                 [20.25, 0.75]])

    def forward(self, x):
        a = F.relu(self.stem(x))
        b = F.relu6(self.pw1(self.shift(a)) + a)
        c = F.relu(self.pw2(self.active(b)))
        return self.fc(self.tail(c).mean((2, 3)))

    def int8_reference(self, x, scales):
        """The same network in numpy int8; ``scales``: input, stem, first and second ``shift_conv2d`` outputs."""
        s_x, s_a, s_b, s_c = (np.float32(s) for s in scales)
        a = _int8_conv(ref.quantize(x, s_x), s_x, self.stem.weight, self.stem.bias, s_a, 0, padding=1)
        b = _int8_shift_conv(ref.shift(a, self.shift.offsets().numpy()), s_a, self.pw1.weight, self.pw1.bias, s_b,
                             residual=(a, s_a), low=0, high=ref.relu6_high(s_b))
        c = _int8_shift_conv(ref.active_shift(b, self.active.offset.detach().numpy()), s_b, self.pw2.weight,
                             self.pw2.bias, s_c, low=0)
        # the standalone active shift and the mean keep c's scale
        return _int8_dense_logits(ref.global_mean(ref.active_shift(c, self.tail.offset.detach().numpy())), s_c, self.fc)


def test_shift_network_matches_numpy_reference_bit_exactly():
    """Grouped and active shifts fused into int8 ``shift_conv2d`` (per-channel fixed-point requantize, residual on
    its own scale, ReLU6) and a standalone int8 active shift: bit for bit the numpy reference."""
    torch.manual_seed(4)
    net = ShiftNet().eval()
    samples = np.random.default_rng(4).standard_normal((4, 3, 12, 12)).astype("float32")
    quantized = quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples)
    assert quantized.float_ops == {}
    script = quantized.mod.script(show_meta=False)
    calls = [line for line in script.splitlines() if "R.ecnn." in line]
    assert len(calls) == 3 and all('"int8"' in line for line in calls), calls
    assert sum('shift="active"' in line for line in calls) == 1 and "R.ecnn.active_shift2d" in script, calls
    scales = [s for _, s in quantized.scales]
    assert len(scales) == 4, quantized.scales
    int8_out = run_host(quantized.mod, samples)
    np.testing.assert_array_equal(int8_out, net.int8_reference(samples, scales))
    with torch.no_grad():
        fp32 = net(torch.from_numpy(samples)).numpy()
    assert agreement(int8_out, fp32).max_rel < 0.05


class StandaloneShift(nn.Module):
    """A data-movement shift read by a 3x3 conv (not fused): the standalone int8 op at its input's scale."""

    def __init__(self, shift):
        super().__init__()
        self.stem, self.shift, self.conv = nn.Conv2d(3, 16, 3, padding=1), shift, nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(self.shift(F.relu(self.stem(x))))).mean((2, 3)))

    def int8_reference(self, x, offsets, scales):
        s_x, s_a, s_b = (np.float32(s) for s in scales)
        a = _int8_conv(ref.quantize(x, s_x), s_x, self.stem.weight, self.stem.bias, s_a, 0, padding=1)
        b = _int8_conv(ref.shift(a, offsets), s_a, self.conv.weight, self.conv.bias, s_b, 0, padding=1)
        return _int8_dense_logits(ref.global_mean(b), s_b, self.fc)


def _sparse_shift():
    shift = SparseShift2d(16)
    with torch.no_grad():
        shift.offset.uniform_(-3, 3)
    return shift


@pytest.mark.parametrize("make_shift, op", [(lambda: Shift2d(16, kernel_size=5), "shift2d"),
                                            (_sparse_shift, "sparse_shift2d")])
def test_standalone_shifts_run_in_int8_bit_exactly(make_shift, op):
    torch.manual_seed(5)
    net = StandaloneShift(make_shift()).eval()
    offsets = (net.shift.offsets() if isinstance(net.shift, Shift2d) else net.shift.integer_offsets()).numpy()
    samples = np.random.default_rng(5).standard_normal((4, 3, 10, 10)).astype("float32")
    quantized = quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples)
    assert quantized.float_ops == {}
    calls = [line for line in quantized.mod.script(show_meta=False).splitlines() if f"R.ecnn.{op}" in line]
    assert len(calls) == 1 and '"int8"' in calls[0], calls
    scales = [s for _, s in quantized.scales]
    np.testing.assert_array_equal(run_host(quantized.mod, samples), net.int8_reference(samples, offsets, scales))


class Fire(nn.Module):
    def __init__(self):
        super().__init__()
        self.squeeze, self.e1, self.e3 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1).mean((2, 3))


def test_concat_inputs_share_the_concat_scale():
    torch.manual_seed(3)
    net = Fire().eval()
    samples = np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype("float32")
    quantized = quantize(from_torch(net, (torch.from_numpy(samples[:1]),)), samples, observer="percentile",
                         percentile=99.9)
    script = quantized.mod.script(show_meta=False)
    assert "R.concat" in script and "right_shift" not in script  # producers requantize straight to its scale
    with torch.no_grad():
        fp32 = net(torch.from_numpy(samples)).numpy()
    assert agreement(run_host(quantized.mod, samples), fp32).max_rel < 0.05


def test_calibration_files_and_random_fallback(tmp_path, capsys):
    data = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype("float32")
    np.save(tmp_path / "s.npy", data)
    torch.save([torch.from_numpy(d) for d in data], tmp_path / "s.pt")
    for name in ("s.npy", "s.pt"):
        samples, description = load_samples(tmp_path / name, (1, 3, 8, 8))
        np.testing.assert_array_equal(samples, data)
        assert description == f"3 samples from {name}"
    with pytest.raises(ValueError, match=r"must hold N inputs of shape \[3, 8, 8\].*\[3, 3, 4, 4\]"):
        load_samples(data[:, :, :4, :4], (1, 3, 8, 8))
    with pytest.raises(ValueError, match="calibration file .*missing.npy does not exist"):
        load_samples(tmp_path / "missing.npy", (1, 3, 8, 8))
    samples, description = load_samples(None, (1, 3, 8, 8))
    assert samples.shape == (8, 3, 8, 8) and "random" in description
    assert "warning: no calibration data given" in capsys.readouterr().err


def test_int8_on_textures_keeps_int8_tensors_in_buffers(tmp_path):
    """TVM 0.27 has no 8-bit images: every op with an int8 tensor is kept off textures, and the summary says so."""
    from tvm_ecnn.deploy import compile_model

    result = compile_model(ConvPoolAdd().eval(), (1, 3, 16, 16), "adreno-texture", dtype="int8", progress=False,
                           output=tmp_path / "net.so")
    assert result.texture_fallback["conv2d (int8)"] == 3, result.texture_fallback
    assert "conv2d (int8) x3" in result.summary()


def test_compile_script_int8_then_run_script_against_pytorch(tmp_path):
    """``compile.py --dtype int8 --calibration FILE`` reports weights, float ops and agreement; ``run.py`` runs the
    build and compares it with PyTorch fp32 (the random-calibration warning: ``test_calibration_files...``)."""
    import subprocess
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    np.save(tmp_path / "cal.npy", np.random.default_rng(4).standard_normal((4, 3, 16, 16)).astype("float32"))
    shape = ["--model", "shiftresnet20", "--input-shape", "1,3,16,16"]
    done = subprocess.run([sys.executable, str(scripts / "compile.py"), "--quiet", *shape, "--target", "host",
                           "--dtype", "int8", "--calibration", "cal.npy", "-o", "net.so"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr and "(int8)" in done.stdout, done.stdout
    for line in ("calibration: 4 samples from cal.npy", "in float    none", "int8 ~ fp32 top-1"):
        assert line in done.stdout, done.stdout
    ran = subprocess.run([sys.executable, str(scripts / "run.py"), "net.so", *shape, "--repeat", "1", "--number", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    error = float(ran.stdout.split("max abs error vs PyTorch:")[1].split()[0])
    largest = float(ran.stdout.split("(largest |output|")[1].split(")")[0])
    assert error < 0.05 * largest, ran.stdout
