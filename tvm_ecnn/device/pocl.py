"""Run the OpenCL kernels TVM emits for Adreno on PoCL (a CPU OpenCL) and check them against a host oracle.

Why: the PyPI TVM wheel has no OpenCL runtime and CI has no Adreno, yet every generated ``.cl`` must at least
compile, and its numerics must match. This module replays what the TVM OpenCL runtime would do, with pyopencl.

API (shared notes ``emulated-device.md`` B3 for the recipe):

* ``lower_for_adreno(mod, target, tir_pipeline="default") -> AdrenoLowering`` lowers a Relax module exactly like
  ``tvm.compile`` does for an Adreno target: ``relax.get_default_pipeline(target)`` under ``with target``, then the
  TIR pipeline of ``tirx.build`` (``tir_pipeline`` as in ``tvm.compile``: a registered name, or None for the
  target's default), ``split_host_device_mods`` and the device finalisation. ``.source`` is the ``.cl`` that ships.
* ``opencl_kernels(lowering_or_device_mod) -> list[KernelInfo]``: per kernel its name, the whole program source,
  the NDRange (``global = blockIdx * threadIdx`` extents, ``local = threadIdx`` extents, per x/y/z, from the
  ``thread_extent`` attributes of the kernel body) and its parameters in kernel order, each mapped to the PrimFunc
  buffer it points to (name, dtype, logical shape, storage scope). A compiled ``tvm.compile`` executable only
  carries the source (launch extents live in host machine code): use ``opencl_source(executable)`` +
  ``build_on_pocl`` for it.
* ``build_on_pocl(source) -> pyopencl.Program`` (cached per source); raises ``PoclBuildError`` with the build log.
* ``run_kernel_on_pocl(kernel, buffers: {buffer name: ndarray}) -> {buffer name: ndarray}``: missing buffers are
  zero-filled; every buffer is read back (logical shapes).
* ``run_relax_on_pocl(mod, target, inputs) -> PoclRun`` interprets the lowered Relax ``main`` (VM-level: allocs,
  PrimFunc calls, reshapes, copies between buffers and images) and executes every PrimFunc call's kernels on PoCL
  in call order, feeding PoCL results forward. Each call is also run through the *same* fused PrimFunc before GPU
  scheduling (the Adreno legalize passes without dlight), compiled for host LLVM, on the same inputs:
  ``PoclRun.checks`` holds the per-call error (``KernelCheck.rel_err`` relative to the buffers' magnitude).
  ``check_relax_on_pocl(...) -> float`` is its ``max_abs_err``.

Texture path (``global.texture*`` scopes, ``image2d_array_t`` args): images follow TVM's flattening
(``DefaultTextureLayoutSeparator``/``ApplyTexture2DFlattening``: last axis = RGBA lanes, axes before the
separator-1 = layers, the one before the separator = rows, the rest = columns). Stock TVM 0.27's default TIR
pipeline emits texture OpenCL that does not compile (notes F6) and, with the Adreno TIR pipeline forced, writes
one RGBA lane per pixel (F7); pass ``tir_pipeline=tvm_ecnn.pipeline.tir_pipeline(target)`` (our fixed pipeline,
``compiler_pass/adreno_tir.py``) to run what ``tvm_ecnn`` ships. fp16 kernels need ``cl_khr_fp16``, absent from
PoCL here (pip's 3.0, F8): ``half_as_float=True`` (``run_kernel_on_pocl``, ``run_relax_on_pocl``) runs them anyway,
with ``half`` storage kept exact (buffers and images hold float16 values, every stored value is rounded to float16
on readback) and ``half`` arithmetic inside a kernel done in float (``emulate_half``), which rounds once per
stored value instead of once per operation.

Requires ``pyopencl`` and ``pocl-binary-distribution`` (the ``opencl`` and ``test`` extras): PoCL from pip, loaded
in-process by pyopencl's own ICD loader, no ICD file in ``/etc`` and nothing installed by root.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import importlib
import importlib.metadata
import re
import warnings
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import ClassVar

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx

from ..compiler_pass.unique_param_names import unique_param_names
from .errors import ExternalToolError


class PoclBuildError(ExternalToolError):
    """clBuildProgram failed; ``.log`` is PoCL's build log."""

    def __init__(self, message: str, log: str):
        super().__init__(f"{message}\n--- build log ---\n{log}")
        self.log = log


# ---------------------------------------------------------------------------------------------------------------
# lowering and kernel extraction


@dataclass(frozen=True)
class KernelParam:
    """One kernel argument: a buffer (``scope`` global or global.texture*) or a scalar (``scope`` == "")."""

    name: str  # kernel parameter, e.g. "x_ptr"
    buffer: str  # PrimFunc buffer it points to, e.g. "x" (the key of run_kernel_on_pocl's dict)
    dtype: str
    shape: tuple[int, ...]  # logical (PrimFunc) shape when known, else the flattened device shape
    scope: str

    @property
    def is_texture(self) -> bool:
        return "texture" in self.scope


@dataclass(frozen=True)
class KernelInfo:
    name: str
    source: str  # the whole OpenCL program (all kernels compile as one unit)
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]
    params: tuple[KernelParam, ...]


@dataclass
class AdrenoLowering:
    relax_mod: tvm.IRModule  # after the Adreno Relax pipeline: VM-level main + scheduled PrimFuncs
    host_mod: tvm.IRModule  # lowered host side (launch order), before host finalisation
    device_mod: tvm.IRModule  # finalised OpenCL kernels
    source: str
    kernels: list[KernelInfo] = field(default_factory=list)
    launches: dict[str, list[str]] = field(default_factory=dict)  # PrimFunc -> kernels it launches, in order


def _prim_funcs(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)})


def _walk(node, node_type) -> list:
    found = []
    tvm_ffi.structural_walk(node, ((node_type, found.append),), order="pre")
    return found


def _int_tuple(shape) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in shape)
    except TypeError as err:  # a symbolic extent
        raise NotImplementedError(f"dynamic shape {shape} is not supported") from err


def _split_lanes(dtype: str) -> tuple[str, int]:
    """"float32x4" -> ("float32", 4)."""
    base, _, lanes = dtype.rpartition("x")
    return (base, int(lanes)) if base and lanes.isdigit() else (dtype, 1)


def _ndrange(kernel: tirx.PrimFunc) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """TVM's launch mapping: local[d] = threadIdx.{x,y,z}, global[d] = blockIdx.{x,y,z} * local[d]."""
    extents = {}
    for attr in _walk(kernel.body, tirx.AttrStmt):
        if attr.attr_key == "thread_extent":
            tag = attr.node.thread_tag
            if not isinstance(attr.value, tirx.IntImm):
                raise NotImplementedError(f"{kernel.attrs['global_symbol']}: dynamic {tag} extent {attr.value}")
            extents[tag] = max(extents.get(tag, 1), int(attr.value))
    used = [d for d, axis in enumerate("xyz") if f"blockIdx.{axis}" in extents or f"threadIdx.{axis}" in extents]
    ndim = used[-1] + 1 if used else 1
    local = tuple(extents.get(f"threadIdx.{axis}", 1) for axis in "xyz"[:ndim])
    blocks = tuple(extents.get(f"blockIdx.{axis}", 1) for axis in "xyz"[:ndim])
    return tuple(b * t for b, t in zip(blocks, local, strict=True)), local


def _kernel_info(kernel: tirx.PrimFunc, source: str, logical: dict[str, tirx.Var]) -> KernelInfo:
    """``logical``: the launching PrimFunc's params by buffer name (for logical shapes); may be empty."""
    decls = _walk(kernel.body, tirx.DeclBuffer)
    params = []
    for p in kernel.params:
        ty = p.ty
        if isinstance(ty, tvm.ir.PointerType):
            decl = next((d for d in decls if any(v.same_as(p) for v in _walk(d.data, tirx.Var))), None)
            buf = decl.buffer if decl is not None else None
            bname = buf.name if buf is not None else p.name.removesuffix("_ptr")
            src = logical.get(bname)
            shape = _int_tuple(src.shape if src is not None else (buf.shape if buf is not None else ()))
            dtype, lanes = _split_lanes(str(ty.element_type.dtype))
            if src is None and lanes > 1:  # e.g. a float32x4 scratch buffer: one trailing axis for the lanes
                shape += (lanes,)
            params.append(KernelParam(p.name, bname, dtype, shape, str(ty.storage_scope) or "global"))
        else:
            params.append(KernelParam(p.name, p.name, str(ty.dtype), (), ""))
    global_size, local_size = _ndrange(kernel)
    return KernelInfo(str(kernel.attrs["global_symbol"]), source, global_size, local_size, tuple(params))


def lower_for_adreno(mod: tvm.IRModule, target, tir_pipeline="default") -> AdrenoLowering:
    """Lower ``mod`` as ``tvm.compile(mod, target, tir_pipeline=tir_pipeline)`` would, keeping the pieces.

    Works on a deep copy: the texture Relax pipeline mutates its input in place (invisibly in ``script()``), and
    a second pipeline run on the same module then fails ("DataflowBlock Pass should not rewrite ... global-scope
    Var"). PrimFunc parameters FuseTIR named alike are renamed apart (``compiler_pass/unique_param_names.py``:
    kernels are matched to buffers by name); the plugin's texture TIR pipeline does the same, so its source is
    still what ships.
    """
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    with target:
        relax_mod = relax.get_default_pipeline(target)(copy.deepcopy(mod))
    for gv, func in list(relax_mod.functions.items()):
        if isinstance(func, tirx.PrimFunc):
            relax_mod[gv] = unique_param_names(func)
    tir_mod = _prim_funcs(relax_mod)
    host = target.host or tvm.target.Target({"kind": "llvm"})
    # tirx.build: bind the target (with host), run its TIR pipeline, split host/device, finalise the device side.
    if tir_pipeline is None:
        pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(target)
    else:
        pipeline, _, finalize_device = tvm.tirx.get_tir_pipeline(tir_pipeline)
    lowered = pipeline(tvm.tirx.transform.BindTarget(target.with_host(host))(tir_mod))
    build = importlib.import_module("tvm.tirx.build")  # the module; tvm.tirx.build is the function
    host_mod, device_mods = build.split_host_device_mods(lowered)
    opencl = [(t, m) for t, m in device_mods.items() if t.kind.name == "opencl"]
    if not opencl:
        raise ValueError("no OpenCL kernel was generated (PrimFuncs without thread bindings run on the host)")
    (dev_target, device_mod), = opencl
    device_mod = finalize_device()(device_mod)
    source = build.codegen_build(device_mod, dev_target).inspect_source()
    lowering = AdrenoLowering(relax_mod, host_mod, device_mod, source)
    kernel_funcs = {str(f.attrs["global_symbol"]): f for f in device_mod.functions.values()}
    for gv, host_func in host_mod.functions.items():
        # launches are calls whose first argument names a kernel (call_ffi_kernel), in program order
        names = [str(c.args[0].value) for c in _walk(host_func, tvm.ir.Call)
                 if c.args and isinstance(c.args[0], tvm.ir.StringImm)]
        launched = list(dict.fromkeys(n for n in names if n in kernel_funcs))
        if launched:
            lowering.launches[gv.name_hint] = launched
            logical = {p.name: p for p in tir_mod[gv.name_hint].params}
            lowering.kernels += [_kernel_info(kernel_funcs[k], source, logical) for k in launched]
    return lowering


def opencl_kernels(lowered: AdrenoLowering | tvm.IRModule, source: str | None = None) -> list[KernelInfo]:
    """Kernels of a lowering (launch order, logical shapes) or of a bare device IRModule (flat shapes)."""
    if isinstance(lowered, AdrenoLowering):
        return list(lowered.kernels)
    kernels = [f for f in lowered.functions.values() if isinstance(f, tirx.PrimFunc)]
    if source is None:
        build = importlib.import_module("tvm.tirx.build")
        source = build.codegen_build(lowered, kernels[0].attrs["target"]).inspect_source()
    return [_kernel_info(k, source, {}) for k in kernels]


def opencl_source(executable) -> str:
    """The OpenCL source embedded in a ``tvm.compile``d executable (or runtime module)."""
    module = getattr(executable, "mod", executable)
    found = module._collect_from_import_tree(lambda m: m.kind == "opencl")  # pylint: disable=protected-access
    if not found:
        raise ValueError("no OpenCL module in this executable (was the PrimFunc scheduled for the GPU?)")
    return "\n".join(m.inspect_source() for m in found)


def opencl_source_from_library(path) -> str:
    """The OpenCL source packed into an exported ``.so`` of any architecture (no need to load it).

    TVM stores the OpenCL module's source in the library blob as a length-prefixed string that
    starts with ``// Function:``; a ``.so`` for an Android phone cannot be loaded here, but its
    kernels can still be built and run on PoCL.
    """
    data = Path(path).read_bytes()
    start = data.find(b"// Function: ")
    while start >= 8:
        size = int.from_bytes(data[start - 8:start], "little")
        if 0 < size <= len(data) - start:
            return data[start:start + size].decode()
        start = data.find(b"// Function: ", start + 1)
    raise ValueError(f"{path}: no OpenCL source inside (was it compiled for an Adreno target?)")


# ---------------------------------------------------------------------------------------------------------------
# PoCL


POCL_INSTALL = "pip install 'pyopencl[pocl]' (the project's opencl and test extras)"


def _pip_pocl_first(platforms: list) -> list:
    """The PoCL platforms, the one from ``pocl-binary-distribution`` first: where a system PoCL ICD exists too,
    every machine still runs the same (pip) PoCL."""
    pocl = [p for p in platforms if "portable computing language" in p.name.lower() or "pocl" in p.name.lower()]
    try:
        pip_version = f"PoCL {importlib.metadata.version('pocl-binary-distribution')}"
    except importlib.metadata.PackageNotFoundError:
        return pocl
    return sorted(pocl, key=lambda p: pip_version not in p.version)


GENERIC_CPU = b"generic\0"
_DEVICE_SCAN_BYTES = 4096  # pip PoCL 3.0 keeps ``llvm_cpu`` 640 bytes into its ``_cl_device_id``
_cpu_names: list = []  # the C strings patched in stay alive as long as the process


def llvm_cpu_for_host(flags: set[str]) -> bytes:
    """The LLVM CPU whose features pip PoCL's distro kernel library (sse2 ... avx512 variants) was built for,
    from ``/proc/cpuinfo`` flags: a CPU LLVM 14 cannot name still gets the variant it would pick."""
    if "avx512f" in flags:
        return b"skylake-avx512"
    return b"haswell" if "avx2" in flags else b"x86-64"


def _readable_ranges() -> list[tuple[int, int]]:
    """The process's readable mappings, read once per scan (a word is checked before it is followed)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            if perms.startswith("r"):
                ranges.append(tuple(int(x, 16) for x in span.split("-")))
    return ranges


def _readable(ranges, address: int, size: int) -> bool:
    return any(low <= address and address + size <= high for low, high in ranges)


def _device_words(struct_address: int, scan_bytes: int, ranges):
    """The struct as 64-bit words, or None when the scanned span is not readable memory."""
    if not _readable(ranges, struct_address, scan_bytes):
        return None
    return (ctypes.c_uint64 * (scan_bytes // 8)).from_address(struct_address)


def replace_generic_cpu(struct_address: int, cpu: bytes, scan_bytes: int = _DEVICE_SCAN_BYTES) -> bool:
    """Point the first ``char *`` of the struct at ``struct_address`` that reads "generic" at ``cpu``.

    Why: pip PoCL 3.0 links LLVM 14, which names no CPU newer than it (Zen 5 is AMD family 26), so PoCL passes
    ``-target-cpu generic`` and clang refuses every program ("unknown target CPU 'generic'", pocl/pocl#1049).
    Its build options cannot override the CPU and its LLVM calls are bound inside the library (``DT_SYMBOLIC``),
    so the device's own ``llvm_cpu`` field is the one place to name it. False (nothing changed) when the struct
    holds no such pointer."""
    ranges = _readable_ranges()
    words = _device_words(struct_address, scan_bytes, ranges)
    for index, word in enumerate(words if words is not None else ()):
        if _readable(ranges, word, len(GENERIC_CPU)) and ctypes.string_at(word, len(GENERIC_CPU)) == GENERIC_CPU:
            _cpu_names.append(ctypes.create_string_buffer(cpu))
            words[index] = ctypes.addressof(_cpu_names[-1])
            return True
    return False


ADRENO_IMAGE2D_MAX = 16384
"""CL_DEVICE_IMAGE2D_MAX_WIDTH/HEIGHT of Adreno 6xx-8xx; PoCL's CPU device says 8192, and TVM's texture planning,
made for Adreno, lays some tensors out wider (ShiftResNet-20 at 32x32: a 12288-texel row)."""


def widen_images_to_adreno(struct_address: int, width: int, height: int, scan_bytes: int = _DEVICE_SCAN_BYTES) -> bool:
    """Raise the device's 2D image limits (the adjacent ``image2d_max_width``/``_height`` words, found by the values
    the device reports) to Adreno's, so an image the phone accepts is accepted here. PoCL's images are plain host
    memory; the limit is a number. False (nothing changed) when the pair is not found."""
    words = _device_words(struct_address, scan_bytes, _readable_ranges())
    for index in range(len(words) - 1 if words is not None else 0):
        if (words[index], words[index + 1]) == (width, height):
            words[index] = words[index + 1] = max(width, ADRENO_IMAGE2D_MAX)
            return True
    return False


def _name_the_host_cpu(device) -> None:
    """PoCL reports the CPU it compiles for at the end of its version (``HSTR: pthread-<triple>-<cpu>``)."""
    if device.version.endswith("-generic"):
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
        replace_generic_cpu(device.int_ptr, llvm_cpu_for_host(set(flags)))


@functools.cache
def pocl_queue():
    """A command queue on the PoCL platform (chosen by name so a real GPU ICD never gets picked)."""
    try:
        import pyopencl as cl
    except ImportError:
        raise ExternalToolError(f"pyopencl, needed to run OpenCL kernels on PoCL, is not installed: {POCL_INSTALL}") \
            from None
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD at all: clGetPlatformIDs returns -1001
        platforms = []
    pocl = _pip_pocl_first(platforms)
    if not pocl:
        raise ExternalToolError(f"no PoCL OpenCL platform (found {[p.name for p in platforms]}): {POCL_INSTALL}")
    device = pocl[0].get_devices()[0]
    _name_the_host_cpu(device)
    if device.image2d_max_width < ADRENO_IMAGE2D_MAX:
        widen_images_to_adreno(device.int_ptr, device.image2d_max_width, device.image2d_max_height)
    return cl.CommandQueue(cl.Context([device]))


@functools.lru_cache(maxsize=32)
def build_on_pocl(source: str, options: tuple[str, ...] = ()):
    """Compile the whole program; raises ``PoclBuildError`` carrying PoCL's build log."""
    context = pocl_queue().context  # first: it names the package to install when pyopencl is missing
    import pyopencl as cl

    program = cl.Program(context, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cl.CompilerWarning)
            return program.build(options=list(options))
    except cl.Error as err:
        try:
            log = program.get_build_info(context.devices[0], cl.program_build_info.LOG)
        except cl.Error:
            log = str(err)
        raise PoclBuildError("PoCL failed to build the OpenCL program", log) from None


def texture_shape(shape: tuple[int, ...], scope: str) -> tuple[int, int, int, int]:
    """(layers, rows, columns, lanes) of an N-d buffer stored as ``image2d_array_t`` under ``scope``."""
    rank = len(shape)
    separators = {"global.texture": rank - 2, "global.texture-weight": 1, "global.texture-nhwc": 2}
    if scope not in separators or rank < 3 or shape[-1] not in (1, 2, 4):
        raise NotImplementedError(f"no image layout for shape {shape} in scope {scope!r} (needs the logical "
                                  "N-d shape, rank >= 3, last axis 1/2/4 lanes)")
    axis = separators[scope]  # >= 1 for rank >= 3
    return prod(shape[: axis - 1]), shape[axis - 1], prod(shape[axis:-1]), shape[-1]


def _image(queue, array: np.ndarray, scope: str):
    import pyopencl as cl

    depth, height, width, lanes = texture_shape(array.shape, scope)
    order = {1: cl.channel_order.R, 2: cl.channel_order.RG, 4: cl.channel_order.RGBA}[lanes]
    ctype = {"float32": cl.channel_type.FLOAT, "float16": cl.channel_type.HALF_FLOAT}[str(array.dtype)]
    image = cl.create_image(queue.context, cl.mem_flags.READ_WRITE, cl.ImageFormat(order, ctype),
                            shape=(width, height, depth), is_array=True)
    cl.enqueue_copy(queue, image, np.ascontiguousarray(array), origin=(0, 0, 0), region=(width, height, depth))
    return image


_FP16_PRAGMA = re.compile(r"#ifdef cl_khr_fp16\n.*?#endif\n", re.DOTALL)
_HALF = re.compile(r"(?<![A-Za-z0-9])half(\d*)\b")


def emulate_half(source: str) -> str:
    """``source`` with every ``half`` type, conversion and image access in float (for a device without
    ``cl_khr_fp16``); pair it with float32 copies of the float16 data (``run_kernel_on_pocl(half_as_float=True)``)."""
    source = _FP16_PRAGMA.sub("", source)
    source = source.replace("read_imageh", "read_imagef").replace("write_imageh", "write_imagef")
    return _HALF.sub(r"float\1", source)


def run_kernel_on_pocl(kernel: KernelInfo, buffers: dict[str, np.ndarray],
                       half_as_float: bool = False) -> dict[str, np.ndarray]:
    """Launch one kernel on PoCL; returns every buffer argument after the launch (by buffer name).

    ``half_as_float``: run a float16 kernel through ``emulate_half`` on float32 copies of its float16 buffers,
    and round them back to float16 after the launch (storage stays exact float16)."""
    import pyopencl as cl

    queue = pocl_queue()
    program = build_on_pocl(emulate_half(kernel.source) if half_as_float else kernel.source)
    args, readback = [], []
    for p in kernel.params:
        dtype = "float32" if half_as_float and p.dtype == "float16" else p.dtype
        if not p.scope:
            args.append(np.dtype(dtype).type(buffers[p.buffer]))
            continue
        host = buffers.get(p.buffer)
        host = np.zeros(p.shape, p.dtype) if host is None else np.ascontiguousarray(host, dtype=p.dtype)
        host = host.astype(dtype)
        if host.size != prod(p.shape):
            raise ValueError(f"{kernel.name}: buffer {p.buffer} has {host.size} elements, kernel expects {p.shape}")
        host = host.reshape(p.shape).copy()
        if p.is_texture:
            dev = _image(queue, host, p.scope)
        else:
            dev = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR,
                            hostbuf=host if host.nbytes else np.zeros(1, p.dtype))
        args.append(dev)
        readback.append((p, host, dev))
    cl.Kernel(program, kernel.name)(queue, kernel.global_size, kernel.local_size, *args)
    out = {}
    for p, host, dev in readback:
        if p.is_texture:
            depth, height, width, _ = texture_shape(p.shape, p.scope)
            cl.enqueue_copy(queue, host, dev, origin=(0, 0, 0), region=(width, height, depth))
        elif host.nbytes:
            cl.enqueue_copy(queue, host, dev)
        out[p.buffer] = host.astype(p.dtype)
    queue.finish()
    return out


# ---------------------------------------------------------------------------------------------------------------
# whole Relax module on PoCL vs host oracle


@dataclass
class KernelCheck:
    func: str  # the PrimFunc (fused op) called by main
    kernels: list[str]  # OpenCL kernels it launched, in order
    max_abs_err: float  # PoCL vs the unscheduled PrimFunc on host LLVM, same inputs, over all its buffers
    max_abs_ref: float = 0.0  # the largest magnitude in those buffers (oracle side): the scale of max_abs_err

    @property
    def rel_err(self) -> float:
        """``max_abs_err`` relative to the buffers' magnitude (fp16 tolerances are relative)."""
        return self.max_abs_err / max(self.max_abs_ref, 1e-30)


@dataclass
class PoclRun:
    lowering: AdrenoLowering
    outputs: object  # main's result computed on PoCL: ndarray or tuple of them
    checks: list[KernelCheck]

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.checks), default=0.0)


def _oracle(mod: tvm.IRModule, target: tvm.target.Target):
    """The fused PrimFuncs before GPU scheduling (Adreno legalize passes minus dlight), built for host LLVM."""
    with target:
        passes = [p for p in relax.backend.adreno.legalize_passes(target) if p.info.name != "ApplyDefaultSchedule"]
        fused = tvm.transform.Sequential(passes)(copy.deepcopy(mod))
    # Without a global_symbol MakePackedAPI treats them as internal; a bound opencl target would make them GPU code.
    funcs = {gv: f.without_attr("target").with_attr("global_symbol", gv.name_hint)
             for gv, f in _prim_funcs(fused).functions.items()}
    return tvm.compile(tvm.IRModule(funcs), target=tvm.target.Target({"kind": "llvm"}))


def _const(value) -> np.ndarray:
    data = getattr(value, "data", None)
    if data is None:
        data = value.value
    return data.numpy()


class _MainInterpreter:
    """Executes the VM-level ``main`` binding by binding; PrimFunc calls go to PoCL and to the host oracle."""

    _IGNORED: ClassVar = {"relax.vm.alloc_storage", "relax.vm.kill_object", "relax.null_value"}
    _IGNORED_PACKED: ClassVar = {"vm.builtin.check_tensor_info", "vm.builtin.match_shape",
                                 "vm.builtin.check_shape_info", "vm.builtin.check_tuple_info"}

    def __init__(self, lowering: AdrenoLowering, oracle, half_as_float: bool = False):
        self.lowering, self.oracle, self.half_as_float = lowering, oracle, half_as_float
        self.kernels = {k.name: k for k in lowering.kernels}
        self.env: dict = {}
        self.checks: list[KernelCheck] = []

    def value(self, expr):
        if isinstance(expr, relax.Var):
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return tuple(self.value(f) for f in expr.fields)
        if isinstance(expr, relax.ShapeExpr):
            return _int_tuple(expr.values)
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value)[expr.index]
        if isinstance(expr, tvm.ir.GenericConst):
            return _const(expr)
        raise NotImplementedError(f"cannot evaluate {type(expr).__name__}: {expr}")

    def run(self, func: relax.Function, inputs: dict[str, np.ndarray]):
        missing = [p.name for p in func.params if p.name not in inputs]
        if missing:
            raise KeyError(f"inputs lack {missing}; main takes {[p.name for p in func.params]}")
        for p in func.params:
            self.env[p] = np.array(inputs[p.name])  # a copy: results are written in place
        for block in func.body.blocks:
            for binding in block.bindings:
                self.env[binding.var] = self.call(binding.value)
        return self.value(func.body.body)

    def call(self, expr):
        if not isinstance(expr, relax.Call):
            return self.value(expr)
        op = expr.op
        if isinstance(op, tvm.ir.GlobalVar):
            return self.prim_func(op.name_hint, [self.value(a) for a in expr.args])
        name = getattr(op, "name", None) or getattr(op, "global_symbol", None)
        if name in self._IGNORED:
            return None
        if name == "relax.call_packed" or name == "relax.call_pure_packed":
            return self.packed(str(expr.args[0].global_symbol), expr.args[1:])
        if isinstance(op, relax.ExternFunc):
            return self.packed(str(op.global_symbol), expr.args)
        if name == "relax.vm.alloc_tensor":
            return np.zeros(self.value(expr.args[2]), str(expr.args[3].value))
        raise NotImplementedError(f"main: unsupported call {name or op}")

    def packed(self, symbol: str, args):
        if symbol in self._IGNORED_PACKED:
            return None
        if symbol == "vm.builtin.reshape":
            return self.value(args[0]).reshape(self.value(args[1]))
        if symbol == "vm.builtin.to_device":  # R.to_vdevice: a copy into another memory scope (buffer <-> image)
            return np.array(self.value(args[0]))
        raise NotImplementedError(f"main: unsupported packed function {symbol}")

    def prim_func(self, name: str, args: list[np.ndarray]):
        params = self.lowering.relax_mod[name].params
        buffers = {p.name: a for p, a in zip(params, args, strict=True)}
        ran = self.lowering.launches.get(name, [])
        if not ran:
            raise NotImplementedError(f"{name} launches no OpenCL kernel: it would run on the host CPU "
                                      "(a PrimFunc without thread bindings?)")
        pocl = dict(buffers)
        for kernel in ran:
            pocl.update(run_kernel_on_pocl(self.kernels[kernel], pocl, self.half_as_float))
        expected = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
        self.oracle[name](*expected)
        pairs = [(pocl[p.name].reshape(e.shape).astype("float64"), e.numpy().astype("float64"))
                 for p, e in zip(params, expected, strict=True)]
        err = max((float(np.max(np.abs(got - want), initial=0.0)) for got, want in pairs), default=0.0)
        scale = max((float(np.max(np.abs(want), initial=0.0)) for _, want in pairs), default=0.0)
        self.checks.append(KernelCheck(name, ran, err, scale))
        for a, p in zip(args, params, strict=True):  # write results in place: later bindings alias these arrays
            a[...] = pocl[p.name].reshape(a.shape)


def run_relax_on_pocl(mod: tvm.IRModule, target, inputs: dict[str, np.ndarray], tir_pipeline="default",
                      half_as_float: bool = False) -> PoclRun:
    """Run ``mod["main"]`` with every kernel on PoCL, checking each PrimFunc call against the host oracle
    (``half_as_float``: see ``run_kernel_on_pocl``)."""
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    lowering = lower_for_adreno(mod, target, tir_pipeline)
    interpreter = _MainInterpreter(lowering, _oracle(mod, target), half_as_float)
    outputs = interpreter.run(lowering.relax_mod["main"], inputs)
    return PoclRun(lowering, outputs, interpreter.checks)


def check_relax_on_pocl(mod: tvm.IRModule, target, inputs: dict[str, np.ndarray], tir_pipeline="default") -> float:
    """Max abs error of any PrimFunc call of ``main`` on PoCL vs host LLVM (see ``run_relax_on_pocl``)."""
    return run_relax_on_pocl(mod, target, inputs, tir_pipeline).max_abs_err
