"""Warn when the exported program and eager PyTorch disagree on the example input.

tvm-ecnn compiles what ``torch.export`` captured, which is not always what eager PyTorch runs: an
in-place copy whose source and destination overlap (S2-MLP's ``x[:, 1:] = x[:, :-1]``) is
evaluated element by element in memory order by eager (rows smear), but functionalised by
``torch.export`` (the source is read before the write: the intended shift). ``from_torch`` runs
the example input through both once and warns, so the difference is not found on the device.
"""
from __future__ import annotations

import warnings

import torch
from torch.export import ExportedProgram
from torch.utils._pytree import tree_leaves

RTOL = 1e-4  # of the output's magnitude: far above float reordering noise, far below a wrong shift

LIKELY_CAUSE = (
    "Likely cause: an in-place write whose source overlaps its destination (e.g. `x[:, 1:] = x[:, :-1]`), "
    "which eager PyTorch evaluates in memory order while torch.export reads the source first; or "
    "randomness / Python-side state in forward. The compiled model follows the exported program. "
    "Copy the source first (`x[:, :-1].clone()`) to make eager agree."
)


def _max_difference(eager, exported) -> tuple[float, float]:
    """Largest absolute difference over the floating-point outputs, and the outputs' largest magnitude."""
    difference, magnitude = 0.0, 0.0
    for a, b in zip(tree_leaves(eager), tree_leaves(exported)):
        if not (isinstance(a, torch.Tensor) and a.is_floating_point()) or a.shape != b.shape:
            continue
        difference = max(difference, float((a.double() - b.double()).abs().max()) if a.numel() else 0.0)
        magnitude = max(magnitude, float(a.double().abs().max()) if a.numel() else 0.0)
    return difference, magnitude


def warn_if_export_differs(model: torch.nn.Module, program: ExportedProgram, args: tuple) -> None:
    """One forward of each on copies of ``args`` (the model may write to its inputs); ``model`` in eval mode."""
    try:
        with torch.no_grad():
            eager = model(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
            exported = program.module()(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
    except Exception:  # noqa: BLE001 - nothing to compare; conversion reports what is wrong with the model
        return
    difference, magnitude = _max_difference(eager, exported)
    if difference > RTOL * max(magnitude, 1e-12):
        warnings.warn(
            f"from_torch: {type(model).__name__} exported by torch.export differs from eager PyTorch on the example "
            f"input: max abs difference {difference:.3g} (output magnitude {magnitude:.3g}). {LIKELY_CAUSE}",
            UserWarning,
            stacklevel=3,
        )
