"""Stage: structured pruning of attention heads, FFN neurons and whole layers, then recovery by KD.

Importance, higher = keep:
  taylor     |dL/d gate|, summed over training batches, for a gate of 1 that multiplies each head's
             context (Michel et al. 2019, "Are Sixteen Heads Really Better than One?") or each FFN
             neuron's activation (first-order Taylor, Molchanov et al. 2017);
  magnitude  the L2 norm of the weights that belong to the head or neuron;
  random     the control that shows the scores matter.
With --scope global, scores are L2-normalised per layer (as Michel et al. do) and ranked across
layers, so a layer may lose every head; per-layer removes the same fraction from each layer.
Whole layers are scored by how much the loss on the scoring batches rises when each is removed.

Removal is physical (compress.structure slices the matrices and records the per-layer shapes in
the config); the pruned model then recovers with KD from its teacher through the distill stage.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F

from compress.arch import keep_layers, layout
from compress.configs import PruneConfig, TrainConfig, validate
from compress.data import encode, length_batches
from compress.errors import UserError
from compress.recovery import shrink
from compress.structure import STRUCTURE_KEY, keep_heads, keep_neurons, record
from compress.variant import Variant


def current_structure(model) -> dict:
    """The per-layer heads (original ids) and FFN widths the model has now, with its module paths."""
    if getattr(model.config, STRUCTURE_KEY, None):
        return copy.deepcopy(getattr(model.config, STRUCTURE_KEY))
    spec = layout(model.config)
    first = model.get_submodule(spec.layers)[0]
    width = first.get_submodule(spec.ffn_in).out_features
    heads = model.config.num_attention_heads
    depth = model.config.num_hidden_layers
    return {**spec.as_dict(), "head_size": first.get_submodule(spec.query).out_features // heads,
            "full_heads": heads, "full_neurons": width,
            "heads": [list(range(heads)) for _ in range(depth)], "neurons": [width] * depth}


def _gate_hook(gate: torch.Tensor, repeat: int):
    def hook(module, args):
        return (args[0] * gate.repeat_interleave(repeat).to(args[0].dtype), *args[1:])

    return hook


@contextlib.contextmanager
def gates(model, structure: dict, requires_grad: bool = False):
    """Multiplicative gates, all 1, on every head's context and every FFN neuron's activation.

    Yields (head gates, neuron gates), one tensor per layer. Setting entries to 0 masks those
    heads or neurons; the gradient of the loss with respect to the gates is the Taylor score.
    """
    layers = model.get_submodule(structure["layers"])
    on = next(model.parameters()).device
    heads, neurons, handles = [], [], []
    for layer, kept, width in zip(layers, structure["heads"], structure["neurons"], strict=True):
        heads.append(torch.ones(len(kept), requires_grad=requires_grad, device=on))
        neurons.append(torch.ones(width, requires_grad=requires_grad, device=on))
        if kept:
            hook = _gate_hook(heads[-1], structure["head_size"])
            handles.append(layer.get_submodule(structure["out"]).register_forward_pre_hook(hook))
        if width:
            handles.append(layer.get_submodule(structure["ffn_out"]).register_forward_pre_hook(_gate_hook(neurons[-1], 1)))
    try:
        yield heads, neurons
    finally:
        for handle in handles:
            handle.remove()


def scoring_batches(task, tokenizer, max_length: int, examples: int, seed: int, batch_size: int = 32) -> list[dict]:
    """A fixed, seeded sample of training batches (with labels) to score on."""
    sample = task.train.shuffle(seed=seed).select(range(min(examples, len(task.train))))
    encoded = encode(sample, tokenizer, max_length)
    labels = torch.tensor(encoded["label"])
    return [{**batch, "labels": labels[rows]} for rows, batch in length_batches(encoded, tokenizer, batch_size)]


def _loss(model, batch: dict) -> torch.Tensor:
    on = next(model.parameters()).device
    inputs = {k: v.to(on) for k, v in batch.items() if k != "labels"}
    return F.cross_entropy(model(**inputs).logits, batch["labels"].to(on))


def taylor_scores(model, structure: dict, batches: list[dict]) -> tuple[list, list]:
    model.eval()  # no dropout: score the model as it will run
    with gates(model, structure, requires_grad=True) as (heads, neurons):
        targets = [g for g in heads + neurons if g.numel()]
        totals = [torch.zeros_like(g) for g in targets]
        for batch in batches:
            grads = torch.autograd.grad(_loss(model, batch), targets)
            for total, grad in zip(totals, grads):
                total += grad.abs()
    filled = iter(totals)
    scores = [next(filled) if g.numel() else g.detach() for g in heads + neurons]
    return scores[: len(heads)], scores[len(heads):]


def magnitude_scores(model, structure: dict) -> tuple[list, list]:
    size = structure["head_size"]
    heads, neurons = [], []
    for layer, kept, width in zip(model.get_submodule(structure["layers"]), structure["heads"], structure["neurons"]):
        head_norms = torch.zeros(len(kept))
        if kept:
            rows = [layer.get_submodule(structure[n]).weight for n in ("query", "key", "value")]
            out = layer.get_submodule(structure["out"]).weight
            for p in range(len(kept)):
                part = slice(p * size, (p + 1) * size)
                head_norms[p] = float(torch.cat([w[part].flatten() for w in rows] + [out[:, part].flatten()]).norm())
        heads.append(head_norms)
        if width:
            w_in, w_out = layer.get_submodule(structure["ffn_in"]).weight, layer.get_submodule(structure["ffn_out"]).weight
            neurons.append((w_in.pow(2).sum(1) + w_out.pow(2).sum(0)).sqrt().detach())
        else:
            neurons.append(torch.zeros(0))
    return heads, neurons


def random_scores(structure: dict, seed: int) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    return ([torch.rand(len(k), generator=generator) for k in structure["heads"]],
            [torch.rand(w, generator=generator) for w in structure["neurons"]])


def scores(model, structure: dict, importance: str, batches: list[dict], seed: int) -> tuple[list, list]:
    """Per-layer importance of each head and each FFN neuron the model has (on the CPU, wherever it ran)."""
    if importance == "taylor":
        heads, neurons = taylor_scores(model, structure, batches)
    elif importance == "magnitude":
        heads, neurons = magnitude_scores(model, structure)
    else:
        heads, neurons = random_scores(structure, seed)
    return [s.detach().cpu() for s in heads], [s.detach().cpu() for s in neurons]


def choose(layer_scores: list[torch.Tensor], fraction: float, scope: str) -> list[list[int]]:
    """Positions to keep in each layer once the lowest-scoring `fraction` is removed."""
    if scope == "per-layer":
        return [sorted(s.argsort(descending=True, stable=True)[: len(s) - round(fraction * len(s))].tolist())
                for s in layer_scores]
    normalised = torch.cat([s / s.norm().clamp(min=1e-12) for s in layer_scores])
    removed = set(normalised.argsort(stable=True)[: round(fraction * len(normalised))].tolist())
    kept, start = [], 0
    for s in layer_scores:
        kept.append([p for p in range(len(s)) if start + p not in removed])
        start += len(s)
    return kept


def layers_to_remove(model, spec: str, importance: str, batches: list[dict], seed: int) -> list[int]:
    """Layer ids named in `spec`, or the N whose removal raises the scoring loss least."""
    depth = model.config.num_hidden_layers
    try:
        if "," in spec:
            ids = sorted({int(part) for part in spec.split(",") if part.strip()})
        else:
            count = int(spec)
            ids = None
    except ValueError:
        raise UserError(f"--layers must be a count N or layer ids like 1,3, not '{spec}'") from None
    if ids is not None:
        if not ids or not all(0 <= i < depth for i in ids) or len(ids) >= depth:
            raise UserError(f"--layers {spec}: name layers from 0 to {depth - 1}, leaving at least one")
        return ids
    if not 0 < count < depth:
        raise UserError(f"--layers {count}: the model has {depth} layers; remove 1 to {depth - 1}")
    if importance == "random":
        return sorted(torch.randperm(depth, generator=torch.Generator().manual_seed(seed))[:count].tolist())
    model.eval()
    rise = []
    with torch.no_grad():
        for i in range(depth):
            without = copy.deepcopy(model)
            keep_layers(without, [j for j in range(depth) if j != i])
            rise.append(sum(float(_loss(without, b)) for b in batches))
    return sorted(sorted(range(depth), key=lambda i: rise[i])[:count])


def apply_pruning(model, structure: dict, config: PruneConfig, batches: list[dict], seed: int) -> dict:
    """Remove layers, then heads and neurons, in place; returns what was removed."""
    record(model, STRUCTURE_KEY, structure)  # keep_layers keeps the recorded shapes in step
    removed = {"layers": [], "heads": 0, "neurons": 0}
    if config.layers:
        removed["layers"] = layers_to_remove(model, config.layers, config.importance, batches, seed)
        keep_layers(model, [i for i in range(model.config.num_hidden_layers) if i not in removed["layers"]])
    structure = getattr(model.config, STRUCTURE_KEY)
    if not config.heads and not config.neurons:
        return removed
    head_scores, neuron_scores = scores(model, structure, config.importance, batches, seed)
    layers = model.get_submodule(structure["layers"])
    head_choice = choose(head_scores, config.heads, config.scope) if config.heads else None
    neuron_choice = choose(neuron_scores, config.neurons, config.scope) if config.neurons else None
    for flag, fraction, choice, layer_scores, what in (
            ("--heads", config.heads, head_choice, head_scores, "attention heads"),
            ("--neurons", config.neurons, neuron_choice, neuron_scores, "FFN neurons")):
        if choice is not None and not any(choice):
            raise UserError(f"{flag} {fraction} would remove all {sum(map(len, layer_scores))} {what} of the model: "
                            "choose a smaller fraction")
    if config.heads:
        for i, (layer, positions) in enumerate(zip(layers, head_choice)):
            current = structure["heads"][i]
            kept = [current[p] for p in positions]
            if kept != current:
                keep_heads(layer, structure, current, kept)
                removed["heads"] += len(current) - len(kept)
                structure["heads"][i] = kept
    if config.neurons:
        for i, (layer, positions) in enumerate(zip(layers, neuron_choice)):
            if len(positions) != structure["neurons"][i]:
                keep_neurons(layer, structure, positions)
                removed["neurons"] += structure["neurons"][i] - len(positions)
                structure["neurons"][i] = len(positions)
    return removed


def check(config: PruneConfig) -> None:
    validate(config)
    if not (config.heads or config.neurons or config.layers):
        raise UserError("nothing to prune: give --heads, --neurons or --layers")


def default_name(variant: Variant, config: PruneConfig) -> str:
    parts = [f"h{round(100 * config.heads)}" if config.heads else "", f"n{round(100 * config.neurons)}" if config.neurons else "",
             f"l{config.layers.strip(',').replace(',', '_')}" if config.layers else ""]
    return f"{variant.record.name}-prune-{''.join(parts)}-{config.importance}"


def prune(variant: Variant, config: PruneConfig, train_config: TrainConfig, name: str | None = None,
          progress: bool = True, replace: bool = False) -> Variant:
    """Prune `variant` physically, then recover it with KD for `train_config.epochs` (0: no recovery)."""
    check(config)

    def remove(model, task, tokenizer, train: TrainConfig) -> dict:
        before = current_structure(model)
        batches = scoring_batches(task, tokenizer, train.max_length, config.score_examples, train.seed)
        removed = apply_pruning(model, copy.deepcopy(before), config, batches, train.seed)
        after = getattr(model.config, STRUCTURE_KEY)
        return {"structure": {"removed": removed,
                              "heads_per_layer": [len(h) for h in after["heads"]],
                              "neurons_per_layer": after["neurons"],
                              "heads_before": sum(len(h) for h in before["heads"]),
                              "neurons_before": sum(before["neurons"])}}

    return shrink(variant, "prune", name or default_name(variant, config), remove, config, config.as_dict(),
                  train_config, progress, replace)
