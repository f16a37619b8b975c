"""Arm CPU schedules (schedules/arm_cpu.py): the NEON micro-kernels in the emitted aarch64 assembly, and
the numerics of the same kernels run on the emulated aarch64 device (qemu-user + TVM's real RPC server).

Assembly: the *hot loop* is the innermost loop (a backward branch and the code it jumps over) holding the most
instances of the instruction under test; the whole reduction of a micro-kernel tile runs in it.
"""
from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax, rpc

import int8_reference
import relay_ops
import targets
from reference import active_shift_ref, circular_shift_ref, requantize_ref, shift_ref
from relax_helpers import build_module, multi_function_module
from test_int8_ops import INT8_CASES, conv_int8_case
from tvm_ecnn import pipeline
from tvm_ecnn.device.export import cross_compiler_for
from tvm_ecnn.nn.offsets import grouped_shift_offsets
from tvm_ecnn.pipeline import relax_pipeline

ARM = targets.get_target("aarch64-linux")  # Snapdragon 865 big cores (cortex-a77, +dotprod), aarch64-linux-gnu
EIGHT_GEN2 = targets.get_target("snapdragon/8gen2-cpu")  # ARMv9 with i8mm
I8MM = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-x3",  # its linux twin
                          "mattr": ["+neon", "+dotprod", "+i8mm", "-sve", "-sve2"]})
NO_DOT = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a53", "mattr": ["+neon"]})


# ------------------------------------------------------------------------------------------------------------------
# assembly


def assembly(ex) -> str:
    """The aarch64 assembly of a compiled Relax executable (its llvm module: ``relax.VMExecutable -> llvm``)."""
    (llvm,) = [m for m in ex.mod.imports if m.kind == "llvm"]
    return llvm.inspect_source("asm")


_LABEL = re.compile(r"^([.\w$]+):")
_BRANCH = re.compile(r"^\s+(?:b(?:\.\w+)?|cbn?z|tbn?z)\s+(?:[^,\n]+,\s*)*([.\w$]+)\s*$")


def innermost_loops(asm: str) -> list[list[str]]:
    """Instruction lines of every innermost loop: a branch back to an earlier label, with nothing nested."""
    lines = asm.splitlines()
    labels, spans = {}, []
    for i, line in enumerate(lines):
        if m := _LABEL.match(line):
            labels[m.group(1)] = i
        if (m := _BRANCH.match(line)) and labels.get(m.group(1), i) < i:
            spans.append((labels[m.group(1)], i))
    inner = [(a, b) for a, b in spans if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    return [[ln.strip() for ln in lines[a:b + 1] if ln.startswith("\t") and not ln.strip().startswith(".")]
            for a, b in inner]


def mnemonics(lines) -> collections.Counter:
    return collections.Counter(line.split()[0] for line in lines)


def hot_loop(asm: str, mnemonic: str) -> list[str]:
    return max(innermost_loops(asm), key=lambda body: (mnemonics(body)[mnemonic], -len(body)))


def shift_conv_module(kind="grouped", dtype="float32", channels=64, out_channels=32, size=16, **kw):
    rng = np.random.default_rng(0)
    if dtype == "int8":
        w = rng.integers(-128, 128, (out_channels, channels, 1, 1)).astype("int8")
    else:
        w = rng.standard_normal((out_channels, channels, 1, 1)).astype(dtype)
    offsets = {"sparse": lambda: relax.const(rng.integers(-2, 3, (channels, 2)).astype("int32")),
               "active": lambda: relax.const(rng.uniform(-2, 2, (channels, 2)).astype("float32"))}.get(kind)
    return build_module(lambda v: relay_ops.shift_conv2d(v, relax.const(w), kind, offsets=offsets and offsets(), **kw),
                        [((1, channels, size, size), dtype)])


@pytest.mark.parametrize("kind", ["grouped", "sparse", "active", "none"])
def test_fp32_hot_loop_is_16_fmla_without_spills(kind):
    body = hot_loop(assembly(pipeline.build(shift_conv_module(kind), ARM)), "fmla")
    ops = mnemonics(body)
    # 16 output channels (4 vectors) x 4 pixels: one fmla per accumulator and input channel, by element
    assert ops["fmla"] == 16 and all(re.search(r"v\d+\.4s, v\d+\.4s, v\d+\.(4s|s\[\d\])$", ln)
                                     for ln in body if ln.startswith("fmla"))
    assert len(body) <= 32, body  # 4 weight vectors, 4 inputs, loop control; no shift arithmetic, no bounds tests
    assert not spills(body), body  # no accumulator spills


def spills(body) -> list[str]:
    """Stores to the stack."""
    return [ln for ln in body if re.search(r"\b(str|stp|stur)\s.*\[sp", ln)]


def kernels(mod, target=ARM) -> tuple[tvm.IRModule, dict]:
    """The scheduled PrimFuncs of ``mod`` after the plugin's Relax pipeline (weights folded)."""
    lowered = relax_pipeline(target)(mod)
    return lowered, {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def constant_shapes(mod) -> list:
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(list(e.value.shape))
                                    if isinstance(e, tvm.ir.expr.GenericConst) and hasattr(e.value, "shape") else None)
    return found


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_shift_conv2d_weights_are_packed_at_compile_time(dtype):
    """fp32: the ``[O / 16, C, 1, 1, 16]`` weight is a constant and the kernel copies no weight panel; int8: the
    ``[O / 4, C / 4, 1, 1, 4, 4]`` ``sdot`` panel order is (the kernel copies a tile's rows of it per row)."""
    lowered, found = kernels(shift_conv_module("grouped", dtype))
    (kernel,) = found.values()
    if dtype == "float32":
        assert [2, 64, 1, 1, 16] in constant_shapes(lowered) and [32, 64, 1, 1] not in constant_shapes(lowered)
        assert "shift_conv2d_weight" not in kernel.script() and "layout_rewrite_preproc" not in kernel.script()
    else:
        assert [8, 16, 1, 1, 4, 4] in constant_shapes(lowered) and [32, 64, 1, 1] not in constant_shapes(lowered)


def conv_module(channels, out_channels, kernel, size, stride=1, groups=1, dtype="float32", seed=0):
    """TOPI conv2d ``padding = kernel // 2`` (+ ReLU in fp32; int8 accumulates in int32, what the quantizer emits)."""
    rng = np.random.default_rng(seed)
    shape = (out_channels, channels // groups, kernel, kernel)
    if dtype == "int8":
        w = rng.integers(-128, 128, shape).astype("int8")
        return build_module(lambda v: relax.op.nn.conv2d(v, relax.const(w), strides=stride, padding=kernel // 2,
                                                         groups=groups, out_dtype="int32"),
                            [((1, channels, size, size), "int8")])
    w = rng.standard_normal(shape).astype("float32")
    return build_module(lambda v: relax.op.nn.relu(relax.op.nn.conv2d(v, relax.const(w), strides=stride,
                                                                      padding=kernel // 2, groups=groups)),
                        [((1, channels, size, size), "float32")])


@pytest.mark.parametrize("conv, fmla", [
    ((64, 64, 1, 16), 16),  # pixel vectors: 16 output channels x 4 pixels (one q register) per input channel
    ((64, 64, 1, 14), 14),  # 14-wide rows: channel vectors, 8 channels x 7 pixels
    ((32, 64, 3, 16), 48),  # 3x3: the kx taps unrolled, 16 accumulators each
])
def test_fp32_conv_hot_loops_fill_the_neon_registers_with_packed_weights(conv, fmla):
    """Plain convs on NEON (``cpu_conv2d.py`` at 4 lanes, 16 of the 32 q registers accumulating): one ``fmla`` per
    accumulator per reduction step, no spills, and the weights packed at compile time (no packing in the kernel)."""
    mod = conv_module(*conv)
    lowered, found = kernels(mod)
    (kernel,) = found.values()
    assert "layout_rewrite_preproc" not in kernel.script()
    channels, _, k, _ = conv
    assert [shape for shape in constant_shapes(lowered) if len(shape) == 5 and shape[1:4] == [channels, k, k]]
    body = hot_loop(assembly(pipeline.build(mod, ARM)), "fmla")
    assert mnemonics(body)["fmla"] == fmla and not spills(body), body
    assert all(re.search(r"v\d+\.4s, v\d+\.4s, v\d+\.(4s|s\[\d\])$", ln) for ln in body if ln.startswith("fmla"))


@pytest.mark.parametrize("conv", [(64, 64, 1, 16), (32, 64, 3, 16), (32, 32, 3, 16, 2)])
def test_int8_conv2d_hot_loop_is_sdot(conv):
    """Every int8 conv with 4-channel input groups runs the ``sdot`` tile: 16 ``sdot`` per 4 input channels and
    tap, no widening multiplies; the ``[O / 4, C / 4, kh, kw, 4, 4]`` weights are a constant."""
    mod = conv_module(*conv, dtype="int8")
    lowered, _ = kernels(mod)
    assert [conv[1] // 4, conv[0] // 4, conv[2], conv[2], 4, 4] in constant_shapes(lowered)
    ops = mnemonics(hot_loop(assembly(pipeline.build(mod, ARM)), "sdot"))
    assert ops["sdot"] and ops["sdot"] % 16 == 0
    assert not (ops["smull"] or ops["smlal"] or ops["sshll"])


@pytest.mark.parametrize("conv", [(64, 64, 1, 16), (32, 64, 3, 16)])
def test_int8_conv2d_hot_loop_is_smmla_on_i8mm(conv):
    """i8mm (8 Gen 1 / 2 / 3): 16 ``smmla`` (2 pixels x 8 channels x 2 outputs, twice ``sdot``'s MACs) per 8
    input channels and tap, no spills; the ``[O / 2, C / 8, kh, kw, 2, 8]`` weights are a constant."""
    mod = conv_module(*conv, dtype="int8")
    lowered, _ = kernels(mod, EIGHT_GEN2)
    assert [conv[1] // 2, conv[0] // 8, conv[2], conv[2], 2, 8] in constant_shapes(lowered)
    body = hot_loop(assembly(pipeline.build(mod, EIGHT_GEN2)), "smmla")
    ops = mnemonics(body)
    assert ops["smmla"] and ops["smmla"] % 16 == 0 and not ops["sdot"] and not spills(body), body


@pytest.mark.parametrize("conv", [(32, 32, 1, 7), (32, 32, 3, 16, 2)])
def test_int8_conv2d_odd_width_or_strided_on_i8mm_takes_sdot(conv):
    asm = assembly(pipeline.build(conv_module(*conv, dtype="int8"), EIGHT_GEN2))
    assert "smmla" not in asm and mnemonics(hot_loop(asm, "sdot"))["sdot"]


def test_int8_conv2d_without_dotprod_uses_the_neon_dot_product():
    ops = mnemonics(hot_loop(assembly(pipeline.build(conv_module(32, 32, 3, 8, dtype="int8"), NO_DOT)), "saddlp"))
    assert ops["smull"] + ops["smull2"] == ops["saddlp"] > 0 and ops["addp"]


@pytest.mark.parametrize("stride", [1, 2])
def test_int8_depthwise_hot_loop_is_neon_vector_multiply_accumulate(stride):
    """Depthwise int8 (``cpu_depthwise.py``, a channel per task): LLVM vectorizes the row into widening NEON
    multiply-accumulates of 8 or 16 lanes."""
    asm = assembly(pipeline.build(conv_module(32, 32, 3, 32, stride, groups=32, dtype="int8"), ARM))
    body = hot_loop(asm, "smlal")
    assert [ln for ln in body if re.match(r"smlal2?\s+v\d+\.(4s|8h)", ln)], body


def test_int8_hot_loop_is_sdot_on_dotprod_target():
    asm = assembly(pipeline.build(shift_conv_module(dtype="int8", requant_scale=0.01, activation="relu",
                                                    bias=relax.const(np.arange(32, dtype="int32"))), ARM))
    ops = mnemonics(hot_loop(asm, "sdot"))
    assert ops["sdot"] == 16  # 4 x 4 accumulators of 4 int32 lanes, 4 input channels each
    assert ops["ld1r"] + ops["ldr"] + ops["ldp"] + ops["ldur"] <= 12 and not ops["smull"]


def test_int8_without_dotprod_uses_neon_fallback():
    assert not NO_DOT.attrs["feature.has_dotprod"]
    asm = assembly(pipeline.build(shift_conv_module(dtype="int8"), NO_DOT))
    ops = mnemonics(hot_loop(asm, "smull"))
    assert ops["smull"] + ops["smull2"] == 64 and ops["saddlp"] == 64 and ops["addp"] == 32  # 16 dot_4x4, 4+4+2 each
    assert "sdot" not in asm


def test_int8_channels_not_multiple_of_4_fall_back_to_outer_product():
    asm = assembly(pipeline.build(shift_conv_module(dtype="int8", channels=18), ARM))
    ops = mnemonics(hot_loop(asm, "smull"))
    # per input channel: 4 pixel broadcasts x 16 int8 weights (one q load of the compile-time packed weight) ->
    # 8 widening multiplies of 8 lanes (LLVM picks smull on an ext'ed half or smull2), 16 widening accumulates
    assert ops["smull"] + ops["smull2"] == 8 and ops["saddw"] == ops["saddw2"] == 8 and ops["ldr"] == 1
    assert "sdot" not in asm


@pytest.mark.parametrize("op", ["shift2d", "sparse_shift2d", "active_shift2d", "shift2d_int8"])
def test_standalone_shifts_copy_the_interior_with_vector_registers(op):
    rng = np.random.default_rng(1)
    sparse = relax.const(rng.integers(-3, 4, (18, 2)).astype("int32"))
    active = relax.const(rng.uniform(-2, 2, (18, 2)).astype("float32"))
    make = {"shift2d": relay_ops.shift2d, "shift2d_int8": relay_ops.shift2d,
            "sparse_shift2d": lambda v: relay_ops.sparse_shift2d(v, sparse),
            "active_shift2d": lambda v: relay_ops.active_shift2d(v, active)}[op]
    asm = assembly(pipeline.build(build_module(make, [((1, 18, 56, 56), "int8" if "int8" in op else "float32")]), ARM))
    reg = "[qd]" if "int8" in op else "q"  # LLVM copies 56 int8 as 8-byte d registers (x2 interleaved)
    loads = re.findall(rf"\b(?:ldr|ldur|ldp)\s+{reg}\d+", asm)
    stores = re.findall(rf"\b(?:str|stur|stp)\s+{reg}\d+, (?:{reg}\d+, )?\[x", asm)  # not the stack
    assert loads and stores
    if op == "active_shift2d":  # the 4-tap bilinear blend, 4 lanes at a time
        assert re.search(r"\bfmul\s+v\d+\.4s", asm) and re.search(r"\bfmla\s+v\d+\.4s", asm)


# ------------------------------------------------------------------------------------------------------------------
# numerics on the emulated device


def _conv_ref(x, w, kind, offsets, stride, bias, relu, requant, zp):
    if kind == "none":
        shifted = x
    elif kind == "active":
        shifted = active_shift_ref(x, offsets)
    else:
        shifted = shift_ref(x, grouped_shift_offsets(x.shape[1]) if kind == "grouped" else offsets)
    exact = x.dtype == np.int8
    acc = np.einsum("nchw,oc->nohw", shifted[:, :, ::stride, ::stride].astype(np.int64 if exact else np.float64),
                    w[:, :, 0, 0].astype(np.int64 if exact else np.float64))
    if bias is not None:
        acc = acc + bias[None, :, None, None]
    if requant:
        return requantize_ref(acc, [requant] * acc.shape[1], zp, "relu" if relu else "none")
    if relu:
        acc = np.maximum(acc, 0)
    return acc.astype(np.int32 if exact else np.float32)


def conv_case(kind, dtype, channels, out_channels, size, stride=1, bias=False, relu=False, requant=0.0, zp=0):
    rng = np.random.default_rng(channels * 31 + out_channels + stride)
    shape = (1, channels) + ((size, size) if isinstance(size, int) else size)
    if dtype == "int8":
        x = rng.integers(-128, 128, shape).astype("int8")
        w = rng.integers(-128, 128, (out_channels, channels, 1, 1)).astype("int8")
        b = rng.integers(-5000, 5000, out_channels).astype("int32")
    else:
        x = rng.standard_normal(shape).astype("float32")
        w = rng.standard_normal((out_channels, channels, 1, 1)).astype("float32")
        b = rng.standard_normal(out_channels).astype("float32")
    offsets = {"sparse": rng.integers(-2, 3, (channels, 2)).astype("int32"),
               "active": rng.uniform(-2.5, 2.5, (channels, 2)).astype("float32")}.get(kind)
    b = b if bias else None

    def make(v):
        return relay_ops.shift_conv2d(v, relax.const(w), kind, stride=stride,
                                      offsets=None if offsets is None else relax.const(offsets),
                                      bias=None if b is None else relax.const(b),
                                      activation="relu" if relu else "none", requant_scale=requant,
                                      requant_zero_point=zp)

    return make, x, _conv_ref(x, w, kind, offsets, stride, b, relu, requant, zp)


def shift_case(op, dtype="float32", size=(13, 11), **kw):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 18) + size).astype("float32")
    if dtype == "int8":
        x = rng.integers(-128, 128, x.shape).astype("int8")
    if op == "sparse":
        offsets = rng.integers(-16, 17, (18, 2)).astype("int32")  # also beyond the image: all-zero channels
        return lambda v: relay_ops.sparse_shift2d(v, relax.const(offsets)), x, shift_ref(x, offsets)
    if op == "active":
        offsets = rng.uniform(-4, 4, (18, 2)).astype("float32")
        return (lambda v: relay_ops.active_shift2d(v, relax.const(offsets), **kw), x,
                active_shift_ref(x, offsets, kw.get("stride", 1), kw.get("padding", 0)).astype("float32"))
    k, d, mapping = kw.get("k", 3), kw.get("d", 1), kw.get("mapping", "interleaved")
    table = grouped_shift_offsets(18, k, d, mapping)
    if kw.get("padding_mode") == "circular":
        return lambda v: relay_ops.shift2d(v, k, d, mapping, "circular"), x, circular_shift_ref(x, table)
    return lambda v: relay_ops.shift2d(v, k, d, mapping), x, shift_ref(x, table)


def plain_conv_case(channels, out_channels, kernel, size, stride=1, groups=1, dtype="float32"):
    """``conv_module``'s conv and its reference (int8: ``int8_reference.conv2d_acc``, exact; fp32: PyTorch in fp64)."""
    rng = np.random.default_rng(channels + 7 * out_channels + kernel + stride)
    w_shape = (out_channels, channels // groups, kernel, kernel)
    if dtype == "int8":
        x = rng.integers(-128, 128, (1, channels, size, size)).astype("int8")
        w = rng.integers(-128, 128, w_shape).astype("int8")
        ref = int8_reference.conv2d_acc(x, w, stride, kernel // 2, groups)
        return (lambda v: relax.op.nn.conv2d(v, relax.const(w), strides=stride, padding=kernel // 2, groups=groups,
                                             out_dtype="int32"), x, ref)
    x = rng.standard_normal((1, channels, size, size)).astype("float32")
    w = rng.standard_normal(w_shape).astype("float32")
    ref = torch.relu(F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), stride=stride,
                              padding=kernel // 2, groups=groups)).float().numpy()
    return (lambda v: relax.op.nn.relu(relax.op.nn.conv2d(v, relax.const(w), strides=stride, padding=kernel // 2,
                                                          groups=groups)), x, ref)


DOT_CASES = {  # name -> (make, x, numpy reference); all compiled into one module for the 865 target
    "fp32_grouped_bias_relu": conv_case("grouped", "float32", 32, 16, (10, 12), bias=True, relu=True),
    "fp32_sparse_stride2": conv_case("sparse", "float32", 24, 16, 9, stride=2),
    "fp32_active": conv_case("active", "float32", 20, 8, 7, bias=True),
    "fp32_none_stride2_o12": conv_case("none", "float32", 16, 12, 8, stride=2),
    "int8_grouped_requant_relu": conv_case("grouped", "int8", 32, 16, (6, 8), bias=True, relu=True,
                                           requant=0.0123, zp=3),
    "int8_sparse_stride2_bias_relu": conv_case("sparse", "int8", 16, 8, 9, stride=2, bias=True, relu=True),
    "int8_none_acc": conv_case("none", "int8", 64, 32, 5),
    "int8_grouped_requant_nobias": conv_case("grouped", "int8", 36, 12, 7, requant=0.002, zp=-5),
    "int8_c18_fallback_requant": conv_case("grouped", "int8", 18, 8, 6, bias=True, requant=0.01),
    "conv_fp32_1x1": plain_conv_case(32, 32, 1, 12),
    "conv_fp32_3x3_14": plain_conv_case(16, 24, 3, 14),
    "conv_fp32_3x3_stride2": plain_conv_case(16, 32, 3, 11, stride=2),
    "conv_fp32_depthwise": plain_conv_case(16, 16, 3, 10, groups=16),
    "conv_int8_1x1": plain_conv_case(32, 32, 1, 12, dtype="int8"),
    "conv_int8_3x3_14": plain_conv_case(16, 24, 3, 14, dtype="int8"),
    "conv_int8_3x3_stride2": plain_conv_case(16, 32, 3, 11, stride=2, dtype="int8"),
    "conv_int8_grouped": plain_conv_case(16, 16, 3, 9, groups=4, dtype="int8"),
    "conv_int8_depthwise_stride2": plain_conv_case(16, 16, 3, 10, stride=2, groups=16, dtype="int8"),
    "shift2d": shift_case("grouped"),
    "shift2d_k5_d2_grouped": shift_case("grouped", k=5, d=2, mapping="grouped"),
    "shift2d_circular": shift_case("grouped", padding_mode="circular"),
    "shift2d_int8": shift_case("grouped", "int8"),
    "sparse_shift2d": shift_case("sparse"),
    "active_shift2d": shift_case("active"),
    "active_shift2d_stride2_pad1": shift_case("active", stride=2, padding=1),
}
NO_DOT_CASES = {
    "conv_int8_3x3_14": DOT_CASES["conv_int8_3x3_14"],
    "int8_grouped_requant_relu": DOT_CASES["int8_grouped_requant_relu"],
    "int8_sparse_stride2_bias_relu": DOT_CASES["int8_sparse_stride2_bias_relu"],
}


@pytest.fixture(scope="module")
def session(device):
    """One RPC session for the module: the tracker has one emulated device, a second request would queue."""
    host, port, key = device
    return rpc.connect_tracker(host, port).request(key, session_timeout=600)


def remote_vm(session, cases, target, tmp_path_factory, tag=""):
    """Build every case into one module with tvm_ecnn.pipeline, cross-export, upload, load on the device
    (``tag``: a distinct file name per module; re-uploading a loaded ``.so`` kills the server)."""
    ex = pipeline.build(multi_function_module(cases), target)
    so = tmp_path_factory.mktemp("arm") / f"ecnn_{target.attrs['mcpu'].replace('-', '_')}{tag}.so"
    ex.export_library(str(so), fcompile=cross_compiler_for(target))
    session.upload(str(so))
    return session, relax.VirtualMachine(session.load_module(so.name), session.cpu())


@pytest.fixture(scope="module")
def dot_device(session, tmp_path_factory):
    return remote_vm(session, DOT_CASES, ARM, tmp_path_factory)


I8MM_CASES = {name: case for name, case in DOT_CASES.items() if name.startswith("conv_int8")}


@pytest.fixture(scope="module")
def i8mm_device(session, tmp_path_factory):
    return remote_vm(session, I8MM_CASES, I8MM, tmp_path_factory)


@pytest.fixture(scope="module")
def no_dot_device(session, tmp_path_factory):
    return remote_vm(session, NO_DOT_CASES, NO_DOT, tmp_path_factory)


def check(remote_and_vm, name, case):
    remote, vm = remote_and_vm
    _, x, ref = case
    out = vm[name](tvm.runtime.tensor(x, remote.cpu())).numpy()
    assert out.dtype == ref.dtype and out.shape == ref.shape
    if ref.dtype == np.float32:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", list(DOT_CASES))
def test_on_device_865(dot_device, name):
    check(dot_device, name, DOT_CASES[name])


@pytest.mark.parametrize("name", list(I8MM_CASES))
def test_on_device_with_i8mm(i8mm_device, name):
    check(i8mm_device, name, I8MM_CASES[name])


@pytest.mark.parametrize("name", list(NO_DOT_CASES))
def test_on_device_without_dotprod(no_dot_device, name):
    check(no_dot_device, name, NO_DOT_CASES[name])


# ------------------------------------------------------------------------------------------------------------------
# int8 with every epilogue (test_int8_ops.INT8_CASES): sdot kept, bit-exact on the device


def test_int8_epilogues_keep_the_sdot_hot_loop():
    make, x, _ = conv_int8_case("sparse", 64, 32, 16, activation="relu6", x_zp=7, per_channel=True, residual=True)
    asm = assembly(pipeline.build(build_module(make, [(x.shape, "int8")]), ARM))
    ops = mnemonics(hot_loop(asm, "sdot"))
    assert ops["sdot"] == 16 and not ops["smull"]


@pytest.fixture(scope="module")
def int8_device(session, tmp_path_factory):
    return remote_vm(session, INT8_CASES, ARM, tmp_path_factory, tag="_int8")


@pytest.mark.parametrize("name", list(INT8_CASES))
def test_int8_on_device_865_bit_exact(int8_device, name):
    check(int8_device, name, INT8_CASES[name])
