"""Encoders whose layers are not all alike: pruned (per-layer shapes) or shared (tied parameters).

transformers builds every layer with the config's head count and FFN width, so a checkpoint whose
layers kept different heads and neurons does not load by itself (and `ignore_mismatched_sizes`
would silently re-initialise the pruned layers). The config therefore records the kept heads and
neurons of every layer under `compress_structure`, and the classes below build the full model,
then slice it to those shapes before the weights load.

A ModernBERT cut to layers that do not start with its first records which layers have an
attention norm (`compress_attention_norms`): transformers builds only the first one without.

Shared layers (ALBERT-style) are recorded under `compress_sharing`: the classes tie the
parameters again and register the ties with transformers, so the checkpoint stores each shared
tensor once and loading restores one tensor used by every layer of its group.

This file needs only torch and transformers: `compress prune` copies it beside the weights as
`modeling_compress.py`, so `AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)` (AutoModelForTokenClassification for a tagger, AutoModelForQuestionAnswering for a
reader) rebuilds the model without
compress installed, and `AutoModel` its encoder alone (what sentence-transformers loads of an embedding
variant). compress's own loader uses the same classes from the package.

A QA reader always loads as a Span class here, pruned or not: transformers' reader returns start and end
logits apart, and these also return them stacked as `logits` [batch, tokens, 2], the one output every
compress stage reads (a tagger's shape), while a server still finds start_logits and end_logits.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DebertaV2ForQuestionAnswering,
    DebertaV2ForSequenceClassification,
    DebertaV2ForTokenClassification,
    DebertaV2Model,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    ModernBertForQuestionAnswering,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    ModernBertModel,
    MPNetForQuestionAnswering,
    MPNetForSequenceClassification,
    MPNetForTokenClassification,
    MPNetModel,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
)
from transformers.utils import ModelOutput

STRUCTURE_KEY = "compress_structure"
SHARING_KEY = "compress_sharing"
ATTENTION_NORMS_KEY = "compress_attention_norms"
MODELING_FILE = "modeling_compress.py"
HEAD_COUNT_ATTRS = ("num_attention_heads", "n_heads")  # BERT and the others | DistilBERT


def resize(layer: nn.Module, path: str, out_features: int | None = None, in_features: int | None = None) -> None:
    """Replace the Linear at `path` with one of its kind in a recorded pruned shape, whose values do not
    matter: the checkpoint's weights load into it next (from_pretrained builds it on the meta device)."""
    linear = layer.get_submodule(path)
    _set(layer, path, nn.Linear(in_features or linear.in_features, out_features or linear.out_features,
                                bias=linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype))


class BiasOnly(nn.Module):
    """What a projection becomes when every head or neuron feeding it is gone: its bias, per token
    (zeros, without a parameter, for a projection without bias, as ModernBERT's are)."""

    def __init__(self, bias: torch.Tensor | None, width: int):
        super().__init__()
        self.width = width
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bias if self.bias is not None else x.new_zeros(self.width)
        return out.expand(*x.shape[:-1], self.width)


class Headless(nn.Module):
    """An attention module with no heads left: the block adds only its output bias, as masking does.

    `projection` is set where the output projection lives inside the attention module (MPNet,
    DistilBERT); BERT and RoBERTa keep it outside, where it becomes a BiasOnly itself.
    """

    def __init__(self, projection_name: str | None = None, bias: torch.Tensor | None = None, width: int = 0):
        super().__init__()
        self.projection_name = projection_name
        if projection_name:
            self.add_module(projection_name, BiasOnly(bias, width))

    def forward(self, hidden_states, *args, **kwargs):
        out = getattr(self, self.projection_name)(hidden_states) if self.projection_name else hidden_states
        return out, None


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _relative(path: str, prefix: str) -> str | None:
    return path[len(prefix) + 1:] if path.startswith(prefix + ".") else None


def _slice_position_bias(module, args, kwargs):
    """MPNet computes one relative-position bias for all original heads: keep this layer's heads.

    The ids are a plain attribute, not a buffer: buffers that are not saved come back
    uninitialised when from_pretrained builds the model on the meta device. Their index tensor is
    made once per device: a CUDA graph cannot capture the host-to-device copy that makes it. One
    made under inference mode cannot take part in training (an evaluation before recovery would
    break it), so that mode has its own.
    """
    def keep(bias):
        made = module.__dict__.setdefault("kept_head_index", {})
        key = (bias.device, torch.is_inference_mode_enabled())
        if key not in made:
            made[key] = torch.tensor(module.kept_head_ids, device=bias.device)
        return bias.index_select(1, made[key])

    if len(args) > 2 and args[2] is not None:
        args = (*args[:2], keep(args[2]), *args[3:])
    elif kwargs.get("position_bias") is not None:
        kwargs = {**kwargs, "position_bias": keep(kwargs["position_bias"])}
    return args, kwargs


def remove_every_head(layer: nn.Module, spec: dict) -> None:
    """What is left of attention with no heads: its output bias (torch-pruning keeps at least one channel)."""
    out = layer.get_submodule(spec["out"])
    inside = _relative(spec["out"], spec["attention"])
    _set(layer, spec["attention"], Headless(inside, out.bias, out.out_features) if inside else Headless())
    if not inside:
        _set(layer, spec["out"], BiasOnly(out.bias, out.out_features))


def remove_every_neuron(layer: nn.Module, spec: dict) -> None:
    """What is left of an FFN with no neurons: its output bias."""
    out = layer.get_submodule(spec["ffn_out"])
    _set(layer, spec["ffn_in"], nn.Identity())
    _set(layer, spec["ffn_out"], BiasOnly(out.bias, out.out_features))


def set_heads(layer: nn.Module, spec: dict, kept: list[int]) -> None:
    """Tell `layer`'s attention it now has the heads `kept` (original ids): its forward reshapes by the
    head count, and MPNet's shared position bias must be sliced to the same heads."""
    attention = layer.get_submodule(spec["attention"])
    for attr in HEAD_COUNT_ATTRS:
        if hasattr(attention, attr):
            setattr(attention, attr, len(kept))
    if hasattr(attention, "all_head_size"):  # MPNet reshapes its context with it
        attention.all_head_size = len(kept) * spec["head_size"]
    if spec.get("position_bias_arg") is not None:
        attention.kept_head_ids = list(kept)
        attention.kept_head_index = {}  # {(device, inference mode): index tensor}, made at the next forward
        if not getattr(attention, "_slices_position_bias", False):
            attention.register_forward_pre_hook(_slice_position_bias, with_kwargs=True)
            attention._slices_position_bias = True


def apply_structure(model: nn.Module, structure: dict) -> None:
    """Give a freshly built full-size model the recorded per-layer heads and FFN widths, before its
    weights load. Only shapes matter here, so this needs no pruning library: the file runs without compress."""
    layers = model.get_submodule(structure["layers"])
    head_size = structure["head_size"]
    for layer, kept, neurons in zip(layers, structure["heads"], structure["neurons"], strict=True):
        if not kept:
            remove_every_head(layer, structure)
        elif len(kept) < structure["full_heads"]:
            if structure.get("fused_qkv"):  # one projection: the kept heads' queries, keys and values
                resize(layer, structure["query"], out_features=3 * len(kept) * head_size)
            else:
                for name in ("query", "key", "value"):
                    resize(layer, structure[name], out_features=len(kept) * head_size)
            resize(layer, structure["out"], in_features=len(kept) * head_size)
            set_heads(layer, structure, kept)
        if not neurons:
            remove_every_neuron(layer, structure)
        elif neurons < structure["full_neurons"]:
            resize(layer, structure["ffn_in"], out_features=(2 if structure.get("glu") else 1) * neurons)
            resize(layer, structure["ffn_out"], in_features=neurons)


def set_attention_norms(model: nn.Module, normed: list[int]) -> None:
    """Give ModernBERT's layers `normed` a pre-attention LayerNorm and the others none, as a layer
    cut left them (transformers builds only the first layer without); the weights load next."""
    config = model.config
    for j, layer in enumerate(model.base_model.layers):
        like = layer.mlp_norm.weight  # on the device and in the dtype the model is being built in
        layer.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias,
                                       device=like.device, dtype=like.dtype) if j in normed else nn.Identity()


def is_shared(name: str, sharing: dict) -> bool:
    """Whether the layer parameter `name` is tied under `sharing` (what: all | attention | ffn)."""
    if name.startswith(tuple(sharing.get("unshared", ()))):
        return False
    in_attention = name.startswith(tuple(sharing["attention_block"]))
    return sharing["what"] == "all" or (sharing["what"] == "attention") == in_attention


def tie_layers(model: nn.Module, sharing: dict) -> dict[str, str]:
    """Make every layer of a group use its first layer's parameters; returns {tied name: source name}."""
    layers = model.get_submodule(sharing["layers"])
    ties = {}
    for group in sharing["groups"]:
        source = layers[group[0]]
        for j in group[1:]:
            for name, param in source.named_parameters():
                if is_shared(name, sharing):
                    path, _, attr = name.rpartition(".")
                    setattr(layers[j].get_submodule(path) if path else layers[j], attr, param)
                    ties[f"{sharing['layers']}.{j}.{name}"] = f"{sharing['layers']}.{group[0]}.{name}"
    return ties


def register_ties(model: nn.Module, ties: dict[str, str]) -> None:
    """Tell transformers about the ties: save_pretrained then writes each shared tensor once, and
    from_pretrained re-ties the missing names to their source instead of initialising them."""
    model._tied_weights_keys = {**(model._tied_weights_keys or {}), **ties}
    model.all_tied_weights_keys.update(ties)


def is_structured(config) -> bool:
    """Whether a config records pruned shapes, shared layers or moved attention norms, which only these
    classes rebuild."""
    return bool(getattr(config, STRUCTURE_KEY, None) or getattr(config, SHARING_KEY, None)) \
        or getattr(config, ATTENTION_NORMS_KEY, None) is not None  # [] too: no layer has one


def record(model: nn.Module, key: str, value: dict) -> None:
    """Store shapes or ties in the config, and point AutoModel at this file for trust_remote_code loads."""
    setattr(model.config, key, value)
    auto, classes = HEADS[class_head(type(model).__name__)]
    model.config.auto_map = {auto: f"{MODELING_FILE[:-3]}.{classes[model.config.model_type].__name__}",
                             "AutoModel": f"{MODELING_FILE[:-3]}.{ENCODERS[model.config.model_type].__name__}"}


def _here(model: nn.Module, recorded: dict) -> dict:
    """`recorded` (shapes or ties, whose layer paths start at the task model) with its layers' path from
    `model`: the encoder alone (AutoModel) lacks the task model's prefix (bert., mpnet., model.)."""
    if model.base_model is not model:
        return recorded
    return {**recorded, "layers": recorded["layers"].removeprefix(model.base_model_prefix + ".")}


class _Structured:
    """Mixin: build the full model, then slice and tie it as its config records, before weights load."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        normed = getattr(config, ATTENTION_NORMS_KEY, None)
        if normed is not None:
            set_attention_norms(self, normed)
        structure = getattr(config, STRUCTURE_KEY, None)
        if structure:
            apply_structure(self, _here(self, structure))
        sharing = getattr(config, SHARING_KEY, None)
        if sharing:  # registered ties are saved once and re-tied when from_pretrained loads
            register_ties(self, tie_layers(self, _here(self, sharing)))


@dataclass
class SpanOutput(ModelOutput):
    """A reader's output: `logits` first (what compress reads; the Trainer's evaluation takes the first
    output), then start and end logits as transformers' readers name them."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class _Spans(_Structured):
    """Mixin: a structured reader whose start and end logits also come stacked as `logits`."""

    def __init_subclass__(cls, **kwargs):
        """Each reader's forward shows its transformers class's signature: the ONNX export reads its parameters.
        (Not functools.wraps: accelerate's unwrapping follows __wrapped__ back to the plain forward.)"""
        super().__init_subclass__(**kwargs)
        reader = cls.__bases__[-1]

        def forward(self, *args, **kwargs):
            out = reader.forward(self, *args, **kwargs)
            return SpanOutput(loss=out.loss, logits=torch.stack([out.start_logits, out.end_logits], -1),
                              start_logits=out.start_logits, end_logits=out.end_logits,
                              hidden_states=out.hidden_states, attentions=out.attentions)

        forward.__signature__ = inspect.signature(reader.forward)
        cls.forward = forward


class StructuredBertForSequenceClassification(_Structured, BertForSequenceClassification):
    pass


class StructuredRobertaForSequenceClassification(_Structured, RobertaForSequenceClassification):
    pass


class StructuredDistilBertForSequenceClassification(_Structured, DistilBertForSequenceClassification):
    pass


class StructuredMPNetForSequenceClassification(_Structured, MPNetForSequenceClassification):
    pass


class StructuredXLMRobertaForSequenceClassification(_Structured, XLMRobertaForSequenceClassification):
    pass


class StructuredElectraForSequenceClassification(_Structured, ElectraForSequenceClassification):
    pass


class StructuredDebertaV2ForSequenceClassification(_Structured, DebertaV2ForSequenceClassification):
    pass


class StructuredModernBertForSequenceClassification(_Structured, ModernBertForSequenceClassification):
    pass


class StructuredBertForTokenClassification(_Structured, BertForTokenClassification):
    pass


class StructuredRobertaForTokenClassification(_Structured, RobertaForTokenClassification):
    pass


class StructuredDistilBertForTokenClassification(_Structured, DistilBertForTokenClassification):
    pass


class StructuredMPNetForTokenClassification(_Structured, MPNetForTokenClassification):
    pass


class StructuredXLMRobertaForTokenClassification(_Structured, XLMRobertaForTokenClassification):
    pass


class StructuredElectraForTokenClassification(_Structured, ElectraForTokenClassification):
    pass


class StructuredDebertaV2ForTokenClassification(_Structured, DebertaV2ForTokenClassification):
    pass


class StructuredModernBertForTokenClassification(_Structured, ModernBertForTokenClassification):
    pass


class SpanBertForQuestionAnswering(_Spans, BertForQuestionAnswering):
    pass


class SpanRobertaForQuestionAnswering(_Spans, RobertaForQuestionAnswering):
    pass


class SpanDistilBertForQuestionAnswering(_Spans, DistilBertForQuestionAnswering):
    pass


class SpanMPNetForQuestionAnswering(_Spans, MPNetForQuestionAnswering):
    pass


class SpanXLMRobertaForQuestionAnswering(_Spans, XLMRobertaForQuestionAnswering):
    pass


class SpanElectraForQuestionAnswering(_Spans, ElectraForQuestionAnswering):
    pass


class SpanDebertaV2ForQuestionAnswering(_Spans, DebertaV2ForQuestionAnswering):
    pass


class SpanModernBertForQuestionAnswering(_Spans, ModernBertForQuestionAnswering):
    pass


CLASSES = {
    "bert": StructuredBertForSequenceClassification,
    "roberta": StructuredRobertaForSequenceClassification,
    "distilbert": StructuredDistilBertForSequenceClassification,
    "mpnet": StructuredMPNetForSequenceClassification,
    "xlm-roberta": StructuredXLMRobertaForSequenceClassification,
    "electra": StructuredElectraForSequenceClassification,
    "deberta-v2": StructuredDebertaV2ForSequenceClassification,
    "modernbert": StructuredModernBertForSequenceClassification,
}


class StructuredBertModel(_Structured, BertModel):
    pass


class StructuredRobertaModel(_Structured, RobertaModel):
    pass


class StructuredDistilBertModel(_Structured, DistilBertModel):
    pass


class StructuredMPNetModel(_Structured, MPNetModel):
    pass


class StructuredXLMRobertaModel(_Structured, XLMRobertaModel):
    pass


class StructuredElectraModel(_Structured, ElectraModel):
    pass


class StructuredDebertaV2Model(_Structured, DebertaV2Model):
    pass


class StructuredModernBertModel(_Structured, ModernBertModel):
    pass


ENCODERS = {  # the encoder alone, as AutoModel loads it
    "bert": StructuredBertModel,
    "roberta": StructuredRobertaModel,
    "distilbert": StructuredDistilBertModel,
    "mpnet": StructuredMPNetModel,
    "xlm-roberta": StructuredXLMRobertaModel,
    "electra": StructuredElectraModel,
    "deberta-v2": StructuredDebertaV2Model,
    "modernbert": StructuredModernBertModel,
}
TOKEN_CLASSES = {  # the same, with a tag per token (a tagger's head)
    "bert": StructuredBertForTokenClassification,
    "roberta": StructuredRobertaForTokenClassification,
    "distilbert": StructuredDistilBertForTokenClassification,
    "mpnet": StructuredMPNetForTokenClassification,
    "xlm-roberta": StructuredXLMRobertaForTokenClassification,
    "electra": StructuredElectraForTokenClassification,
    "deberta-v2": StructuredDebertaV2ForTokenClassification,
    "modernbert": StructuredModernBertForTokenClassification,
}
SPAN_CLASSES = {  # a reader's (start and end logits per token), structured or not
    "bert": SpanBertForQuestionAnswering,
    "roberta": SpanRobertaForQuestionAnswering,
    "distilbert": SpanDistilBertForQuestionAnswering,
    "mpnet": SpanMPNetForQuestionAnswering,
    "xlm-roberta": SpanXLMRobertaForQuestionAnswering,
    "electra": SpanElectraForQuestionAnswering,
    "deberta-v2": SpanDebertaV2ForQuestionAnswering,
    "modernbert": SpanModernBertForQuestionAnswering,
}
# By head: the Auto class transformers loads it with and the structured classes (a config's `architectures` says which)
HEADS = {"sequence": ("AutoModelForSequenceClassification", CLASSES),
         "token": ("AutoModelForTokenClassification", TOKEN_CLASSES),
         "qa": ("AutoModelForQuestionAnswering", SPAN_CLASSES)}
HEAD_SUFFIXES = {"ForTokenClassification": "token", "ForQuestionAnswering": "qa"}  # by class name; else "sequence"


def head_of(config) -> str:
    """The head a saved model has (its `architectures` name its class): a tagger's, a reader's, or a
    sequence classifier's (every other)."""
    return class_head(next(iter(config.architectures or ()), ""))


def class_head(name: str) -> str:
    """The head of a model class called `name`."""
    return next((head for suffix, head in HEAD_SUFFIXES.items() if name.endswith(suffix)), "sequence")
