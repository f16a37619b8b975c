"""targets: every name builds a TVM target (via get_target and as a TVM tag), attributes match the SoC table, the
roofline facts are sane, and a tiny kernel compiles to aarch64 NEON code for every CPU preset."""

import re

import pytest
import tvm
from tvm import te
from tvm.target import Target, codegen

import targets
from targets.registry import ALIASES, LINUX_TAG
from targets.snapdragon import ANDROID_TRIPLE, DTYPES, LINUX_TRIPLE

SOCS = ["865", "888", "8gen1", "8gen2", "8gen3"]  # release order
V9_SOCS = {"8gen1", "8gen2", "8gen3"}
CPU_NAMES = [f"snapdragon/{soc}-cpu" for soc in SOCS] + [LINUX_TAG]
ADRENO_NAMES = [f"snapdragon/{soc}-adreno{suffix}" for soc in SOCS for suffix in ("", "-texture")]


def _features(target: Target) -> dict:
    return {str(k)[len("feature."):]: bool(v) for k, v in target.attrs.items() if str(k).startswith("feature.")}


def test_names_complete_and_sorted():
    expected = set(CPU_NAMES) | set(ADRENO_NAMES) | set(ALIASES) | {"host"}
    assert targets.names() == sorted(expected)
    assert set(targets.PRESETS) == set(SOCS)


def test_no_name_shadows_a_target_kind():
    """Tags win over kinds in Target(str): an alias called e.g. "llvm" would hijack every Target("llvm")."""
    assert not set(targets.names()) & set(Target.list_kinds())


@pytest.mark.parametrize("name", targets.names())
def test_every_name_builds_via_get_target_and_as_tvm_tag(name):
    target = targets.get_target(name)
    assert isinstance(target, Target)
    assert str(Target(name)) == str(target)  # the registered tag is the same target


def test_register_tags_is_idempotent():
    targets.register_tags()
    targets.register_tags()
    assert str(Target("arm")) == str(targets.get_target("snapdragon/865-cpu"))


@pytest.mark.parametrize("soc", SOCS)
def test_cpu_preset_attributes(soc):
    preset = targets.PRESETS[soc]
    target = targets.get_target(f"snapdragon/{soc}-cpu")
    assert "arm_cpu" in target.keys and targets.is_arm(target)
    assert not targets.is_adreno(target) and not targets.is_texture(target)
    assert str(target.attrs["mtriple"]) == ANDROID_TRIPLE
    assert str(target.attrs["mcpu"]) == preset.cpu.mcpu
    assert codegen.llvm_is_valid_cpu(preset.cpu.mcpu, ANDROID_TRIPLE)
    assert int(target.attrs["num-cores"]) == preset.cpu.num_cores
    feats = _features(target)
    assert feats["is_aarch64"] and feats["has_dotprod"] and feats["has_fp16_simd"]
    assert feats["has_matmul_i8"] == (soc in V9_SOCS)
    assert not feats["has_sve"]  # SVE is off on Snapdragon phones: enabling it would SIGILL


@pytest.mark.parametrize("soc", SOCS)
def test_cluster_layout(soc):
    cpu = targets.PRESETS[soc].cpu
    assert cpu.big[0].count == 1  # one prime core, which names mcpu
    assert cpu.num_cores + cpu.little.count == 8
    assert all(c.simd_pipes > 0 for c in cpu.big)


def test_865_cluster_layout_and_numbers():
    p = targets.PRESETS["865"]
    layout = [(c.count, c.core, c.ghz) for c in (*p.cpu.big, p.cpu.little)]
    assert layout == [(1, "cortex-a77", 2.84), (3, "cortex-a77", 2.42), (4, "cortex-a55", 1.80)]
    assert p.cpu.num_cores == 4
    cpu, gpu = p.roofline("cpu"), p.roofline("gpu")
    assert cpu.bandwidth_gbs == gpu.bandwidth_gbs == 44.0  # LPDDR5-5500 x 64 bit
    assert cpu.peak_gflops["float32"] == pytest.approx(16 * (2.84 + 3 * 2.42))  # 2 x 128-bit FMLA per cycle
    assert 1000 <= gpu.peak_gflops["float32"] <= 1350


@pytest.mark.parametrize("name", ADRENO_NAMES)
def test_adreno_targets(name):
    soc = name.split("/")[1].split("-")[0]
    target = targets.get_target(name)
    assert target.kind.name == "opencl" and str(target.attrs["device"]) == "adreno"
    assert {"adreno", "opencl", "gpu"} <= {str(k) for k in target.keys}
    assert targets.is_adreno(target) and not targets.is_arm(target)
    assert targets.is_texture(target) == name.endswith("-texture") == ("texture" in target.keys)
    assert str(target.attrs["model"]) == targets.PRESETS[soc].gpu.model
    host = target.host
    assert host is not None and host.kind.name == "llvm"
    assert str(host.attrs["mcpu"]) == targets.PRESETS[soc].cpu.mcpu
    assert str(host.attrs["mtriple"]) == ANDROID_TRIPLE
    assert str(host) == str(targets.get_target(f"snapdragon/{soc}-cpu"))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_resolve_to_the_865_targets(alias):
    assert str(targets.get_target(alias)) == str(targets.get_target(ALIASES[alias]))
    assert targets.preset_for(alias) is targets.PRESETS["865"]


def test_aarch64_linux_is_the_865_cpu_with_gnu_triple():
    linux, android = targets.get_target("aarch64-linux"), targets.get_target("arm")
    assert str(linux.attrs["mtriple"]) == LINUX_TRIPLE
    for attr in ("mcpu", "mattr", "num-cores"):
        assert str(linux.attrs[attr]) == str(android.attrs[attr])


def test_host_target():
    host = targets.get_target("host")
    assert host.kind.name == "llvm"
    assert int(host.attrs["num-cores"]) >= 1
    assert targets.host_arch() in ("x86_64", "aarch64")
    assert targets.is_arm(host) == (targets.host_arch() == "aarch64")
    with pytest.raises(ValueError, match="host"):
        targets.preset_for("host")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        targets.get_target("foo")
    message = str(err.value)
    assert "unknown target 'foo'" in message
    assert all(name in message for name in targets.names())
    with pytest.raises(ValueError, match="valid names: 865, 888"):
        targets.preset_for("snapdragon/999-cpu")
    with pytest.raises(TypeError):
        targets.get_target(865)


def test_get_target_passes_through_tvm_tags_dicts_and_targets():
    target = Target({"kind": "llvm"})
    assert targets.get_target(target) is target
    assert targets.get_target({"kind": "c"}).kind.name == "c"
    assert targets.is_adreno("qcom/adreno-opencl") and not targets.is_texture("qcom/adreno-opencl")


def test_preset_for_accepts_keys_names_and_targets():
    for soc in SOCS:
        preset = targets.PRESETS[soc]
        assert targets.preset_for(soc) is preset
        for name in (f"snapdragon/{soc}-cpu", f"snapdragon/{soc}-adreno-texture"):
            assert targets.preset_for(name) is preset
            assert targets.preset_for(targets.get_target(name)) is preset


def test_roofline_numbers_are_sane():
    gpu_fp32, bandwidth = [], []
    for soc in SOCS:
        preset = targets.PRESETS[soc]
        cpu, gpu = preset.roofline("cpu"), preset.roofline("gpu")
        for roof in (cpu, gpu):
            assert set(roof.peak_gflops) == set(DTYPES)
            assert all(v > 0 for v in roof.peak_gflops.values()) and roof.bandwidth_gbs > 0
            assert roof.peak_gflops["int8"] >= roof.peak_gflops["float16"] >= roof.peak_gflops["float32"]
        assert gpu.peak_gflops["float32"] > cpu.peak_gflops["float32"]
        gpu_fp32.append(gpu.peak_gflops["float32"])
        bandwidth.append(gpu.bandwidth_gbs)
    assert gpu_fp32 == sorted(gpu_fp32) and bandwidth == sorted(bandwidth)  # newer is never slower
    with pytest.raises(ValueError, match="cpu, gpu"):
        targets.PRESETS["865"].roofline("npu")


def test_roofline_helpers():
    roof = targets.PRESETS["865"].roofline("cpu")
    ridge = roof.ridge_point("float32")
    assert ridge == pytest.approx(roof.peak_gflops["float32"] / 44.0)
    assert roof.attainable_gflops(ridge / 2) == pytest.approx(roof.peak_gflops["float32"] / 2)
    assert roof.attainable_gflops(ridge * 10) == roof.peak_gflops["float32"]


@pytest.fixture(scope="module")
def vector_add():
    a = te.placeholder((1024,), "float32", name="A")
    b = te.placeholder((1024,), "float32", name="B")
    c = te.compute((1024,), lambda i: a[i] + b[i], name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


@pytest.mark.parametrize("name", CPU_NAMES)
def test_vector_add_compiles_to_neon(name, vector_add):
    asm = tvm.compile(vector_add, target=targets.get_target(name)).mod.inspect_source("s")
    assert re.search(r"\bfadd\s+v\d+\.4s", asm), "expected a NEON fadd on v registers"
    assert not re.search(r"\bz\d+\.[bhsd]\b", asm), "SVE registers in code for an SVE-less phone"
