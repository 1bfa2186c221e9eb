"""Physical removal of attention heads and FFN neurons, done by torch-pruning's dependency graph.

torch-pruning traces the model once and, for the channels of a layer's query (or FFN up-projection),
finds every coupled tensor: the key and value rows and the output projection's columns (or the
down-projection's columns). Its group then removes them all. What it does not do is kept here:
- the attention module's head count, which its forward reshapes by (structure.set_heads);
- a layer that loses every head or neuron: torch-pruning keeps at least one channel, so that layer
  becomes structure.Headless / BiasOnly (what masking it computes);
- MPNet's relative-position bias, one tensor read by every layer per head: traced as it is, it
  couples the heads of all layers, so it is detached while tracing and each layer slices its copy;
- ModernBERT's fused query/key/value projection, which its graph follows wrongly: that head group is
  built here (`_fused_head_group`), and torch-pruning's pruning functions and importances use it as
  they use a traced one. Its gated FFN (rows j and width + j per neuron) the graph couples right.
"""

from __future__ import annotations

import contextlib

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import UserError
from compress.model.arch import layout
from compress.model.structure import remove_every_head, remove_every_neuron, set_heads


@contextlib.contextmanager
def _detached(model: nn.Module, path: str | None):
    handle = model.get_submodule(path).register_forward_hook(lambda module, args, out: out.detach()) if path else None
    try:
        yield
    finally:
        if handle:
            handle.remove()


def trace(model: nn.Module, example: dict) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of `model`, traced on one short row of its inputs: the
    graph keeps that forward's activations alive, and the coupling does not depend on the shape."""
    on, training = next(model.parameters()).device, model.training
    inputs = {k: v[:1, :8].to(on) for k, v in example.items() if k != "labels"}
    try:
        with torch.enable_grad(), _detached(model, layout(model.config).per_head_bias):  # it traces autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=inputs, verbose=False)
    finally:
        model.train(training)  # tracing leaves the model in eval mode


def _group(graph: tp.DependencyGraph, layer: nn.Module, root: str, coupled: tuple[str, ...], idxs: list[int]):
    """torch-pruning's group for channels `idxs` of `root`'s outputs, checked to hold exactly the
    modules `coupled` of this layer: a wider group would edit tensors no recorded shape describes."""
    group = graph.get_pruning_group(layer.get_submodule(root), tp.prune_linear_out_channels, idxs=idxs)
    names = {module: name for name, module in layer.named_modules()}
    touched = {names.get(dep.target.module, "<outside the layer>") for dep, _ in group
               if isinstance(dep.target.module, nn.Module)
               and next(dep.target.module.parameters(recurse=False), None) is not None}
    if touched != set(coupled):
        raise UserError(f"torch-pruning coupled {root} with {sorted(touched)} instead of {sorted(coupled)}: "
                        f"cannot prune {type(layer).__name__}'s layout")
    return group


def _add(group: tp.Group, dep: tp.Dependency, idxs: list[int], root_idxs: list[int]) -> None:
    group.add_dep(dep, idxs)
    group[len(group) - 1].root_idxs = root_idxs  # as DependencyGraph.get_pruning_group leaves its items


def _fused_head_group(graph: tp.DependencyGraph, layer: nn.Module, structure: dict, idxs: list[int]) -> tp.Group:
    """The group of head channels `idxs` in a layer whose query, key and value are one Linear
    (ModernBERT's Wqkv, rows [queries; keys; values]), built by hand: torch-pruning's graph cannot
    follow the fused rows through the view(..., 3, heads, head_dim) and unbind to the heads: it
    maps row r onto the output projection's column r (past its columns for key and value rows), so
    a head's key and value rows are never in its group. Rooted at the output projection's columns
    (channel i), with the rows i of each third of the fused projection."""
    fused, out = layer.get_submodule(structure["query"]), layer.get_submodule(structure["out"])
    width = out.in_features  # the heads it has now, times head_size
    root, rows = graph.module2node[out], graph.module2node[fused]
    group = tp.Group()
    group._DG = graph  # Group.prune records its history there
    _add(group, tp.Dependency(tp.prune_linear_in_channels, tp.prune_linear_in_channels, root, root), idxs, idxs)
    _add(group, tp.Dependency(tp.prune_linear_in_channels, tp.prune_linear_out_channels, root, rows),
         [third * width + i for third in range(3) for i in idxs], [i for _ in range(3) for i in idxs])
    return group


def head_root(structure: dict) -> str:
    """The module whose channels root a head group: the query, or the output projection of a fused layout."""
    return structure["out"] if structure.get("fused_qkv") else structure["query"]


def head_group(graph: tp.DependencyGraph, layer: nn.Module, structure: dict, idxs: list[int]) -> tp.Group:
    """The group of head channels `idxs` (head position * head_size + i) of `layer`: the heads' query,
    key and value rows and output projection columns."""
    if structure.get("fused_qkv"):
        return _fused_head_group(graph, layer, structure, idxs)
    coupled = tuple(structure[n] for n in ("query", "key", "value", "out"))
    return _group(graph, layer, structure["query"], coupled, idxs)


def neuron_group(graph: tp.DependencyGraph, layer: nn.Module, structure: dict, idxs: list[int]) -> tp.Group:
    """The group of FFN neurons `idxs` of `layer`: their up-projection rows (two each in a GLU) and
    down-projection columns."""
    return _group(graph, layer, structure["ffn_in"], (structure["ffn_in"], structure["ffn_out"]), idxs)


def ffn_width(layer: nn.Module, structure: dict) -> int:
    """How many FFN neurons `layer` has (a GLU's up-projection has two rows per neuron)."""
    return layer.get_submodule(structure["ffn_in"]).out_features // (2 if structure.get("glu") else 1)


def remove_heads(graph: tp.DependencyGraph, layer: nn.Module, structure: dict, current: list[int],
                 kept: list[int]) -> None:
    """Keep only the heads `kept` (original ids) of `layer`, which has the heads `current`, in the
    order they have now (the order `kept` is recorded in)."""
    if not kept:
        remove_every_head(layer, structure)
        return
    size = structure["head_size"]
    gone = [p for p, head in enumerate(current) if head not in kept]
    head_group(graph, layer, structure, [p * size + i for p in gone for i in range(size)]).prune()
    set_heads(layer, structure, kept)


def remove_neurons(graph: tp.DependencyGraph, layer: nn.Module, structure: dict, positions: list[int]) -> None:
    """Keep only the FFN neurons at `positions` of `layer`."""
    if not positions:
        remove_every_neuron(layer, structure)
        return
    neuron_group(graph, layer, structure, sorted(set(range(ffn_width(layer, structure))) - set(positions))).prune()


def remove(model: nn.Module, graph: tp.DependencyGraph, structure: dict, heads: list[list[int]] | None,
           neurons: list[list[int]] | None) -> dict:
    """Keep, per layer, the heads `heads[i]` (original ids) and the FFN neurons at `neurons[i]`
    (positions now), each in ascending order; None keeps all. `graph` is `trace(model, ...)`. Updates `structure` in place
    and returns the counts removed."""
    removed = {"heads": 0, "neurons": 0}
    with torch.no_grad():
        for i, layer in enumerate(model.get_submodule(structure["layers"])):
            current = structure["heads"][i]
            if heads is not None and [h for h in current if h in heads[i]] != heads[i]:
                raise ValueError(f"layer {i}: keep heads {heads[i]} in the order the layer has them, {current}")
            if heads is not None and heads[i] != current:
                remove_heads(graph, layer, structure, current, heads[i])
                removed["heads"] += len(current) - len(heads[i])
                structure["heads"][i] = list(heads[i])
            if neurons is not None and len(neurons[i]) != structure["neurons"][i]:
                remove_neurons(graph, layer, structure, neurons[i])
                removed["neurons"] += structure["neurons"][i] - len(neurons[i])
                structure["neurons"][i] = len(neurons[i])
    return removed
