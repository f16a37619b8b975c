"""What the torch-side passes need to know about an exported graph.

The recognisers work on the ``torch.export`` graph (core ATen, after ``run_decompositions``)
rather than on Relax because there every value that does not depend on the user's inputs
(parameters, buffers, index tensors built with ``arange``/``fmod``, sampling grids) can be
*computed* with torch, and a candidate subgraph can be *run* on probe tensors. Deciding "is this
a shift, and by how much per channel?" by evaluation instead of by matching op sequences is what
makes recognition independent of how the user wrote the idiom (group sizes, group order, slicing
style), and it rejects look-alikes for free.
"""
from __future__ import annotations

import operator

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

aten = torch.ops.aten

# Ops whose every output element is a copy of one input element or a constant (fill): a graph
# region made only of these is fully described by where each output element comes from.
DATA_MOVEMENT_OPS = frozenset(
    {
        aten.alias, aten.cat, aten.clone, aten.constant_pad_nd, aten.copy, aten.expand, aten.flip,
        aten.full_like, aten.gather, aten.index, aten.index_put, aten.index_select, aten.permute,
        aten.repeat, aten.reshape, aten.roll, aten.scatter, aten.select, aten.select_scatter,
        aten.slice, aten.slice_scatter, aten.split, aten.split_with_sizes, aten.squeeze,
        aten.unsqueeze, aten.view, aten._unsafe_view, aten.where, aten.zeros_like,
    }
)
# Ops that keep the elements in row-major order (only the shape changes).
VIEW_OPS = frozenset(
    {aten.view, aten.reshape, aten._unsafe_view, aten.alias, aten.clone, aten.squeeze, aten.unsqueeze}
)


def packet(node: fx.Node):
    """The op family (``aten.slice``) of a call node, ``operator.getitem`` as is, else None."""
    if node.op != "call_function":
        return None
    return getattr(node.target, "overloadpacket", node.target)


def is_data_movement(node: fx.Node) -> bool:
    return packet(node) in DATA_MOVEMENT_OPS or node.target is operator.getitem


def is_view(node: fx.Node) -> bool:
    return packet(node) in VIEW_OPS


def tensor_meta(node) -> torch.Tensor | None:
    """The fake tensor ``torch.export`` recorded for a node's output, if it is one tensor."""
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def shape_of(node) -> tuple[int, ...] | None:
    value = tensor_meta(node)
    return None if value is None else tuple(int(d) for d in value.shape)


def _innermost_module(node: fx.Node) -> tuple[str, object]:
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1] if stack else ("", "")


def module_path(node: fx.Node) -> str:
    """Innermost torch module a node came from (``"layer1.0.shift"``; ``""`` for the root)."""
    return _innermost_module(node)[0]


def module_type(node: fx.Node) -> str:
    """Class name of that module (``"Shift2d"``)."""
    cls = _innermost_module(node)[1]
    return getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]


class ExportedGraph:
    """An ExportedProgram's graph with constant evaluation and node rewriting.

    A node is *constant* when it does not depend on a user input: its value is computed once
    with torch from the program's parameters, buffers and lifted constants.
    """

    def __init__(self, ep: ExportedProgram):
        self.ep = ep
        self.graph: fx.Graph = ep.graph_module.graph
        self._state = {**ep.state_dict, **ep.constants}
        self._placeholder_values = {}
        self._user_inputs = set()
        for spec in ep.graph_signature.input_specs:
            if spec.kind == InputKind.USER_INPUT:
                self._user_inputs.add(spec.arg.name)
            elif spec.target in self._state:
                self._placeholder_values[spec.arg.name] = self._state[spec.target]
        self._dynamic = None
        self._values: dict[fx.Node, object] = {}

    def nodes(self) -> list[fx.Node]:
        return list(self.graph.nodes)

    def is_dynamic(self, node) -> bool:
        """Depends on a user input (so it cannot be computed at import time)."""
        if self._dynamic is None:
            self._dynamic = set()
            for n in self.graph.nodes:
                if (n.op == "placeholder" and n.name in self._user_inputs) or any(
                    a in self._dynamic for a in n.all_input_nodes
                ):
                    self._dynamic.add(n)
        return isinstance(node, fx.Node) and node in self._dynamic

    def dynamic_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if self.is_dynamic(a)]

    def value(self, node):
        """Value of a constant node (or a plain Python argument), computed with torch."""
        if not isinstance(node, fx.Node):
            return node
        if self.is_dynamic(node):
            raise ValueError(f"{node.name} depends on the model's inputs")
        if node not in self._values:
            if node.op == "placeholder":
                self._values[node] = self._placeholder_values[node.name]
            else:
                self._values[node] = self.run_node(node, {})
        return self._values[node]

    def run_node(self, node: fx.Node, env: dict):
        """Run one call node with torch; arguments come from ``env`` or are constants."""

        def arg(a):
            return env[a] if a in env else self.value(a)

        args = fx.node.map_arg(node.args, arg)
        kwargs = fx.node.map_arg(node.kwargs, arg)
        with torch.no_grad():
            return node.target(*args, **kwargs)

    def run_region(self, region: list[fx.Node], source: fx.Node, probe: torch.Tensor):
        """Value of ``region[-1]`` when ``source`` holds ``probe`` (region in graph order)."""
        env = {source: probe}
        for node in region:
            env[node] = self.run_node(node, env)
        return env[region[-1]]

    def replace(self, node: fx.Node, target, args: tuple, pattern: str) -> None:
        """Turn ``node`` into ``target(*args)`` in place, keeping its name, users and metadata.

        ``pattern`` is recorded in ``node.meta["ecnn_pattern"]`` for the import report. Call
        ``finish()`` once after the last replacement to drop the dead producers.
        """
        node.target = target
        node.args = args
        node.kwargs = {}
        node.meta["ecnn_pattern"] = pattern  # still dynamic: it reads the region's dynamic source

    def finish(self) -> ExportedProgram:
        self.graph.eliminate_dead_code()
        self.ep.graph_module.recompile()
        return self.ep
