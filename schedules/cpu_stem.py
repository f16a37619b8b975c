"""The stem: a stride-2 conv2d on an image's few input channels (MobileNetV2, SqueezeNet, FE-Net).

Channel vectors (``cpu_conv2d.py``'s outer product) reduce over only ``3 * kh * kw`` steps there and
store their ``[pixels, channels]`` tile transposed into NCHW planes. Instead the padding stage stores
the even and odd columns of each row apart, ``pad[n, c, h, w % 2, w // 2]``: every tap of a strided
row is then one contiguous vector again, and the stem takes the pixel-vector micro-kernel of stride-1
convs (contiguous NCHW output vectors, the epilogue on them).
"""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import Schedule

from .cpu_common import has_guard, loads
from .cpu_conv2d_block import Conv2d

STEM_MAX_CHANNELS = 4
"""Input channels up to which a stride-2 conv counts as a stem (RGB, RGBA)."""


def deinterleave_columns(sch: Schedule, conv: Conv2d, pad) -> bool:
    """Store the stem's padded input even/odd columns apart (in its padding stage); False (nothing
    changed) when ``conv`` is no stem with a padding stage (SqueezeNet's unpadded stem: a copy
    stage just for this, and its 111-pixel rows as predicated vectors, measured 4x slower)."""
    b = sch.get(conv.block)
    if int(conv.data.shape[1]) > STEM_MAX_CHANNELS or pad is None or not has_guard(sch, pad):
        return False
    load = next(x for x in loads(b.body.value) if x.source.same_as(conv.data))
    linear = tvm.sym.detect_linear_equation(load.indices[3], [b.iter_vars[3].var])
    if len(linear) != 2 or not isinstance(linear[0], tirx.IntImm) or int(linear[0]) != 2:
        return False
    sch.transform_layout(pad, ("write", 0), lambda n, c, h, w: (n, c, h, w % 2, w // 2))
    return True
