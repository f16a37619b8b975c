"""Legalize ``NCHW4c``/``OIHW4o`` conv2d on the Adreno texture path correctly (two TVM 0.27 bugs).

TVM's texture pipeline packs every conv2d (``ConvertLayout`` to ``NCHW4c``/``OIHW4o``) and legalizes it with
``relax.transform.legalize_ops.adreno.conv2d_NCHWc_OIHWo`` -> ``topi.nn.conv2d_NCHWc_OIHWo``, which

* leaves ``out_dtype`` at topi's default ``float32`` (the relax argument is commented out): a ``float16`` conv
  becomes a PrimFunc writing a ``float32`` buffer while its ``call_tir`` says ``float16``, and ``FuseTIR`` stops
  with "Inconsistent buffers ... mapped to the same relax var" (fp16 on ``adreno-texture``, even a plain conv2d);
* indexes grouped input chunks as ``occ // (oc_chunk // groups)``: for depthwise (``groups`` = channels >
  ``oc_chunk`` = channels / 4) that is a floordiv by 0 ("Divide by zero", MobileNetV2), and whenever a group is
  not a whole number of 4-channel chunks it also reads lane ``ic % 4`` of the wrong chunk.

``LegalizeNCHW4cConv2d`` runs before TVM's legalizations and lowers every packed conv2d itself: accumulate in
``float32`` (topi's ``groups == 1`` compute, or, for grouped convs, a compute that maps output channel
``o`` to input channel ``(o // out_per_group) * in_per_group + r`` through the packed layout), then cast to the
call's dtype, so a half conv stores half and sums in float.
"""
from __future__ import annotations

import tvm
from tvm import relax, te, tirx, topi

_LANES = 4


def _dtype(call: relax.Call) -> str:
    out = call.attrs.out_dtype
    return str(out) if out is not None and str(out) not in ("", "void") else str(call.args[0].ty.dtype)


def _grouped_nchw4c(data, kernel, strides, padding, dilation):
    """``out[n, oc, h, w, ob] = sum_{r, kh, kw} x[n, ic // 4, h * s + kh * d, w * s + kw * d, ic % 4] * k[oc, r, kh,
    kw, ob]`` with ``ic = ((oc * 4 + ob) // out_per_group) * in_per_group + r``, in float32."""
    n, in_chunks, height, width, _ = (int(s) for s in data.shape)
    out_chunks, in_per_group, kh_, kw_, _ = (int(s) for s in kernel.shape)
    groups = in_chunks * _LANES // in_per_group
    out_per_group = out_chunks * _LANES // groups
    (sh, sw), (dh, dw) = strides, dilation
    top, left, bottom, right = padding
    out_h = (height + top + bottom - (kh_ - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw_ - 1) * dw - 1) // sw + 1
    padded = topi.nn.pad(data, (0, 0, top, left, 0), (0, 0, bottom, right, 0), name="conv2d_data_pad")
    r = te.reduce_axis((0, in_per_group), name="ic")
    kh = te.reduce_axis((0, kh_), name="kh")
    kw = te.reduce_axis((0, kw_), name="kw")

    def compute(b, oc, h, w, ob):
        if in_per_group == 1 and out_per_group == 1:  # depthwise: output lane ob reads the same lane
            chunk, lane = oc, ob
        else:
            channel = tirx.floordiv(oc * _LANES + ob, out_per_group) * in_per_group + r
            chunk, lane = tirx.floordiv(channel, _LANES), tirx.floormod(channel, _LANES)
        value = padded[b, chunk, h * sh + kh * dh, w * sw + kw * dw, lane].astype("float32")
        return te.sum(value * kernel[oc, r, kh, kw, ob].astype("float32"), axis=[r, kh, kw])

    return te.compute((n, out_chunks, out_h, out_w, _LANES), compute, name="conv2d_NCHWc_OIHWo",
                      tag="conv2d_NCHWc_OIHWo")


def _conv2d_nchw4c(data, kernel, strides, padding, dilation, groups, dtype):
    if groups == 1:
        out = topi.nn.conv2d_NCHWc_OIHWo(data, kernel, strides, padding, dilation, "NCHW4c", "NCHW4c", "float32")
    else:
        out = _grouped_nchw4c(data, kernel, strides, padding, dilation)
    return out if dtype == "float32" else topi.cast(out, dtype)


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    attrs = call.attrs
    packed = (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW4c", "OIHW4o", "NCHW4c")
    if not packed:
        return call  # left to the next LegalizeOps (TVM's own legalizations)
    strides, padding = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding]
    dilation, groups, dtype = [int(d) for d in attrs.dilation], int(attrs.groups), _dtype(call)
    return bb.call_te(lambda data, kernel: _conv2d_nchw4c(data, kernel, strides, padding, dilation, groups, dtype),
                      call.args[0], call.args[1], ty_args=call.ty_args, primfunc_name_hint="conv2d_NCHWc_OIHWo")


def LegalizeNCHW4cConv2d() -> tvm.transform.Pass:
    """``LegalizeOps`` with the packed conv2d lowered as above (and every other op by TVM's default rules)."""
    return relax.transform.LegalizeOps({"relax.nn.conv2d": _legalize})
