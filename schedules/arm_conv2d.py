"""int8 conv2d on Arm NEON: the ``shift_conv2d`` micro-kernel's ``sdot`` tile for every plain conv.

fp32 convs (and depthwise, int8 included) take the generic CPU schedules (``cpu_conv2d.py``: with
NEON's 4 lanes and 16-accumulator budget, 16 channels x 4 pixels, weights packed at compile time).
int8 convs with 4-channel groups of input (groups 1) would get there the fp schedule's widening
multiplies (``sshll``/``smlal``: ~7 instructions per 4 MACs); here they run
``cpu_int8.dot_conv2d`` with ``arm_cpu``'s 4x4 dot product instead (``sdot``, or the
``smull``/``saddlp`` form without dotprod) on ``arm_cpu.micro_tile``'s register tile: per
``(ry, rx, 4 input channels)`` step, 16 ``sdot`` on 16 accumulators.

With i8mm (the ARMv9 presets: 8 Gen 1 / 2 / 3) ``smmla`` instead (``mmla_conv2d``): 32 MACs per
instruction against ``sdot``'s 16, at the same issue rate on Cortex-X3/X4 (SWOG). Counted in the
hot loops' assembly (the kernels of tests/test_arm_schedules.py): 17.2 MACs per
instruction against 9.2 for ``sdot`` on a 3x3 conv 32->64 on 16x16, 9.4 against 7.3 on a 1x1
64->64 (LLVM unrolls its 8 channel steps fully and reloads the weights from the stack).
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from . import arm_cpu, cpu_conv2d_block, cpu_int8


def sdot_conv2d(sch, conv, epilogue, pad, target) -> bool:
    """int8 conv2d on the 4x4 dot product; False (nothing changed) when the target is not an Arm
    CPU or the conv does not fit (``cpu_int8.dot_conv2d_shape``, output channels a multiple of 4)."""
    shape = cpu_int8.dot_conv2d_shape(sch, conv) if "arm_cpu" in target.keys else None
    if shape is None or shape[0] % 4:
        return False
    cpu_int8.dot_conv2d(sch, conv, epilogue, pad, arm_cpu.dot_intrinsic(target), 4, arm_cpu.micro_tile(*shape))
    return True


# --------------------------------------------------------------------------------------------
# i8mm (ARMv8.6 / v9: the 8 Gen 1 / 2 / 3 presets): smmla, a 2x8 by 8x2 int8 matrix product


MMLA = "ecnn_mmla_2x2x8_i8i8s32"


@T.prim_func(s_tir=True)
def _mmla_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    s0 = T.int32()
    A = T.match_buffer(a, (2, 8), "int8", offset_factor=1, strides=[s0, 1])
    B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
    C = T.match_buffer(c, (2, 2), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
        T.writes(C[0:2, 0:2])
        for i, j, k in T.grid(2, 2, 8):
            with T.sblock("update"):
                vj, vi, vk = T.axis.remap("SSR", [j, i, k])  # conv2d's block iterators: channel before pixel
                C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(B[vj, vk], "int32")


@T.prim_func(s_tir=True)
def _mmla_smmla(a: T.handle, b: T.handle, c: T.handle) -> None:
    s0 = T.int32()
    A = T.match_buffer(a, (2, 8), "int8", offset_factor=1, strides=[s0, 1])
    B = T.match_buffer(b, (2, 8), "int8", offset_factor=1)
    C = T.match_buffer(c, (2, 2), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
        T.writes(C[0:2, 0:2])
        pixels = T.Shuffle([A.vload([0, 0], "int8x8"), A.vload([1, 0], "int8x8")], list(range(16)))
        C.vstore([0, 0], T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smmla"), C.vload([0, 0], "int32x4"), pixels,
            B.vload([0, 0], "int8x16"), dtype="int32x4"))


TensorIntrin.register(MMLA, _mmla_desc, _mmla_smmla, override=True)
MMLA_OUT_TILES = (16, 8, 4, 2)  # output channels per micro-kernel: 8 / 4 / 2 / 1 accumulator columns of 2
MMLA_PIXEL_TILES = (4, 2)  # output pixels: 2 / 1 accumulator rows of 2


def has_i8mm(target) -> bool:
    return "arm_cpu" in target.keys and bool(target.attrs.get("feature.has_matmul_i8", False))


def mmla_conv2d(sch, conv, epilogue, pad, target) -> bool:
    """int8 conv2d on ``smmla`` (i8mm): each instruction multiplies 2 output pixels x 8 input channels by
    8 input channels x 2 output channels into a 2x2 int32 accumulator (32 MACs; ``sdot``: 16). Tile: 16
    output channels x 4 pixels = 16 accumulator registers, per 8 input channels and tap 16 ``smmla``, 2
    input loads of 2 x 8 bytes (pixels of the NHWC stage, ``C`` apart), 8 weight ``ldr q`` from the
    ``[O / 2, C / 8, kh, kw, 2, 8]`` weights packed at compile time. False (nothing changed) when the
    target has no i8mm or the conv does not fit (input channels a multiple of 8, output channels of 2,
    an even output width, stride 1: strided rows fail to tensorize, "v_xx_o is not defined")."""
    shape = cpu_int8.dot_conv2d_shape(sch, conv) if has_i8mm(target) and conv.unit_stride else None
    channels = int(sch.get(sch.get_loops(conv.block)[4]).extent)
    if shape is None or channels % 8 or shape[0] % 2 or shape[1] % 2:
        return False
    out_tile = next(o for o in MMLA_OUT_TILES if shape[0] % o == 0)
    pixels = next(p for p in MMLA_PIXEL_TILES if shape[1] % p == 0)
    block = conv.block
    n, f, y, x, rc, ry, rx = sch.get_loops(block)
    store = cpu_int8.stage_dot_operands(sch, conv, epilogue, pad, lambda f_, c_, r_, s_: (
        f_ // 2, c_ // 8, r_, s_, f_ % 2, c_ % 8))
    fo, fi = sch.split(f, [None, out_tile])
    ft, f2 = sch.split(fi, [None, 2])
    xo, xi = sch.split(x, [None, pixels])
    xt, x2 = sch.split(xi, [None, 2])
    rco, rc8 = sch.split(rc, [None, 8])
    sch.reorder(n, fo, y, xo, ry, rx, rco, xt, ft, x2, f2, rc8)
    sch.reverse_compute_at(store, xo)
    sch.transform_layout(block, ("write", 0), lambda n_, f_, y_, x_: (n_, y_, x_ // 2, f_ // 2, x_ % 2, f_ % 2))
    cpu_conv2d_block.parallel_conv(sch, conv, sch.fuse(n, fo, y))
    init = sch.decompose_reduction(block, ry)
    sch.tensorize(x2, MMLA)
    sch.unroll(xt)
    sch.unroll(ft)
    sch.set_scope(init, 0, "local")
    sch.vectorize(sch.get_loops(store)[-1])
    return True


def int8_conv2d(sch, conv, epilogue, pad, target) -> bool:
    """``smmla`` where the target has i8mm and the conv fits, else ``sdot``; False when neither applies."""
    return mmla_conv2d(sch, conv, epilogue, pad, target) or sdot_conv2d(sch, conv, epilogue, pad, target)
