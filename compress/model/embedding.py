"""Sentence embedders: an encoder, then the pooling and normalisation its sentence-transformers files name.

A sentence-transformers model is a folder whose `modules.json` lists its modules: the transformer
(the folder itself), a Pooling module (`1_Pooling/config.json`: mean, CLS or max over the tokens)
and usually a Normalize module (L2). compress reads them once (`read_pooling`), keeps what it read in
the model's config (`compress_pooling`), and builds one model whose output is the sentence
embedding: `logits` holds it, so every stage (training, soft targets, export, bench) reads an
embedder as it reads a classifier. Saving such a model writes the sentence-transformers files back,
so `SentenceTransformer(folder)` loads every embedding variant (a pruned or shared one through the
shipped modeling file, with `trust_remote_code=True`).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    BertModel,
    BertPreTrainedModel,
    MPNetModel,
    MPNetPreTrainedModel,
    RobertaModel,
    RobertaPreTrainedModel,
    XLMRobertaModel,
    XLMRobertaPreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from compress.errors import UserError
from compress.model import structure

POOLING_KEY = "compress_pooling"  # in an embedder's config: {"mode", "normalize", "max_seq_length", "from"}
MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
TRANSFORMER, POOLING, NORMALIZE = (f"sentence_transformers.models.{m}" for m in ("Transformer", "Pooling", "Normalize"))


def read_pooling(folder: Path) -> dict:
    """The pooling of the sentence-transformers model in `folder`: its mode (mean, cls or max), whether
    the embedding is L2-normalised, the max_seq_length it was served with, and which files said so.
    A missing or garbled file, or a module compress cannot reproduce (Dense, another pooling), is one line."""
    def read(name: str):
        path = folder / name
        if not path.is_file():
            raise UserError(f"{folder} is not a sentence-transformers model: it has no {name} (an embedding teacher "
                            "needs modules.json and its Pooling module's config.json)")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON ({exc})") from None

    modules = read("modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                and isinstance(m.get("path", ""), str) for m in modules):
        raise UserError(f"{folder / 'modules.json'}: expected a list of modules, each with a type and a path")
    types = [m["type"].replace(".base.modules.", ".models.").replace(".sentence_transformer.modules.", ".models.")
             for m in modules]
    expected = [TRANSFORMER, POOLING] + [NORMALIZE] * (types[2:3] == [NORMALIZE])
    if types != expected:
        raise UserError(f"{folder / 'modules.json'}: modules {', '.join(t.rsplit('.', 1)[-1] for t in types)}; compress "
                        "distils Transformer, Pooling and an optional Normalize")
    pooling_file = f"{modules[1]['path']}/config.json"
    config = read(pooling_file)
    modes = [MODES[key] for key in MODES if isinstance(config, dict) and config.get(key) is True]
    others = [key for key, value in (config.items() if isinstance(config, dict) else ())
              if key.startswith("pooling_mode") and key not in MODES and value]
    if len(modes) != 1 or others:
        raise UserError(f"{folder / pooling_file}: compress reproduces exactly one of mean, CLS or max pooling, found "
                        f"{', '.join(modes + others) or 'none'}")
    served = {}
    if (folder / "sentence_bert_config.json").is_file():
        served = read("sentence_bert_config.json")
    max_seq_length = served.get("max_seq_length") if isinstance(served, dict) else None
    return {"mode": modes[0], "normalize": types[-1] == NORMALIZE,
            **({"max_seq_length": max_seq_length} if isinstance(max_seq_length, int) else {}),
            "from": ["modules.json", pooling_file]}


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str, normalize: bool) -> torch.Tensor:
    """One vector per sentence from token states [batch, seq, width], over the real tokens of `mask`, as
    sentence-transformers' Pooling and Normalize modules compute it."""
    if mask is None:
        mask = hidden.new_ones(hidden.shape[:2])
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    else:
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1) if normalize else pooled


class _Embedder:
    """The encoder under its usual attribute (bert, mpnet...: every layer path of compress.model.arch holds),
    without a pooler or head; the output's `logits` is the pooled (normalised) sentence embedding."""

    encoder_class: type
    _keys_to_ignore_on_load_unexpected = [r"pooler\."]  # a base's pooler, which sentence-transformers never runs

    def __init__(self, config):
        super().__init__(config)
        takes_pooler = "add_pooling_layer" in inspect.signature(self.encoder_class.__init__).parameters
        setattr(self, self.base_model_prefix,
                self.encoder_class(config, **({"add_pooling_layer": False} if takes_pooler else {})))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_hidden_states=None,
                labels=None, **kwargs):
        """`labels` is named only so that the Trainer finds the label column (the losses are the task kind's)."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask,
                              output_hidden_states=output_hidden_states, **extra, **kwargs)
        pooling = getattr(self.config, POOLING_KEY)
        embedding = pool(out.last_hidden_state, attention_mask, pooling["mode"], pooling["normalize"])
        return SequenceClassifierOutput(logits=embedding, hidden_states=out.hidden_states)

    def save_pretrained(self, folder, *args, **kwargs):
        super().save_pretrained(folder, *args, **kwargs)
        write_sentence_transformers(Path(folder), self.config)


ENCODERS = {"bert": (BertPreTrainedModel, BertModel), "mpnet": (MPNetPreTrainedModel, MPNetModel),
            "roberta": (RobertaPreTrainedModel, RobertaModel), "xlm-roberta": (XLMRobertaPreTrainedModel, XLMRobertaModel)}
EMBEDDERS = {kind: type(f"{encoder.__name__}ForSentenceEmbedding", (_Embedder, pretrained), {"encoder_class": encoder})
             for kind, (pretrained, encoder) in ENCODERS.items()}
STRUCTURED = {kind: type(f"Structured{cls.__name__}", (structure._Structured, cls), {}) for kind, cls in EMBEDDERS.items()}


def is_embedder(config) -> bool:
    return getattr(config, POOLING_KEY, None) is not None


def embedder_class(config):
    """The class that loads an embedder of this config: pruned or shared shapes rebuilt (compress.model.structure)."""
    if config.model_type not in EMBEDDERS:
        raise UserError(f"sentence embeddings support {', '.join(EMBEDDERS)} encoders, not '{config.model_type}'")
    return (STRUCTURED if structure.is_structured(config) else EMBEDDERS)[config.model_type]


def write_sentence_transformers(folder: Path, config) -> None:
    """modules.json, 1_Pooling/config.json, 2_Normalize/ and sentence_bert_config.json beside the weights:
    the folder is then a sentence-transformers model whose transformer is the folder itself."""
    pooling = getattr(config, POOLING_KEY)
    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING}]
    if pooling["normalize"]:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": config.hidden_size, "pooling_mode_mean_sqrt_len_tokens": False,
         **{key: pooling["mode"] == mode for key, mode in MODES.items()}}, indent=2))
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    served = {"max_seq_length": pooling["max_seq_length"]} if "max_seq_length" in pooling else {}
    (folder / "sentence_bert_config.json").write_text(json.dumps({**served, "do_lower_case": False}, indent=2))
