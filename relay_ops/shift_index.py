"""Address arithmetic shared by the standalone shifts and the fused shift + 1x1 convolution.

A shift is only an address offset (Wu et al.; AddressNet): every operator here reads its input
through these helpers, so the standalone and the fused kernels cannot disagree. Offsets of the
grouped shift are closed-form quasi-affine expressions of the channel (no Select tables, which
defeat region analysis, tensorize and dlight); per-channel tables are loads from a constant tensor.
"""
from __future__ import annotations

from tvm import tirx

from . import quant

LAYOUTS = ("NCHW", "NCHW4c")


def load(x, n, c, h, w, layout: str):
    """``x[n, c, h, w]`` for a logical NCHW index, whatever the physical layout."""
    if layout == "NCHW4c":
        return x[n, tirx.floordiv(c, 4), h, w, tirx.floormod(c, 4)]
    return x[n, c, h, w]


def spatial_shape(x, layout: str):
    return x.shape[2], x.shape[3]


def channels(x, layout: str):
    return x.shape[1] * 4 if layout == "NCHW4c" else x.shape[1]


def shifted_load(x, n, c, h, w, layout: str, padding_mode: str = "zeros", fill: int = 0):
    """``x[n, c, h, w]`` with zero (or circular) padding outside the image.

    ``fill`` is what "zero" is: the zero point of a quantized ``x`` (the real value 0), else 0.
    """
    height, width = spatial_shape(x, layout)
    if padding_mode == "circular":
        return load(x, n, c, tirx.floormod(h, height), tirx.floormod(w, width), layout)
    inside = tirx.all(h >= 0, h < height, w >= 0, w < width)
    return tirx.if_then_else(inside, load(x, n, c, h, w, layout), tirx.const(fill, x.dtype))


def grouped_offsets(c, num_channels: int, kernel_size: int, dilation: int, mapping: str):
    """``(dy, dx)`` of channel ``c`` under the grouped shift, as index expressions.

    Mirrors ``tvm_ecnn.nn.offsets.grouped_shift_offsets``: interleaved is ``c mod k^2``, grouped is
    ``c // (C // k^2)``; the ``C mod k^2`` trailing channels do not move.
    """
    k2 = kernel_size * kernel_size
    per_group = num_channels // k2
    if per_group == 0:
        return 0, 0
    cell = tirx.floormod(c, k2) if mapping == "interleaved" else tirx.floordiv(c, per_group)
    half = kernel_size // 2
    dy = (tirx.floordiv(cell, kernel_size) - half) * dilation
    dx = (tirx.floormod(cell, kernel_size) - half) * dilation
    shifted = per_group * k2
    if shifted < num_channels:
        dy = tirx.if_then_else(c < shifted, dy, 0)
        dx = tirx.if_then_else(c < shifted, dx, 0)
    return dy, dx


def bilinear_load(x, n, c, h, w, offsets, layout: str, zero_point: int = 0):
    """Bilinear sample of channel ``c`` at ``(h + dy_c, w + dx_c)``, corners zero outside.

    ``offsets`` is a float ``[C, 2]`` tensor of ``(dy, dx)``; ``h``/``w`` already include stride
    and padding. The weights follow the reference ASL kernel (floor, four corners). int8 ``x``:
    fixed-point weights (``quant.bilinear_int8``), corners ``zero_point`` outside.
    """
    dtype = x.dtype
    if dtype == "int8":
        (iy, fy), (ix, fx) = quant.offset_fixed_point(offsets[c, 0]), quant.offset_fixed_point(offsets[c, 1])
        h0, w0 = h + iy.astype("int64"), w + ix.astype("int64")
        return quant.bilinear_int8(lambda dh, dw: shifted_load(x, n, c, h0 + dh, w0 + dw, layout, fill=zero_point),
                                   fy, fx)
    oy, ox = offsets[c, 0].astype(dtype), offsets[c, 1].astype(dtype)
    fy, fx = tirx.floor(oy), tirx.floor(ox)
    ay, ax = oy - fy, ox - fx
    h0 = h + fy.astype("int64")
    w0 = w + fx.astype("int64")
    one = tirx.const(1.0, dtype)

    def corner(dh, dw):
        return shifted_load(x, n, c, h0 + dh, w0 + dw, layout)

    return (
        corner(0, 0) * (one - ax) * (one - ay)
        + corner(0, 1) * ax * (one - ay)
        + corner(1, 0) * (one - ax) * ay
        + corner(1, 1) * ax * ay
    )


def table_offsets(offsets, c):
    """``(dy, dx)`` of channel ``c`` from an integer ``[C, 2]`` table."""
    return offsets[c, 0].astype("int64"), offsets[c, 1].astype("int64")
