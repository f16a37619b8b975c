"""``from_torch``: a PyTorch model in, a Relax module out, with every shift an ``R.ecnn.*`` op.

Pipeline (``import_pipeline``; one list, each stage takes the previous stage's result):

1. ``torch.export`` (non-strict, the model in eval mode), then ``run_decompositions`` to core ATen;
2. torch-side recognisers rewrite hand-written shifts into canonical shift ops. They run on the
   exported graph, not on Relax, because there constants (weights, index tensors, grids) can be
   evaluated with torch and a candidate subgraph can be *run* on probes: recognition then follows
   what the code computes, not how it was spelled (see ``compiler_pass/fx_graph.py``);
3. conversion to Relax with ``custom_convert_map`` (``converters.py``; ``index_converters.py``
   replaces TVM's indexing converters, which read out of bounds on negative indices), after
   checking that every op can be converted (one error lists all that cannot, with their torch module paths);
4. Relax passes: BatchNorm folding, then shift + 1x1 conv (+ epilogue) fusion (``fuse=True``).

``main`` takes the model's inputs; weights are bound as constants unless
``keep_params_as_input=True``. Shift offsets are always constants: they decide the data movement
(and BatchNorm folding and shift-conv fusion need constant weights, so with
``keep_params_as_input=True`` only the recognition half of the pipeline applies).
"""
from __future__ import annotations

import torch
from torch import fx
from torch.export import ExportedProgram
from tvm import IRModule, relax
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from tvm_ecnn.compiler_pass import (
    FoldBatchNorm,
    FuseShiftConv,
    fold_constant_checks,
    recognize_data_movement_shifts,
    recognize_grid_sample_shift,
    recognize_onehot_dwconv,
)
from tvm_ecnn.compiler_pass.fx_graph import ExportedGraph, module_path, module_type
from tvm_ecnn.quantize.pt2e import fold_pt2e

from . import torchshifts
from .converters import ShiftConverters
from .eager_check import warn_if_export_differs
from .index_converters import IndexConverters
from .pt2e import Pt2eConverters
from .report import RewriteReport

EXPORT_HINT = (
    "hint: from_torch traces with torch.export.export(model, example_inputs, strict=False). Tracing needs "
    "static shapes (example inputs of the shape you will run) and no Python control flow on tensor values "
    "(use torch.where / torch.cond instead of `if tensor...`). You can also export the model yourself, "
    "with the options it needs, and pass the torch.export.ExportedProgram to from_torch."
)


class ExportError(RuntimeError):
    """``torch.export`` could not trace the model."""


class UnsupportedOperatorError(NotImplementedError):
    """Some ops of the model cannot be converted; ``.ops`` lists ``(op, module path, module type, reason)``."""

    def __init__(self, ops: list[tuple[str, str, str, str]]):
        self.ops = ops
        lines = [
            f"  {op}  in {path or '<model>'} ({kind}){': ' + reason if reason else ''}" for op, path, kind, reason in ops
        ]
        super().__init__(f"cannot import {len(ops)} operator(s) of the model:\n" + "\n".join(lines))


def export(model, example_inputs, check_eager: bool = False) -> ExportedProgram:
    """``model`` as a core-ATen ExportedProgram; an ExportedProgram is used as given (then decomposed).

    ``check_eager``: warn when the program and eager PyTorch disagree on ``example_inputs``.
    """
    if isinstance(model, ExportedProgram):
        return model.run_decompositions()
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    was_training = model.training
    _set_mode(model, False)
    try:
        try:
            with torchshifts.routed():  # the third-party package's composite op cannot be traced as it is
                program = torch.export.export(model, args, strict=False).run_decompositions()
        except Exception as error:
            raise ExportError(f"torch.export failed for {type(model).__name__}: {error}\n\n{EXPORT_HINT}") from error
        if check_eager:  # on the decomposed program: in-place ops are functionalised only there
            warn_if_export_differs(model, program, args)
    finally:
        _set_mode(model, was_training)
    return program


def _set_mode(model, training: bool) -> None:
    """``model.train(training)``; a module from ``torch.export`` (PT2E's ``convert_pt2e`` result) refuses it: its
    mode was fixed when it was exported (torchao's ``move_exported_model_to_eval`` is how users set it)."""
    try:
        model.train(training)
    except NotImplementedError:
        if not isinstance(model, fx.GraphModule):
            raise


class ConvertToRelax:
    """ExportedProgram -> IRModule through TVM's importer with our ``custom_convert_map``.

    Records, for the report, which torch module each Relax var came from.
    """

    def __init__(self, report: RewriteReport, keep_params_as_input: bool = False):
        self.report = report
        self.keep_params_as_input = keep_params_as_input

    def __call__(self, ep: ExportedProgram) -> IRModule:
        graph = ExportedGraph(ep)
        converters = ShiftConverters(graph, self.report)
        pt2e = Pt2eConverters(graph)
        custom = {**IndexConverters(graph).convert_map(), **converters.convert_map(), **pt2e.convert_map()}
        importer = ExportedProgramImporter()
        check_convertible(ep.graph, set(importer.convert_map) | set(custom), converters, pt2e)
        mod = importer.from_exported_program(ep, self.keep_params_as_input, True, False, custom)
        self.report.origins.update(
            {var.name: module_path(node) for node, var in importer.env.items() if isinstance(var, relax.Var)}
        )
        return mod


def check_convertible(graph: fx.Graph, known: set[str], *converters) -> None:
    """Raise one ``UnsupportedOperatorError`` naming every op that cannot be converted, and where it is."""
    problems = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = node.target.__name__
        reasons = [] if name not in known else [c.unsupported(node) for c in converters]
        reason = "no converter" if name not in known else next((r for r in reasons if r is not None), None)
        if reason is not None:
            problems.append((str(node.target), module_path(node), module_type(node), reason))
    if problems:
        raise UnsupportedOperatorError(problems)


def import_pipeline(report: RewriteReport, *, fuse: bool = True, keep_params_as_input: bool = False) -> list:
    """The stages of ``from_torch`` after export, in order."""
    return [
        # on the exported torch graph
        fold_constant_checks,  # torch.linalg.inv's error check on constants (kornia's warp_affine)
        recognize_data_movement_shifts,  # pad+slice+cat, slice assignment, roll, indexing
        recognize_onehot_dwconv,  # depthwise conv with one-hot kernels
        recognize_grid_sample_shift,  # grid_sample on a per-channel translation grid
        # torch graph -> Relax
        ConvertToRelax(report, keep_params_as_input),
        # on the Relax module
        *([FoldBatchNorm(report.on_rewrite), FuseShiftConv(report.on_rewrite)] if fuse else []),
        # a PT2E-quantized program's q/dq pairs into int8 ops (nothing to do otherwise)
        lambda mod: fold_pt2e(mod, report.pt2e_float_ops),
    ]


def from_torch(
    model,
    example_inputs,
    *,
    fuse: bool = True,
    keep_params_as_input: bool = False,
    with_report: bool = False,
    check_eager: bool = True,
):
    """Import ``model`` (an ``nn.Module`` or a ``torch.export.ExportedProgram``) into Relax.

    Returns the ``tvm.IRModule``; with ``with_report=True`` returns ``(mod, RewriteReport)``,
    the report listing each rewritten site (pattern, torch module path, channels moved).
    ``fuse=False`` keeps shifts as standalone ``R.ecnn.*`` ops and BatchNorm unfolded.
    ``check_eager`` (one extra forward in eager and in the exported program) warns with a
    ``UserWarning`` when the two disagree on ``example_inputs``: the compiled model follows the
    exported program.
    Raises ``ExportError`` when ``torch.export`` fails and ``UnsupportedOperatorError`` when
    some op cannot be converted.
    """
    report = RewriteReport()
    program = export(model, example_inputs, check_eager)
    for stage in import_pipeline(report, fuse=fuse, keep_params_as_input=keep_params_as_input):
        program = stage(program)
    return (program, report) if with_report else program
