"""torch-pruning does the removal: the same weights and logits as the hand slicing it replaced, and
its importances score heads and neurons as the hand-written formulas did."""

import copy

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from compress.configs import PruneConfig
from compress.errors import UserError
from compress.model.removal import remove, trace
from compress.model.structure import STRUCTURE_KEY, record, remove_every_head, remove_every_neuron, set_heads
from compress.stages.prune import apply_pruning, current_structure, scores, taylor_scores

from conftest import CONFIGS
from test_prune import DROP_HEADS, DROP_NEURONS, HEADS, WIDTH, inputs, tiny

KEPT_HEADS = [[h for h in range(HEADS) if h not in DROP_HEADS[i]] for i in range(len(DROP_HEADS))]
KEPT_NEURONS = [[n for n in range(WIDTH) if n not in DROP_NEURONS[i]] for i in range(len(DROP_NEURONS))]


def _rows(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[index])
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[index])
    linear.out_features = len(index)


def _columns(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[:, index])
    linear.in_features = len(index)


def slice_by_hand(model) -> None:
    """The reference: the index_select slicing compress did before torch-pruning, on one model."""
    structure = current_structure(model)
    size = structure["head_size"]
    for layer, heads, neurons in zip(model.get_submodule(structure["layers"]), KEPT_HEADS, KEPT_NEURONS):
        if not heads:
            remove_every_head(layer, structure)
        else:
            index = (torch.tensor(heads)[:, None] * size + torch.arange(size)).flatten()
            if structure["fused_qkv"]:  # rows [queries; keys; values], HEADS * size each
                _rows(layer.get_submodule(structure["query"]), torch.cat([t * HEADS * size + index for t in range(3)]))
            else:
                for name in ("query", "key", "value"):
                    _rows(layer.get_submodule(structure[name]), index)
            _columns(layer.get_submodule(structure["out"]), index)
            set_heads(layer, structure, heads)
        if not neurons:
            remove_every_neuron(layer, structure)
        else:
            index = torch.tensor(neurons)
            rows = torch.cat([index, WIDTH + index]) if structure["glu"] else index  # a GLU neuron: input and gate
            _rows(layer.get_submodule(structure["ffn_in"]), rows)
            _columns(layer.get_submodule(structure["ffn_out"]), index)


@pytest.mark.parametrize("arch", CONFIGS)
def test_torch_pruning_removes_what_hand_slicing_removed(arch):
    by_hand, by_graph = tiny(arch), tiny(arch)
    slice_by_hand(by_hand)
    structure = current_structure(by_graph)
    record(by_graph, STRUCTURE_KEY, structure)
    removed = remove(by_graph, trace(by_graph, inputs()), structure, KEPT_HEADS, KEPT_NEURONS)
    assert removed == {"heads": sum(map(len, DROP_HEADS.values())), "neurons": sum(map(len, DROP_NEURONS.values()))}
    assert structure["heads"] == KEPT_HEADS and structure["neurons"] == [len(n) for n in KEPT_NEURONS]
    hand, graph = by_hand.state_dict(), by_graph.state_dict()
    assert hand.keys() == graph.keys()
    for name in hand:
        assert torch.equal(hand[name], graph[name]), name
    with torch.no_grad():
        torch.testing.assert_close(by_graph(**inputs()).logits, by_hand(**inputs()).logits, atol=1e-5, rtol=0)


def test_removal_touches_only_its_own_layer():
    """MPNet's position bias is read by every layer per head: traced as is, torch-pruning would
    remove a head from every layer at once."""
    model = tiny("mpnet")
    structure = current_structure(model)
    record(model, STRUCTURE_KEY, structure)
    remove(model, trace(model, inputs()), structure, [[0, 1, 2]] + [list(range(HEADS))] * 5, None)
    layers = model.get_submodule(structure["layers"])
    assert layers[0].get_submodule(structure["query"]).out_features == 3 * structure["head_size"]
    assert all(layer.get_submodule(structure["query"]).out_features == HEADS * structure["head_size"]
               for layer in layers[1:])


@pytest.mark.parametrize("arch", CONFIGS)
def test_magnitude_importance_is_the_l2_norm_of_each_unit(arch):
    model = tiny(arch)
    structure = current_structure(model)
    heads, neurons = scores(model, trace(model, inputs()), structure, "magnitude", [], seed=0)
    size = structure["head_size"]
    for layer, head_scores, neuron_scores in zip(model.get_submodule(structure["layers"]), heads, neurons):
        if structure["fused_qkv"]:
            q, k, v = layer.get_submodule(structure["query"]).weight.chunk(3)
        else:
            q, k, v = (layer.get_submodule(structure[n]).weight for n in ("query", "key", "value"))
        out = layer.get_submodule(structure["out"]).weight
        for h in range(HEADS):
            part = slice(h * size, (h + 1) * size)
            norm = torch.cat([q[part].flatten(), k[part].flatten(), v[part].flatten(), out[:, part].flatten()]).norm()
            torch.testing.assert_close(head_scores[h], norm.detach(), rtol=1e-5, atol=0)
        w_in, w_out = layer.get_submodule(structure["ffn_in"]).weight, layer.get_submodule(structure["ffn_out"]).weight
        row_mass = w_in.pow(2).sum(1)
        if structure["glu"]:  # a neuron's input row and gate row
            row_mass = row_mass.view(2, WIDTH).sum(0)
        torch.testing.assert_close(neuron_scores, (row_mass + w_out.pow(2).sum(0)).sqrt().detach(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("arch", ["bert", "modernbert"])  # heads rooted at the query, or at the output (fused)
def test_taylor_importance_is_the_gate_gradient_and_random_is_seeded(arch):
    model = tiny(arch)
    structure = current_structure(model)
    batch = {**inputs(), "labels": torch.tensor([0, 1, 1])}
    graph = trace(model, batch)
    heads, neurons = scores(model, graph, structure, "taylor", [batch], seed=0)
    gate_heads, gate_neurons = taylor_scores(model, structure, [batch])
    for got, want in zip(heads + neurons, gate_heads + gate_neurons):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-7)
    first, again, other = (scores(model, graph, structure, "random", [], seed=s) for s in (3, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(first[0] + first[1], again[0] + again[1]))
    assert not torch.equal(first[0][0], other[0][0])


def test_random_scores_one_uniform_draw_per_head():
    """A sum of per-channel draws would rank heads by layer width, not at random."""
    model = tiny("bert")
    structure = current_structure(model)
    heads, neurons = scores(model, trace(model, inputs()), structure, "random", [], seed=0)
    assert all(0 <= float(s) < 1 for s in torch.cat(heads + neurons))


def test_tracing_keeps_the_training_mode():
    model = tiny("bert").train()
    trace(model, inputs())
    assert model.training


def test_shared_variants_and_unshared_deberta_positions_are_refused_before_scoring():
    model = tiny("bert")
    model.config.compress_sharing = {"groups": [[0, 1]]}
    with pytest.raises(UserError, match="prune its parent, then share"):
        apply_pruning(model, current_structure(model), PruneConfig(neurons=0.5), [], seed=0)
    config = copy.deepcopy(CONFIGS["deberta-v2"])
    config.share_att_key = False
    torch.manual_seed(0)
    deberta = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(UserError, match="--heads: DeBERTa without share_att_key"):
        apply_pruning(deberta, current_structure(deberta), PruneConfig(heads=0.5), [], seed=0)
