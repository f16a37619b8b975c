"""Layers of torchvision/timm efficient CNNs (``efficient_blocks``) and the import suite's idioms of public shift
networks (``test_import_real_models.REAL_MODELS``) on every target: host, and both Adreno paths run on PoCL, against
eager PyTorch (issue 13). What the texture path cannot hold (an op ``ConvertLayout`` cannot pack, a kernel that
would store partial texels) falls back to buffers, reported."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from efficient_blocks import BLOCKS, make
from test_import_real_models import REAL_MODELS
from tvm import relax

import targets
from tvm_ecnn import pipeline
from tvm_ecnn.compiler_pass.adreno_tir import stores_partial_texels
from tvm_ecnn.compiler_pass.partial_texel_fallback import REASON
from tvm_ecnn.compiler_pass.texture_fallback import texture_fallback
from tvm_ecnn.deploy import compile_model
from tvm_ecnn.frontend import from_torch

pytest.importorskip("pyopencl", reason="pyopencl is missing: pip install the project's opencl extra")
from relax_helpers import run_module  # noqa: E402
from test_adreno import (  # noqa: E402, F401  (plugin_lowering: a fixture)
    _scalar_texels,
    _writes_image,
    assert_every_kernel_ran_and_matches,
    plugin_lowering,
    run_on_pocl,
    texture_gap_ops,
)

pytestmark = pytest.mark.usefixtures("pocl_platform")
ATOL = 1e-4
# Ops kept on buffers on adreno-texture (TVM's NCHW4c layout inference fails on them); every other op of every block
# stays packed. The SE gates and SiLU/hardswish epilogues are texel-scheduled, not fallen back.
FALLBACK = {"group_norm": {"group_norm": 1}, "shift_mlp": {"group_norm": 1},
            "channel_statistics": {"instance_norm": 1, "layer_norm": 1, "mean": 1, "multiply": 1}}


@pytest.fixture(scope="module", params=sorted(BLOCKS))
def block(request):
    model, x = make(request.param)
    return request.param, from_torch(model, (x,)), x.numpy(), model(x).detach().numpy()


def _assert_close(actual, expected, name):
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(np.asarray(actual) - expected).max()) <= ATOL * scale, name


def test_block_on_host(block):
    name, mod, x, expected = block
    vm = relax.VirtualMachine(pipeline.build(mod, "host"), tvm.cpu())
    _assert_close(vm["main"](tvm.runtime.tensor(x)).numpy(), expected, name)


@pytest.mark.parametrize("target", ["adreno", "adreno-texture"])
def test_block_on_pocl(plugin_lowering, block, target):
    name, mod, x, expected = block
    run = run_on_pocl(mod, target, {"x": x})
    assert_every_kernel_ran_and_matches(run)
    _assert_close(run.outputs, expected, name)
    if target == "adreno-texture":
        assert texture_fallback(run.lowering.relax_mod) == FALLBACK.get(name, {})
        assert any(_writes_image(k) for k in run.lowering.kernels), name  # the packed part really uses images
    else:
        assert not texture_fallback(run.lowering.relax_mod)


def test_texture_fallback_in_the_compile_summary(tmp_path):
    model, x = make("shift_mlp")
    for target, expected in (("adreno-texture", ["fallback    group_norm x1 (buffer"]), ("adreno", [])):
        result = compile_model(model, tuple(x.shape), target, output=tmp_path / f"{target}.so", progress=False)
        lines = [line for line in result.summary().splitlines() if line.startswith("fallback")]
        assert [line[:len("fallback    group_norm x1 (buffer")] for line in lines] == expected, target


def test_pipeline_leaves_a_well_formed_module():
    """TSM's frames view at 4x4 pixels: without ``CopyTextureBeforeReshape`` TVM's ``RewriteDataflowReshape``
    refers to a variable it never defines ("Var lv... is not defined" in VM codegen)."""
    model, x = make("tsm_resnet_batch4")
    lowered = pipeline.relax_pipeline(targets.get_target("adreno-texture"))(from_torch(model, (x,)))
    relax.analysis.well_formed(lowered)  # raises on an undefined variable
    assert any(isinstance(f, relax.Function) and "to_device" in f.script() for f in lowered.functions.values())


@pytest.mark.parametrize("target", ["adreno", "adreno-texture"])
@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_idioms_on_pocl(plugin_lowering, name, target):
    """The import suite's idioms of public shift networks (negative indices, kornia's transpose-folded grid_sample,
    S2-MLP's shift) compile for both Adreno paths and match eager PyTorch on PoCL."""
    model, x = REAL_MODELS[name]
    mod = from_torch(model.eval(), (x,))
    run = run_on_pocl(mod, target, {mod["main"].params[0].name: x.numpy()})
    assert_every_kernel_ran_and_matches(run)
    _assert_close(run.outputs, model(x).detach().numpy(), name)
    texture = target == "adreno-texture"
    # the one-channel map ``y[:, -1:, -1:, -1:]`` added over channels: kept on buffers, reported
    assert texture_fallback(run.lowering.relax_mod) == ({"add": 1} if texture and name == "negative_indexing" else {})
    # S2-MLP has no convolution, so nothing asks for NCHW4c; the others keep their convolutions' activations in images
    assert any(_writes_image(k) for k in run.lowering.kernels) == (texture and name != "s2mlp_shift"), name


def test_kernels_storing_partial_texels_fall_back_to_buffers(plugin_lowering, monkeypatch):
    """A kernel the partial-texel guard would refuse writes a buffer, copied to its texture, and is reported, instead
    of failing the compile. Provoked by leaving out ``ScheduleTexelWrites``: dlight's generic rules then store the
    pools and concat of ``texture_gap_ops`` one lane at a time (what the guard was written for)."""
    monkeypatch.setattr(pipeline, "ScheduleTexelWrites", lambda: tvm.transform.Sequential([], name="Unscheduled"))
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype("float32")
    run = run_on_pocl(texture_gap_ops(), "adreno-texture", {"x0": x})
    assert_every_kernel_ran_and_matches(run)
    np.testing.assert_allclose(run.outputs, run_module(texture_gap_ops(), x), atol=ATOL, rtol=ATOL)
    fallback = texture_fallback(run.lowering.relax_mod)
    assert fallback and all(op.endswith(f"({REASON})") for op in fallback), fallback
    assert any(_writes_image(k) for k in run.lowering.kernels)  # the rest keeps its textures


def test_the_partial_texel_check_tells_refused_kernels():
    assert stores_partial_texels(_scalar_texels)
