"""Stage: structured pruning of attention heads, FFN neurons and whole layers, then recovery by KD.

Importance, higher = keep, each a torch-pruning Importance that scores a group's channels:
  taylor     |dL/d gate|, summed over training batches, for a gate of 1 that multiplies each head's
             context (Michel et al. 2019, "Are Sixteen Heads Really Better than One?") or each FFN
             neuron's activation (first-order Taylor, Molchanov et al. 2017): our own Importance,
             since torch-pruning's GroupTaylorImportance scores weights times their gradients;
  magnitude  the L2 norm of the weights that belong to the head or neuron (GroupMagnitudeImportance);
  random     the control that shows the scores matter (RandomImportance, seeded).
With --scope global, scores are L2-normalised per layer (as Michel et al. do) and ranked across
layers, so a layer may lose every head; per-layer removes the same fraction from each layer.
Whole layers are scored by how much the loss on the scoring batches rises when each is removed.

Removal is physical: torch-pruning's dependency graph removes each head's or neuron's coupled
weights (compress.model.removal), and the config records the per-layer shapes (compress.model.structure) so the
checkpoint reloads. torch-pruning has no notion of removing a whole layer: that stays arch.keep_layers.
The pruned model then recovers with KD from its teacher through the distill stage.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import torch
import torch_pruning as tp

from compress.configs import PruneConfig, TrainConfig
from compress.data.batches import length_batches
from compress.errors import UserError
from compress.kinds import CLASSIFICATION
from compress.model.arch import head_pruning_blocker, keep_layers, layer_id_list, layout
from compress.model.removal import ffn_width, head_group, head_root, neuron_group, remove, trace
from compress.model.structure import SHARING_KEY, STRUCTURE_KEY, record
from compress.training.recovery import shrink, stage_inputs
from compress.training.targets import soft_targets
from compress.variant import Variant, teacher_of


def current_structure(model) -> dict:
    """The per-layer heads (original ids) and FFN widths the model has now, with its module paths."""
    if getattr(model.config, STRUCTURE_KEY, None):
        return copy.deepcopy(getattr(model.config, STRUCTURE_KEY))
    spec = layout(model.config)
    first = model.get_submodule(spec.layers)[0]
    width = ffn_width(first, spec.as_dict())
    heads = model.config.num_attention_heads
    depth = model.config.num_hidden_layers
    return {**spec.as_dict(), "head_size": first.get_submodule(spec.out).in_features // heads,
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


def scoring_batches(task, tokenizer, max_length: int, examples: int, seed: int, batch_size: int = 32,
                    teacher: Variant | None = None) -> list[dict]:
    """A fixed, seeded sample of training batches (with labels) to score on. A kind without labels
    (embeddings) scores against `teacher`'s outputs on those rows instead: its cached soft targets."""
    numbered = task.train.add_column("row", list(range(len(task.train))))
    sample = numbered.shuffle(seed=seed).select(range(min(examples, len(task.train))))
    encoded = task.encode(sample.remove_columns("row"), tokenizer, max_length)
    if task.kind.labelled:
        return [batch for _, batch in length_batches(encoded, tokenizer, batch_size, labels=True)]
    targets = soft_targets(teacher, task, max_length)[sample["row"]]
    return [{**batch, "labels": targets[rows]} for rows, batch in length_batches(encoded, tokenizer, batch_size)]


def _loss(model, batch: dict, kind) -> torch.Tensor:
    """The task kind's hard loss (cross-entropy, MSE) on one scoring batch."""
    on = next(model.parameters()).device
    inputs = {k: v.to(on) for k, v in batch.items() if k != "labels"}
    return kind.hard_loss(model(**inputs).logits, batch["labels"].to(on))


def taylor_scores(model, structure: dict, batches: list[dict], kind=CLASSIFICATION) -> tuple[list, list]:
    model.eval()  # no dropout: score the model as it will run
    with gates(model, structure, requires_grad=True) as (heads, neurons):
        targets = [g for g in heads + neurons if g.numel()]
        totals = [torch.zeros_like(g) for g in targets]
        for batch in batches:
            grads = torch.autograd.grad(_loss(model, batch, kind), targets)
            for total, grad in zip(totals, grads):
                total += grad.abs()
    filled = iter(totals)
    scores = [next(filled) if g.numel() else g.detach() for g in heads + neurons]
    return scores[: len(heads)], scores[len(heads):]


class GateTaylorImportance(tp.importance.Importance):
    """The taylor scores above as a torch-pruning Importance. One backward pass per batch scores
    every layer; a group is then answered by its root module (removal.head_root, or an FFN
    up-projection), each head's score spread evenly over its channels."""

    def __init__(self, model, structure: dict, batches: list[dict], kind):
        heads, neurons = taylor_scores(model, structure, batches, kind)
        size = structure["head_size"]
        self.by_root = {}
        for layer, head, neuron in zip(model.get_submodule(structure["layers"]), heads, neurons):
            if head.numel():
                self.by_root[layer.get_submodule(head_root(structure))] = (head / size).repeat_interleave(size)
            if neuron.numel():
                self.by_root[layer.get_submodule(structure["ffn_in"])] = neuron

    def __call__(self, group) -> torch.Tensor:
        return self.by_root[group[0].dep.target.module][group[0].root_idxs]


# per channel: the squared L2 mass of its weights across the group, so a unit's sum is its norm squared
MAGNITUDE = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)


# A unit (head, neuron) from its channels' scores: taylor and magnitude add up (the magnitude of a
# unit is the root of its squared mass); random takes one channel's draw, since a sum of draws would
# be nearly a constant times the head size and rank layers by their head count.
PER_UNIT = {"taylor": lambda c: c.sum(1), "magnitude": lambda c: c.sum(1).sqrt(), "random": lambda c: c[:, 0]}


def _unit_scores(group_of, graph, layer, structure: dict, units: int, size: int, scorer,
                 importance: str) -> torch.Tensor:
    if not units:
        return torch.zeros(0)
    # a GLU's root item holds each neuron's two rows (input, then gate), so the importances return twice
    # as many scores; the first units * size are the root channels' (torch-pruning adds by root index)
    channels = scorer(group_of(graph, layer, structure, list(range(units * size))))[: units * size]
    return PER_UNIT[importance](channels.detach().float().cpu().view(units, size))


def scores(model, graph, structure: dict, importance: str, batches: list[dict], seed: int,
           kind=CLASSIFICATION) -> tuple[list, list]:
    """Per-layer importance of each head and each FFN neuron the model has (on the CPU, wherever it ran);
    taylor's gradients are of the task `kind`'s hard loss."""
    scorer = {"taylor": lambda: GateTaylorImportance(model, structure, batches, kind), "magnitude": lambda: MAGNITUDE,
              "random": tp.importance.RandomImportance}[importance]()
    heads, neurons = [], []
    with torch.random.fork_rng(devices=[]):  # RandomImportance draws from the global generator
        torch.manual_seed(seed)
        for layer, kept, width in zip(model.get_submodule(structure["layers"]), structure["heads"],
                                      structure["neurons"]):
            heads.append(_unit_scores(head_group, graph, layer, structure, len(kept), structure["head_size"], scorer,
                                      importance))
            neurons.append(_unit_scores(neuron_group, graph, layer, structure, width, 1, scorer, importance))
    return heads, neurons


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


def layers_to_remove(model, spec: str, importance: str, batches: list[dict], seed: int, kind) -> list[int]:
    """Layer ids named in `spec`, or the N whose removal raises the scoring loss least."""
    depth = model.config.num_hidden_layers
    if "," in spec:
        ids = layer_id_list(spec, "--layers", depth)
        if len(ids) >= depth:
            raise UserError(f"--layers {spec} removes every layer: leave at least one")
        return ids
    try:
        count = int(spec)
    except ValueError:
        raise UserError(f"--layers must be a count N or layer ids like 1,3, not '{spec}'") from None
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
            rise.append(sum(float(_loss(without, b, kind)) for b in batches))
    return sorted(sorted(range(depth), key=lambda i: rise[i])[:count])


def apply_pruning(model, structure: dict, config: PruneConfig, batches: list[dict], seed: int,
                  kind=CLASSIFICATION) -> dict:
    """Remove layers, then heads and neurons, in place, scored on the task `kind`'s loss; returns what was removed."""
    if getattr(model.config, SHARING_KEY, None):  # each layer would get its own, differently cut copy
        raise UserError("this variant shares parameters across layers: prune its parent, then share the result")
    if config.heads and (blocked := head_pruning_blocker(model.config)):
        raise UserError(f"--heads: {blocked} (--neurons and --layers still apply)")
    record(model, STRUCTURE_KEY, structure)  # keep_layers keeps the recorded shapes in step
    removed = {"layers": [], "heads": 0, "neurons": 0}
    if config.layers:
        removed["layers"] = layers_to_remove(model, config.layers, config.importance, batches, seed, kind)
        keep_layers(model, [i for i in range(model.config.num_hidden_layers) if i not in removed["layers"]])
    structure = getattr(model.config, STRUCTURE_KEY)
    if not config.heads and not config.neurons:
        return removed
    graph = trace(model, batches[0])
    head_scores, neuron_scores = scores(model, graph, structure, config.importance, batches, seed, kind)
    head_choice = choose(head_scores, config.heads, config.scope) if config.heads else None
    neuron_choice = choose(neuron_scores, config.neurons, config.scope) if config.neurons else None
    for flag, fraction, choice, layer_scores, what in (
            ("--heads", config.heads, head_choice, head_scores, "attention heads"),
            ("--neurons", config.neurons, neuron_choice, neuron_scores, "FFN neurons")):
        if choice is not None and not any(choice):
            raise UserError(f"{flag} {fraction} would remove all {sum(map(len, layer_scores))} {what} of the model: "
                            "choose a smaller fraction")
    kept_heads = [[current[p] for p in positions] for current, positions in zip(structure["heads"], head_choice)] \
        if head_choice else None
    return {**removed, **remove(model, graph, structure, kept_heads, neuron_choice)}


def check(config: PruneConfig) -> None:
    if not (config.heads or config.neurons or config.layers):
        raise UserError("nothing to prune: give --heads, --neurons or --layers")


def default_name(variant: Variant, config: PruneConfig) -> str:
    parts = [f"h{round(100 * config.heads)}" if config.heads else "", f"n{round(100 * config.neurons)}" if config.neurons else "",
             f"l{config.layers.strip(',').replace(',', '_')}" if config.layers else ""]
    steps = f"-s{config.steps}" if config.steps > 1 else ""
    return f"{variant.record.name}-prune-{''.join(parts)}-{config.importance}{steps}"


def cubic(final: float, t: int, steps: int) -> float:
    """The fraction removed after round t of `steps` (Zhu & Gupta 2017): final * (1 - (1 - t / steps)^3)."""
    return final * (1 - (1 - t / steps) ** 3)


class Rounds:
    """prune's change, called once per round (recovery.shrink): round t of N removes what brings the
    heads and neurons removed to the cubic schedule's share of those the variant had once --layers
    were cut (in round 1). With N = 1 it is the one-shot cut, `config` as it is."""

    def __init__(self, config: PruneConfig, teacher: Variant):
        self.config, self.teacher, self.done, self.base = config, teacher, 0, None

    def __call__(self, model, task, tokenizer, train: TrainConfig) -> dict:
        self.done += 1
        before = current_structure(model)
        counts = units(before)
        target = {kind: cubic(getattr(self.config, kind), self.done, self.config.steps) for kind in counts}
        config = dataclasses.replace(self.config, **(target if self.done == 1 else self.fractions(counts, target)))
        batches = scoring_batches(task, tokenizer, train.max_length, config.score_examples, train.seed,
                                  teacher=self.teacher)
        removed = apply_pruning(model, copy.deepcopy(before), config, batches, train.seed, task.kind)
        after = getattr(model.config, STRUCTURE_KEY)
        if self.done == 1:  # what the fractions are of: the heads and neurons the layer cut left
            self.base = {kind: left + removed[kind] for kind, left in units(after).items()}
        return {"structure": {"removed": removed,
                              "heads_per_layer": [len(h) for h in after["heads"]],
                              "neurons_per_layer": after["neurons"],
                              "heads_before": counts["heads"],
                              "neurons_before": counts["neurons"]},
                **({"schedule": target} if self.config.steps > 1 else {})}

    def fractions(self, counts: dict, target: dict) -> dict:
        """--heads and --neurons for a later round: of what is left, the share that reaches `target`."""
        still = {kind: round(target[kind] * self.base[kind]) - (self.base[kind] - counts[kind]) for kind in counts}
        return {"layers": "", **{kind: still[kind] / counts[kind] if counts[kind] else 0.0 for kind in counts}}


def units(structure: dict) -> dict:
    """How many heads and FFN neurons a structure has in all."""
    return {"heads": sum(len(h) for h in structure["heads"]), "neurons": sum(structure["neurons"])}


def prune(variant: Variant, config: PruneConfig, train_config: TrainConfig, name: str | None = None,
          progress: bool = True, replace: bool = False) -> Variant:
    """Prune `variant` physically, then recover it with KD for `train_config.epochs` (0: no recovery),
    in one cut or, gradually, in `config.steps` rounds that share the recovery epochs."""
    variant = stage_inputs(variant, config, PruneConfig, train_config)
    check(config)
    name = default_name(variant, config) if name is None else name
    return shrink(variant, "prune", name, Rounds(config, teacher_of(variant)), config, config.as_dict(), train_config,
                  progress, replace, steps=config.steps)
