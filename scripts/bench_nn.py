#!/usr/bin/env python
"""Eager PyTorch speed of ``tvm_ecnn.nn``: forward + backward next to the hand-written forms users write.

For each shift kind and shape, the minimum over interleaved rounds of one forward + backward
(input and offset gradients) of the ``tvm_ecnn.nn`` module and of each hand-written equivalent
(gather with a precomputed index, pad + slice, ``F.grid_sample`` on a per-channel grid), every
one first checked against the module's output and gradients. Then whole networks: the zoo
ShiftResNet-20 as is and with its ``Shift2d`` swapped for the hand-written gather. Ratios
< 1 mean ``tvm_ecnn.nn`` is faster. The gather and pad + slice forms of ``SparseShift2d`` shift by
fixed rounded offsets and compute no offset gradient: learned sparse offsets are compared with
``grid_sample`` (straight-through rounding) only, frozen ones with every form. Eager CPU timings on a shared machine: compare within one run.

    python scripts/bench_nn.py                      # batch 1 and 64
    python scripts/bench_nn.py --batch 128 --rounds 20
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from tvm_ecnn import models  # noqa: E402
from tvm_ecnn.benchmark import markdown_table  # noqa: E402
from tvm_ecnn.nn import ActiveShift2d, Shift2d, SparseShift2d  # noqa: E402

SHAPES = ((48, 32, 32), (96, 16, 16), (192, 8, 8))
"""(C, H, W) of the shifts in the zoo ShiftResNet-20 (expansion 3)."""


# --------------------------------------------------------------------------- hand-written forms
def _integer_offsets(module: nn.Module) -> torch.Tensor:
    return module.offsets() if isinstance(module, Shift2d) else module.integer_offsets()


class GatherShift(nn.Module):
    """Integer shift as one ``gather`` from the zero-padded input, index precomputed per input size."""

    def __init__(self, offsets: torch.Tensor):
        super().__init__()
        self.register_buffer("offsets", offsets.long(), persistent=False)
        self.pad = int(offsets.abs().max())
        self.index = {}

    def _index(self, height, width):
        if (height, width) not in self.index:
            row = width + 2 * self.pad
            base = (self.pad + self.offsets[:, 0]) * row + self.pad + self.offsets[:, 1]
            grid = (torch.arange(height)[:, None] * row + torch.arange(width)).flatten()
            self.index[height, width] = (base[:, None] + grid)[None]
        return self.index[height, width]

    def forward(self, x):
        n, c, h, w = x.shape
        padded = F.pad(x, (self.pad,) * 4).flatten(2)
        return padded.gather(2, self._index(h, w).expand(n, c, -1)).view_as(x)


class PadSliceShift(nn.Module):
    """Integer shift as ``F.pad`` and one slice per distinct offset, written into a new tensor."""

    def __init__(self, offsets: torch.Tensor):
        super().__init__()
        self.pad = int(offsets.abs().max())
        groups = {}
        for channel, (dy, dx) in enumerate(offsets.tolist()):
            groups.setdefault((dy, dx), []).append(channel)
        self.groups = [(dy, dx, torch.tensor(channels)) for (dy, dx), channels in groups.items()]

    def forward(self, x):
        h, w, p = x.shape[2], x.shape[3], self.pad
        padded = F.pad(x, (p,) * 4)
        out = x.new_empty(x.shape)
        for dy, dx, channels in self.groups:
            out[:, channels] = padded[:, channels, p + dy:p + dy + h, p + dx:p + dx + w]
        return out


def _grid_sample_shift(x, offsets, stride=1, padding=0):
    """Bilinear per-channel translation with ``F.grid_sample`` (batch folded into channels)."""
    n, c, h, w = x.shape
    out_h, out_w = (h + 2 * padding - 1) // stride + 1, (w + 2 * padding - 1) // stride + 1
    rows = torch.arange(out_h, dtype=x.dtype) * stride - padding + offsets[:, :1].to(x.dtype)  # [C, out_h]
    cols = torch.arange(out_w, dtype=x.dtype) * stride - padding + offsets[:, 1:].to(x.dtype)  # [C, out_w]
    grid_y = (2 * rows / max(h - 1, 1) - 1)[:, :, None].expand(c, out_h, out_w)
    grid_x = (2 * cols / max(w - 1, 1) - 1)[:, None, :].expand(c, out_h, out_w)
    grid = torch.stack([grid_x, grid_y], dim=-1).repeat(n, 1, 1, 1)
    out = F.grid_sample(x.reshape(n * c, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(n, c, out_h, out_w)


class GridSampleShift(nn.Module):
    """Any shift kind through ``grid_sample``: fixed, learnable (active) or rounded straight-through (sparse)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        m = self.module
        if isinstance(m, Shift2d):
            return _grid_sample_shift(x, m.offsets())
        if isinstance(m, SparseShift2d):
            return _grid_sample_shift(x, m.offset + (torch.round(m.offset) - m.offset).detach())
        return _grid_sample_shift(x, m.offset, m.stride, m.padding)


class GatherActiveShift(nn.Module):
    """Active shift as four gathers from the zero-padded input, blended with autograd-tracked weights."""

    def __init__(self, module: ActiveShift2d):
        super().__init__()
        self.module = module

    def forward(self, x):
        m = self.module
        n, c, h, w = x.shape
        s, p = m.stride, m.padding
        out_h, out_w = (h + 2 * p - 1) // s + 1, (w + 2 * p - 1) // s + 1
        low = torch.floor(m.offset.detach())
        frac = m.offset - low
        pad = int(low.abs().max()) + p + 1
        row = w + 2 * pad
        base = (pad - p + low[:, 0].long()) * row + pad - p + low[:, 1].long()
        grid = (torch.arange(out_h)[:, None] * s * row + torch.arange(out_w) * s).flatten()
        index = (base[:, None] + grid)[None].expand(n, c, -1)
        padded = F.pad(x, (pad,) * 4).flatten(2)
        taps = [padded.gather(2, index + a * row + b) for a in (0, 1) for b in (0, 1)]
        fy, fx = frac[:, :1], frac[:, 1:]
        upper = taps[0] * (1 - fx) + taps[1] * fx
        lower = taps[2] * (1 - fx) + taps[3] * fx
        return (upper * (1 - fy) + lower * fy).view(n, c, out_h, out_w)


def hand_written(module: nn.Module) -> dict[str, nn.Module]:
    """The hand-written forms of ``module``'s shift that users write instead of ``tvm_ecnn.nn``."""
    forms = {"grid_sample": GridSampleShift(module)}
    if isinstance(module, ActiveShift2d):
        forms["gather"] = GatherActiveShift(module)
    else:
        forms["gather"] = GatherShift(_integer_offsets(module))
        forms["pad+slice"] = PadSliceShift(_integer_offsets(module))
    return forms


# --------------------------------------------------------------------------- timing
def _step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """One forward + backward; returns the output and the gradients (input, then parameters)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for tensor in (x, *params):
        tensor.grad = None
    out = module(x)
    out.backward(grad)
    return out, [x.grad, *(p.grad for p in params)]


def _check(name: str, candidate, reference) -> None:
    """Outputs and input gradients must agree; offset gradients too, except sparse's straight-through ones
    (each hand-written form picks its own surrogate)."""
    (out, grads), (ref_out, ref_grads) = candidate, reference
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} output: {m}")
    torch.testing.assert_close(grads[0], ref_grads[0], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} grad: {m}")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``cpu`` (this process's CPU time, all threads) ignores the time other processes hold the cores."""


def min_ms(runs: dict[str, callable], rounds: int, number: int, clock=time.perf_counter) -> dict[str, float]:
    """Minimum over ``rounds`` of the mean of ``number`` calls, the candidates interleaved per round so that
    load from other processes hits them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            start = clock()
            for _ in range(number):
                run()
            best[name] = min(best[name], (clock() - start) / number * 1e3)
    return best


KINDS = {
    "Shift2d": (Shift2d, True),
    "ActiveShift2d": (ActiveShift2d, True),
    "SparseShift2d": (SparseShift2d, True),
    "SparseShift2d, frozen offsets": (SparseShift2d, False),
}
"""Row label -> (module class, offsets learned). Learned sparse offsets are compared with ``grid_sample`` only:
the gather and pad + slice forms shift by fixed offsets and compute no offset gradient."""


def shift_rows(batch: int, rounds: int, number: int, clock) -> list[list[str]]:
    rows = []
    for kind, (cls, learned) in KINDS.items():
        for channels, height, width in SHAPES:
            torch.manual_seed(0)
            module = cls(channels)
            for p in module.parameters():
                p.requires_grad_(learned)
            x = torch.randn(batch, channels, height, width, requires_grad=True)
            grad = torch.randn_like(module(x))
            forms = hand_written(module)
            reference = _step(module, x, grad)
            for name, form in forms.items():
                _check(f"{kind} {name}", _step(form, x, grad), reference)
            runs = {"tvm_ecnn.nn": lambda m=module: _step(m, x, grad)}
            runs.update({name: (lambda f=form: _step(f, x, grad)) for name, form in forms.items()})
            times = min_ms(runs, rounds, number, clock)
            same_gradients = ("grid_sample",) if cls is SparseShift2d and learned else tuple(forms)
            best = min((times[n], n) for n in same_gradients)
            rows.append([kind, f"{batch}x{channels}x{height}x{width}", f"{times['tvm_ecnn.nn']:.3f}",
                         *(f"{times[n]:.3f}" if n in times else "–" for n in ("gather", "pad+slice", "grid_sample")),
                         f"{times['tvm_ecnn.nn'] / best[0]:.2f}× ({best[1]})"])
    return rows


def _swap_shifts(model: nn.Module) -> nn.Module:
    """``model`` with every ``Shift2d`` replaced by the hand-written ``GatherShift`` of the same offsets."""
    for name, module in list(model.named_modules()):
        if isinstance(module, Shift2d):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, GatherShift(module.offsets()))
    return model


def network_row(batch: int, rounds: int, number: int, clock) -> list[str]:
    torch.manual_seed(0)
    ours = models.get("shiftresnet20").train()
    torch.manual_seed(0)
    theirs = _swap_shifts(models.get("shiftresnet20").train())
    x = torch.randn(batch, 3, 32, 32, requires_grad=True)
    grad = torch.randn(batch, 10)
    _check("shiftresnet20 gather", _step(theirs, x, grad), _step(ours, x, grad))
    times = min_ms({"ours": lambda: _step(ours, x, grad), "gather": lambda: _step(theirs, x, grad)}, rounds, number,
                   clock)
    return ["ShiftResNet-20 (train)", f"{batch}x3x32x32", f"{times['ours']:.3f}", f"{times['gather']:.3f}", "–", "–",
            f"{times['ours'] / times['gather']:.2f}× (gather)"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (minimum taken)")
    parser.add_argument("--number", type=int, default=5, help="calls per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall time, or this process's CPU time (steadier on a machine shared with others)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for batch in args.batch:
        rows += shift_rows(batch, args.rounds, args.number, CLOCKS[args.clock])
        rows.append(network_row(batch, max(2, args.rounds // 3), 1, CLOCKS[args.clock]))
    print(f"forward + backward, {args.clock} ms (min over {args.rounds} interleaved rounds), torch {torch.__version__}, "
          f"{args.threads} threads, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(markdown_table(["module", "input", "tvm_ecnn.nn", "gather", "pad+slice", "grid_sample",
                          "tvm_ecnn.nn / fastest hand-written"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
