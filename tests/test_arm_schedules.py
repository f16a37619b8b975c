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
import tvm
from tvm import relax, rpc

import relay_ops
import targets
from reference import active_shift_ref, circular_shift_ref, requantize_ref, shift_ref
from relax_helpers import build_module, multi_function_module
from test_int8_ops import INT8_CASES, conv_int8_case
from tvm_ecnn import pipeline
from tvm_ecnn.device.export import cross_compiler_for
from tvm_ecnn.nn.offsets import grouped_shift_offsets

ARM = targets.get_target("aarch64-linux")  # Snapdragon 865 big cores (cortex-a77, +dotprod), aarch64-linux-gnu
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
    assert not [ln for ln in body if re.search(r"\b(str|stp|stur)\s.*\[sp", ln)], body  # no accumulator spills


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
    # per input channel: 4 pixel broadcasts x 16 int8 weights -> widening multiply, widening accumulate
    assert ops["smull"] == ops["smull2"] == 4 and ops["saddw"] == ops["saddw2"] == 8
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
    "shift2d": shift_case("grouped"),
    "shift2d_k5_d2_grouped": shift_case("grouped", k=5, d=2, mapping="grouped"),
    "shift2d_circular": shift_case("grouped", padding_mode="circular"),
    "shift2d_int8": shift_case("grouped", "int8"),
    "sparse_shift2d": shift_case("sparse"),
    "active_shift2d": shift_case("active"),
    "active_shift2d_stride2_pad1": shift_case("active", stride=2, padding=1),
}
NO_DOT_CASES = {
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
