"""Stage: ALBERT-style cross-layer sharing (Lan et al. 2019), then recovery by KD.

Layers are tied within G groups of consecutive layers; G=1 is ALBERT's all-shared. When G does
not divide the depth, the first (depth mod G) groups get one layer more. `what` picks the tied
parameters: all of them, the attention sublayer (ALBERT's Table 4: little accuracy lost) or the
FFN (more lost). The shared tensors start as the group's first layer or the group's mean.
Sharing cuts unique parameters and file size, not FLOPs: every layer still runs.
"""

from __future__ import annotations

import numpy as np
import torch

from compress.configs import ShareConfig, TrainConfig
from compress.errors import UserError
from compress.model.arch import layout
from compress.model.structure import SHARING_KEY, is_shared, record, register_ties, tie_layers
from compress.training.recovery import shrink, stage_inputs
from compress.variant import Variant


def layer_groups(depth: int, groups: int) -> list[list[int]]:
    if not 1 <= groups <= depth:
        raise UserError(f"--groups {groups} is impossible for {depth} layers (choose 1 to {depth})")
    return [part.tolist() for part in np.array_split(np.arange(depth), groups)]


def share_layers(model, config: ShareConfig) -> dict:
    """Tie the model's layers in place as `config` says; returns the sharing recorded in its config."""
    if getattr(model.config, SHARING_KEY, None):
        raise UserError("this variant's layers are already shared; share its parent instead")
    spec = layout(model.config)
    sharing = {"layers": spec.layers, "attention_block": list(spec.attention_block), "what": config.what,
               "groups": layer_groups(model.config.num_hidden_layers, config.groups)}
    if spec.unshared:  # ModernBERT's attention norms: its first layer has none to share
        sharing["unshared"] = list(spec.unshared)
    layers = model.get_submodule(spec.layers)
    for group in sharing["groups"]:
        names = {j: {n: p.shape for n, p in layers[j].named_parameters() if is_shared(n, sharing)} for j in group}
        if any(names[j] != names[group[0]] for j in group):
            raise UserError(f"layers {group} do not have the same shapes (pruned differently): they cannot share")
        if config.init == "mean":
            with torch.no_grad():
                for name in names[group[0]]:
                    mean = torch.stack([layers[j].get_parameter(name) for j in group]).mean(0)
                    layers[group[0]].get_parameter(name).copy_(mean)
    register_ties(model, tie_layers(model, sharing))
    record(model, SHARING_KEY, sharing)
    return sharing


def default_name(variant: Variant, config: ShareConfig) -> str:
    return f"{variant.record.name}-share-g{config.groups}-{config.what}" + ("-mean" if config.init == "mean" else "")


def share(variant: Variant, config: ShareConfig, train_config: TrainConfig, name: str | None = None,
          progress: bool = True, replace: bool = False) -> Variant:
    """Tie `variant`'s layers in groups, then recover with KD for `train_config.epochs` (0: none)."""
    variant = stage_inputs(variant, config, ShareConfig, train_config)

    def tie(model, task, tokenizer, train: TrainConfig) -> dict:
        return {"sharing": {"groups": share_layers(model, config)["groups"]}}

    name = default_name(variant, config) if name is None else name
    return shrink(variant, "share", name, tie, config, config.as_dict(),
                  train_config, progress, replace)
