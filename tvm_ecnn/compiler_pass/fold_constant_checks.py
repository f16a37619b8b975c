"""Run the runtime checks torch.export keeps on import-time constants now, and drop them.

``torch.linalg.inv`` (kornia's ``warp_affine`` inverts its matrices) exports as ``linalg_inv_ex``
plus an effectful ``_linalg_check_errors`` threaded through effect tokens, which TVM's importer
cannot take (``with_effects``, token inputs). When the checked value does not depend on the
model's inputs (a sampling grid computed from parameters), the check is run once here with torch
(a singular matrix raises now, naming the layer) and removed; what it checked is then dead code
or constant and never reaches Relax. Checks on input-dependent values stay (and are reported as
unsupported).
"""
from __future__ import annotations

import torch
from torch.export import ExportedProgram
from torch.export._remove_effect_tokens_pass import _remove_effect_tokens

from .fx_graph import ExportedGraph, module_path

CHECKS = (torch.ops.aten._linalg_check_errors.default,)


def fold_constant_checks(ep: ExportedProgram) -> ExportedProgram:
    if any(node.target is torch.ops.higher_order.with_effects for node in ep.graph.nodes):
        ep = _remove_effect_tokens(ep)
    graph = ExportedGraph(ep)
    for node in graph.nodes():
        if node.target not in CHECKS or any(graph.is_dynamic(a) for a in node.all_input_nodes):
            continue
        try:
            graph.run_node(node, {})
        except RuntimeError as error:
            raise ValueError(f"{module_path(node) or '<model>'}: {error}") from error
        graph.graph.erase_node(node)
    return graph.finish()
