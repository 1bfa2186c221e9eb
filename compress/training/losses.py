"""Distillation losses as one table keyed by name (TextBrewer's way): a recipe combines them with weights.

The soft-target term is `kd_loss` (Hinton et al. 2015). The intermediate terms compare each
student layer with the teacher layer it is mapped to (TinyBERT, Jiao et al. 2020; MiniLM, Wang
et al. 2020 and 2021):

    hidden          MSE between hidden states (TinyBERT)
    hidden-cosine   1 - cosine between hidden states (DistilBERT)
    embeddings      MSE between the embedding layers' outputs (TinyBERT)
    attention       KL between attention distributions softmax(QK^T / sqrt(d)) (TinyBERT, MiniLM)
    value-relation  KL between value relations softmax(VV^T / sqrt(d)) (MiniLM)

Attention and value relations are computed from each layer's own query, key and value
projections, so they do not depend on the attention kernel (SDPA returns no weights) nor on
attention dropout; MPNet's relative-position bias, DeBERTa's position terms (c2p, p2c) and
ModernBERT's rotary embeddings are left out, so for those the attention term compares the content
part of the scores. They are compared per head where student and teacher layer have as many
heads, else as one relation over all heads (MiniLM-v2's relation heads with R = 1), so a pruned
layer still learns from its teacher layer; a layer with no heads left has nothing to compare.
compress makes students from teacher layers and pruning keeps the hidden width, so hidden states
always have the teacher's width: TinyBERT's learned map for narrower students has nothing to do here.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from compress.configs import TEACHER_LAYER_IDS, WEIGHTED, parse_list
from compress.errors import UserError
from compress.model.arch import LAYER_MAP_KEY, TEACHER_LAYERS_KEY, layout


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton 2015).
    Rows labelled -100 (augmented examples, which have no gold label) count in the soft term only.
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    labelled = (labels != -100).sum().clamp(min=1)
    hard = F.cross_entropy(student_logits, labels, ignore_index=-100, reduction="sum") / labelled
    return alpha * temperature**2 * soft + (1 - alpha) * hard


@dataclass
class Taps:
    """What one forward pass exposes to the intermediate losses."""

    hidden: tuple[torch.Tensor, ...]  # embeddings output, then each layer's output
    projections: dict[tuple[int, str], torch.Tensor]  # (layer, "query" | "key" | "value") -> [batch, seq, width]
    head_dim: int


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` [batch, seq, ...] over the real tokens of `mask` [batch, seq]."""
    mask = mask.reshape(*mask.shape, *([1] * (values.dim() - mask.dim()))).to(values.dtype)
    return (values * mask).sum() / (mask.sum() * values[0, 0].numel()).clamp(min=1)


def _log_relation(a: torch.Tensor, b: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(a b^T / sqrt(d)) per relation head, padding keys masked: [batch, heads, seq, seq]."""
    batch, seq, width = a.shape
    a = a.float().view(batch, seq, heads, width // heads).transpose(1, 2)
    b = b.float().view(batch, seq, heads, width // heads).transpose(1, 2)
    scores = a @ b.transpose(-1, -2) / math.sqrt(width // heads)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def _relation_kl(first: str, second: str):
    """KL(teacher || student) between the relations of two projections, e.g. query-key: attention."""

    def loss(student: Taps, teacher: Taps, pairs, mask):
        terms = []
        for s, t in pairs:
            if (s, first) not in student.projections:  # a layer with no heads left
                continue
            sa, sb = student.projections[s, first], student.projections[s, second]
            ta, tb = teacher.projections[t, first], teacher.projections[t, second]
            s_heads, t_heads = sa.shape[-1] // student.head_dim, ta.shape[-1] // teacher.head_dim
            heads = s_heads if s_heads == t_heads else 1
            log_s, log_t = _log_relation(sa, sb, heads, mask), _log_relation(ta, tb, heads, mask)
            kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # [batch, heads, seq]
            terms.append(_masked_mean(kl.transpose(1, 2), mask))
        return sum(terms) / len(terms) if terms else torch.zeros((), device=mask.device)

    return loss


def _hidden(measure, layer_pairs: bool = True):
    def loss(student: Taps, teacher: Taps, pairs, mask):
        pairs = [(s + 1, t + 1) for s, t in pairs] if layer_pairs else [(0, 0)]
        return sum(_masked_mean(measure(student.hidden[s].float(), teacher.hidden[t].float()), mask)
                   for s, t in pairs) / len(pairs)

    return loss


@dataclass(frozen=True)
class Intermediate:
    fn: object  # (student Taps, teacher Taps, [(student layer, teacher layer)], mask [batch, seq]) -> scalar
    projections: tuple[str, ...] = ()  # which projections the loss reads


INTERMEDIATE_LOSSES = {
    "hidden": Intermediate(_hidden(lambda s, t: F.mse_loss(s, t, reduction="none"))),
    "hidden-cosine": Intermediate(_hidden(lambda s, t: 1 - F.cosine_similarity(s, t, dim=-1))),
    "embeddings": Intermediate(_hidden(lambda s, t: F.mse_loss(s, t, reduction="none"), layer_pairs=False)),
    "attention": Intermediate(_relation_kl("query", "key"), ("query", "key")),
    "value-relation": Intermediate(_relation_kl("value", "value"), ("value",)),
}


def parse_intermediate(spec: str) -> dict[str, float]:
    """'hidden=1,attention=0.5' (a bare name weighs 1) -> {name: weight}, each name from the table, in
    the table's order (so the variant's default name does not depend on the order typed)."""
    weights = {}
    for name, weight in parse_list(spec, "--intermediate", WEIGHTED):
        if name in weights:
            raise UserError(f"--intermediate names {name} twice")
        if name not in INTERMEDIATE_LOSSES:
            raise UserError(f"--intermediate: unknown loss '{name}' (known: {', '.join(INTERMEDIATE_LOSSES)})")
        weights[name] = weight
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"--intermediate: the weight of {name} must be a finite number >= 0")
    return {name: weights[name] for name in INTERMEDIATE_LOSSES if name in weights}  # one order: one name


def layer_map(student_config, teacher_depth: int, spec: str = "") -> list[int]:
    """The teacher layer each student layer learns from: `spec` (like 1,3,5), else the one it learned
    from before, else the layer it was made from (both recorded in its config, kept by `arch.keep_layers`),
    else TinyBERT's uniform map (student layer j of n: teacher layer (j + 1) * teacher_depth / n - 1)."""
    depth = student_config.num_hidden_layers
    if spec:
        ids = parse_list(spec, "--layer-map", TEACHER_LAYER_IDS)
        if len(ids) != depth or not all(0 <= i < teacher_depth for i in ids):
            raise UserError(f"--layer-map {spec} must name {depth} teacher layers (one per student layer), "
                            f"each from 0 to {teacher_depth - 1}")
        return ids
    for key in (LAYER_MAP_KEY, TEACHER_LAYERS_KEY):
        recorded = getattr(student_config, key, None)
        if recorded and len(recorded) == depth and max(recorded) < teacher_depth:
            return list(recorded)
    return [(j + 1) * teacher_depth // depth - 1 for j in range(depth)]


def _keep_first(found: dict, keys: list, module, args, out) -> None:
    """Store the module's output under its key; a fused projection's [queries; keys; values] in thirds.
    Returns None: the hook must not replace the module's output."""
    for key, part in zip(keys, out.chunk(len(keys), dim=-1), strict=True):
        found.setdefault(key, part)


@contextlib.contextmanager
def tapped(model, layers: list[int], parts: tuple[str, ...]):
    """Collect the outputs of `parts` (query, key, value) of `layers` during one forward: each
    module's first call, on the tokens (DeBERTa then projects its relative positions through the
    same query and key modules). A fused projection (ModernBERT's Wqkv) is tapped once, for all three.
    The taps precede rotary position embeddings (as they leave out MPNet's and DeBERTa's positions)."""
    found: dict[tuple[int, str], torch.Tensor] = {}
    where = layout(model.config)
    blocks = model.get_submodule(where.layers)
    modules = [("query", "key", "value")] if where.fused_qkv and parts else [(part,) for part in parts]
    handles = []
    for layer in sorted(set(layers)):
        for module_parts in modules:
            try:
                module = blocks[layer].get_submodule(getattr(where, module_parts[0]))
            except AttributeError:  # pruned to no heads (Headless): nothing to tap
                continue
            keys = [(layer, part) for part in module_parts]
            handles.append(module.register_forward_hook(partial(_keep_first, found, keys)))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def head_dim(config) -> int:
    return config.hidden_size // config.num_attention_heads


def intermediate_loss(weights: dict[str, float], student: Taps, teacher: Taps, pairs, mask) -> torch.Tensor:
    return sum(w * INTERMEDIATE_LOSSES[name].fn(student, teacher, pairs, mask) for name, w in weights.items())


def projections_needed(weights: dict[str, float]) -> tuple[str, ...]:
    return tuple(sorted({p for name in weights for p in INTERMEDIATE_LOSSES[name].projections}))
