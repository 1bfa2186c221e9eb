"""Task data as model inputs: token ids without padding, batches padded per batch and formed by length.

Every stage encodes its splits here, so training, soft targets, evaluation, ONNX parity and
calibration all see the same tokens.
"""

from __future__ import annotations

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from compress.errors import UserError

datasets.disable_progress_bars()

# Models whose position ids start after the padding index: two positions are not usable.
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2}


def check_max_length(max_length: int, tokenizer, config, flag: str = "--max-length") -> None:
    limit = config.max_position_embeddings - OFFSET_POSITIONS.get(config.model_type, 0)
    if tokenizer.model_max_length and tokenizer.model_max_length < 100_000:
        limit = min(limit, tokenizer.model_max_length)
    if not 8 <= max_length <= limit:
        raise UserError(f"{flag} {max_length} is outside what this model takes (8 to {limit})")


def encode(split: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Token ids without padding (the collator pads per batch), plus a length column for grouping."""

    def tokenize(batch):
        pair = batch["text_pair"] if "text_pair" in batch else None
        encoded = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    drop = [c for c in split.column_names if c != "label"]
    return split.map(tokenize, batched=True, batch_size=2000, remove_columns=drop)


class Collator:
    """Pads token ids per batch, renames label to labels, and passes cached teacher logits along.

    Columns the model does not take (the length used for grouping) are dropped here, so the
    Trainer can keep every column (`remove_unused_columns=False`).
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.pad([{k: v for k, v in r.items() if k not in ("length", "teacher_logits")} for r in rows])
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.tensor([r["teacher_logits"] for r in rows], dtype=torch.float32)
        return batch


def length_batches(encoded: datasets.Dataset, tokenizer, batch_size: int, desc: str | None = None):
    """Yield (row ids, padded batch) over `encoded`, batches formed by length to waste no padding."""
    order = np.argsort(np.asarray(encoded["length"]), kind="stable")
    collate = Collator(tokenizer)
    features = encoded.remove_columns([c for c in ("label", "teacher_logits") if c in encoded.column_names])
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=desc is None, unit="batch"):
        rows = order[start : start + batch_size]
        yield torch.as_tensor(rows), collate([features[int(i)] for i in rows])


def data_record(task) -> dict:
    return {"source": task.source, "spec": task.spec, "kind": task.kind.name, "fingerprint": task.fingerprint,
            "train_examples": len(task.train), "dev_examples": len(task.dev)}
