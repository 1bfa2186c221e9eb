"""Loading what a variant folder holds (config, tokenizer, classifier), each failure as one clear line.

A folder may be corrupt in many ways (invalid config.json or tokenizer.json, truncated weights,
shapes that do not match); the libraries raise a different exception type for each.
"""

from __future__ import annotations

from pathlib import Path

import transformers
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from compress.errors import UserError, first_line
from compress.model import embedding, structure

# StrictDataclassError: a config field of the wrong type, caught by transformers' typed configs
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError,
               StrictDataclassError)


def load_config(path: Path):
    try:
        return AutoConfig.from_pretrained(path)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load a model config from {path}: {first_line(exc)}") from None


def load_tokenizer(path: Path, **options):
    try:
        return AutoTokenizer.from_pretrained(path, **options)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception on a bad file
        raise UserError(f"cannot load a tokenizer from {path}: {first_line(exc)[:300]}") from None


def load_classifier(path: Path, head: str | None = None, **kwargs):
    """Load a sequence classifier, a tagger (`head` "token", or a saved tagger), a QA reader (`head` "qa",
    or a saved reader) or a sentence embedder (compress.model.embedding, whose config names its pooling),
    turning a missing or corrupt checkpoint into one clear line.

    Pruned checkpoints (per-layer shapes in their config) load through compress.model.structure; a
    shape that does not match is an error, never a silent re-initialisation.
    """
    config = load_config(path)
    try:
        return model_class(config, head).from_pretrained(path, **kwargs)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load a model from {path}: {first_line(exc)}") from None


def model_class(config, head: str | None = None):
    """The class a checkpoint of `config` loads as: its embedder, its structured (pruned) class, a reader's
    Span class (always: it stacks the start and end logits), or the Auto class of its head."""
    if embedding.is_embedder(config):
        return embedding.embedder_class(config)
    head = head or structure.head_of(config)
    auto, classes = structure.HEADS[head]
    if head == "qa" and config.model_type not in classes:
        raise UserError(f"question answering takes {', '.join(classes)} models, not {config.model_type}")
    own = head == "qa" or structure.is_structured(config)
    return own and classes.get(config.model_type) or getattr(transformers, auto)


def from_config(config, **kwargs):
    """A model of `config` with random weights, of the class `load_classifier` gives a checkpoint of it
    (before any pruned shape or tie, which the caller applies)."""
    if embedding.is_embedder(config):
        return embedding.embedder_class(config)._from_config(config, **kwargs)
    head = structure.head_of(config)
    if head == "qa":  # the Span class, unstructured until the caller applies the shapes
        return model_class(config, head)._from_config(config, **kwargs)
    return getattr(transformers, structure.HEADS[head][0]).from_config(config, **kwargs)


def load_embedder(path: Path, **kwargs):
    """A sentence-transformers model folder as an embedder, with the pooling its files name."""
    pooling = embedding.read_pooling(path)
    config = load_config(path)
    setattr(config, embedding.POOLING_KEY, pooling)
    try:
        return embedding.embedder_class(config).from_pretrained(path, config=config, **kwargs)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load a model from {path}: {first_line(exc)}") from None
