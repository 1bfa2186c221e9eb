"""Where each supported architecture keeps its layers: the one place stages look module paths up.

Every stage that edits a model's structure (distill, prune, layerdrop, share) goes through this
map, so supporting a new encoder family means adding one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.errors import UserError


@dataclass(frozen=True)
class Layout:
    layers: str  # path from the task model to the ModuleList of transformer layers


ARCHITECTURES = {
    "bert": Layout("bert.encoder.layer"),
    "roberta": Layout("roberta.encoder.layer"),
    "distilbert": Layout("distilbert.transformer.layer"),
    "mpnet": Layout("mpnet.encoder.layer"),
}


def layout(config) -> Layout:
    try:
        return ARCHITECTURES[config.model_type]
    except KeyError:
        raise UserError(
            f"architecture '{config.model_type}' is not supported (supported: {', '.join(ARCHITECTURES)})"
        ) from None


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(layout(model.config).layers)


def set_encoder_layers(model: nn.Module, layers: list[nn.Module]) -> None:
    """Replace the model's layer stack and keep its config's depth in step."""
    parent_path, _, name = layout(model.config).layers.rpartition(".")
    setattr(model.get_submodule(parent_path), name, nn.ModuleList(layers))
    model.config.num_hidden_layers = len(layers)  # DistilBERT maps this to n_layers
