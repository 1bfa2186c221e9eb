"""Where each supported architecture keeps its parts: the one place stages look module paths up.

Every stage that edits a model's structure (distill, prune, layerdrop, share) goes through this
map, so supporting a new encoder family means adding one entry here.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from compress.configs import parse_list, reader
from compress.errors import UserError
from compress.model.structure import ATTENTION_NORMS_KEY, SHARING_KEY, STRUCTURE_KEY, record


@dataclass(frozen=True)
class Layout:
    layers: str  # path from the task model to the ModuleList of transformer layers
    # Paths inside one layer:
    attention: str  # the module that owns the heads (query, key, value)
    query: str
    key: str
    value: str
    out: str  # the attention output projection, whose input columns are the heads
    ffn_in: str  # FFN up-projection: its output rows are the intermediate neurons
    ffn_out: str
    position_bias_arg: int | None = None  # MPNet passes one relative-position bias for all heads
    per_head_bias: str | None = None  # the module computing it, from the task model (see compress.model.removal)
    attention_block: tuple[str, ...] = ("attention.",)  # parameter prefixes of the attention sublayer
    returns_tuple: bool = False  # MPNet and DeBERTa layers return (hidden states, attention), the others a tensor
    fused_qkv: bool = False  # query, key and value are one Linear whose rows are [all queries; all keys; all values]
    glu: bool = False  # ffn_in's rows are [inputs; gates]: neuron j is rows j and width + j (a gated linear unit)
    unshared: tuple[str, ...] = ()  # parameter prefixes that sharing leaves per layer
    attention_norm: str | None = None  # a pre-attention norm the first layer is built without (see keep_layers)

    def as_dict(self) -> dict:
        return asdict(self)


BERT_LAYER = dict(attention="attention.self", query="attention.self.query", key="attention.self.key",
                  value="attention.self.value", out="attention.output.dense",
                  ffn_in="intermediate.dense", ffn_out="output.dense")
ARCHITECTURES = {
    "bert": Layout("bert.encoder.layer", **BERT_LAYER),
    "roberta": Layout("roberta.encoder.layer", **BERT_LAYER),
    "xlm-roberta": Layout("roberta.encoder.layer", **BERT_LAYER),
    "electra": Layout("electra.encoder.layer", **BERT_LAYER),
    # DeBERTa-v2/v3: with share_att_key (set by the released checkpoints) the relative positions go
    # through each layer's own query and key projections, so pruning those prunes the position heads too
    "deberta-v2": Layout("deberta.encoder.layer", **{**BERT_LAYER, "query": "attention.self.query_proj",
                         "key": "attention.self.key_proj", "value": "attention.self.value_proj"}, returns_tuple=True),
    "distilbert": Layout("distilbert.transformer.layer", attention="attention", query="attention.q_lin",
                         key="attention.k_lin", value="attention.v_lin", out="attention.out_lin",
                         ffn_in="ffn.lin1", ffn_out="ffn.lin2", attention_block=("attention.", "sa_layer_norm.")),
    "mpnet": Layout("mpnet.encoder.layer", attention="attention.attn", query="attention.attn.q",
                    key="attention.attn.k", value="attention.attn.v", out="attention.attn.o",
                    ffn_in="intermediate.dense", ffn_out="output.dense", position_bias_arg=2, returns_tuple=True,
                    per_head_bias="mpnet.encoder.relative_attention_bias"),
    # ModernBERT: fused Wqkv, a GLU FFN, no biases; its first layer has no attention norm (the embeddings
    # end in one), so the norms stay per layer when layers share, and a layer cut records where they are
    "modernbert": Layout("model.layers", attention="attn", query="attn.Wqkv", key="attn.Wqkv", value="attn.Wqkv",
                         out="attn.Wo", ffn_in="mlp.Wi", ffn_out="mlp.Wo", attention_block=("attn_norm.", "attn."),
                         fused_qkv=True, glu=True, unshared=("attn_norm.",), attention_norm="attn_norm"),
}

TEACHER_LAYERS_KEY = "compress_teacher_layers"  # in a student's config: the teacher layer each layer was made from
LAYER_MAP_KEY = "compress_layer_map"  # and the one each layer learned from by intermediate losses (compress.training.kd)


def layout(config) -> Layout:
    try:
        return ARCHITECTURES[config.model_type]
    except KeyError:
        raise UserError(
            f"architecture '{config.model_type}' is not supported (supported: {', '.join(ARCHITECTURES)})"
        ) from None


def head_pruning_blocker(config) -> str | None:
    """Why the heads of this model cannot be removed, or None."""
    if config.model_type == "deberta-v2" and config.relative_attention and not config.share_att_key:
        return ("DeBERTa without share_att_key projects relative positions through separate per-head "
                "pos_key_proj/pos_query_proj, which compress does not cut")
    return None


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(layout(model.config).layers)


def keep_layers(model: nn.Module, layer_ids: list[int]) -> None:
    """Keep only the layers `layer_ids`, in that order; the config's depth and recorded shapes follow,
    and so do the teacher layer each kept layer was made from and the one it learned from (KD's layer map).

    ModernBERT's per-layer attention types (global or sliding window) follow the layers too, and so
    do its attention norms: transformers builds only the first layer without one, so a cut that puts
    another layer first (or the first elsewhere) records which layers have one, for the reload."""
    spec = layout(model.config)
    parent_path, _, name = spec.layers.rpartition(".")
    layers = encoder_layers(model)
    made_from = getattr(model.config, TEACHER_LAYERS_KEY, None) or list(range(len(layers)))
    setattr(model.config, TEACHER_LAYERS_KEY, [made_from[i] for i in layer_ids])
    if learned := getattr(model.config, LAYER_MAP_KEY, None):
        setattr(model.config, LAYER_MAP_KEY, [learned[i] for i in layer_ids])
    setattr(model.get_submodule(parent_path), name, nn.ModuleList([layers[i] for i in layer_ids]))
    model.config.num_hidden_layers = len(layer_ids)  # DistilBERT maps this to n_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layer_ids]
    if spec.attention_norm:
        normed = [j for j, layer in enumerate(encoder_layers(model))
                  if not isinstance(layer.get_submodule(spec.attention_norm), nn.Identity)]
        recorded = getattr(model.config, ATTENTION_NORMS_KEY, None) is not None
        if recorded or normed != list(range(1, len(layer_ids))):  # else: as transformers builds it
            record(model, ATTENTION_NORMS_KEY, normed)
    structure = getattr(model.config, STRUCTURE_KEY, None)
    if structure:
        for key in ("heads", "neurons"):
            structure[key] = [structure[key][i] for i in layer_ids]
    sharing = getattr(model.config, SHARING_KEY, None)
    if sharing:
        position = {old: new for new, old in enumerate(layer_ids)}
        groups = [[position[i] for i in group if i in position] for group in sharing["groups"]]
        sharing["groups"] = [g for g in groups if g]


def layer_id_list(spec: str, flag: str, depth: int) -> list[int]:
    """The distinct layer ids in `spec` (like 1,3), sorted; a repeated or unknown id is refused."""
    ids = parse_list(spec, flag, int)
    if len(set(ids)) != len(ids):
        raise UserError(f"{flag} {spec} names a layer twice")
    if not ids or not all(0 <= i < depth for i in ids):
        raise UserError(f"{flag} {spec}: name layers from 0 to {depth - 1}")
    return sorted(ids)


TEACHER_LAYERS = reader(int, "alternate, first, last or teacher layer ids like 0,2,4")


def select_layers(teacher_depth: int, n: int, init: str) -> list[int]:
    """Teacher layer ids to copy into an n-layer student.

    `alternate` spreads them evenly, ends included: DistilBERT's [0, 2, 4, 7, 9, 11] for 6 of 12.
    """
    if not 1 <= n <= teacher_depth:
        raise UserError(f"--layers {n} is impossible: the teacher has {teacher_depth} layers (choose 1 to {teacher_depth})")
    if init == "alternate":
        return [int(i) for i in np.linspace(0, teacher_depth - 1, n).round()]
    if init == "first":
        return list(range(n))
    if init == "last":
        return list(range(teacher_depth - n, teacher_depth))
    ids = parse_list(init, "--init", TEACHER_LAYERS)
    if len(ids) != n or len(set(ids)) != n or not all(0 <= i < teacher_depth for i in ids):
        raise UserError(f"--init {init} must name {n} distinct teacher layers from 0 to {teacher_depth - 1}")
    return ids


def make_student(teacher: torch.nn.Module, layer_ids: list[int]) -> torch.nn.Module:
    """A copy of the teacher (embeddings, pooler, head) keeping only the chosen layers, in order."""
    student = copy.deepcopy(teacher)
    keep_layers(student, layer_ids)
    return student
