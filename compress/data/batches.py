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
from compress.kinds import END, EXAMPLE, FIRST_CHAR, LAST_CHAR, START

NO_TAG = -100  # a token without a tag of its own (not a word's first subword, or special): what the losses skip

datasets.disable_progress_bars()

# Models whose position ids start after the padding index: two positions are not usable.
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2}


def check_max_length(max_length: int, tokenizer, config, flag: str = "--max-length") -> None:
    limit = config.max_position_embeddings - OFFSET_POSITIONS.get(config.model_type, 0)
    if tokenizer.model_max_length and tokenizer.model_max_length < 100_000:
        limit = min(limit, tokenizer.model_max_length)
    if not 8 <= max_length <= limit:
        raise UserError(f"{flag} {max_length} is outside what this model takes (8 to {limit})")


def encode(split: datasets.Dataset, tokenizer, max_length: int, stride: int | None = None) -> datasets.Dataset:
    """Token ids without padding (the collator pads per batch), plus a length column for grouping.

    Words given as `tokens` (a tagging task) are tokenized as words, and each word's tag moves to its
    first subword (`align`); a question with its context (QA: `answers` given) becomes overlapping windows
    (`windows`, sharing `stride` tokens: Task.encode passes the task's), so a QA split has more encoded rows
    than questions."""

    def tokenize(batch):
        if "answers" in batch:
            encoded = windows(batch, tokenizer, max_length, stride)
        elif "tokens" in batch:
            encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            encoded["label"] = [align(encoded.word_ids(i), tags) for i, tags in enumerate(batch["label"])]
        else:
            pair = batch["text_pair"] if "text_pair" in batch else None
            encoded = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    drop = [c for c in split.column_names if c != "label"]
    return split.map(tokenize, batched=True, batch_size=2000, remove_columns=drop)


def windows(batch: dict, tokenizer, max_length: int, stride: int | None = None) -> dict:
    """Questions (`text`) with their contexts (`text_pair`) as windows of `max_length` tokens, question first,
    overlapping by `stride` tokens (None: half a window, 128 at 256); each window's label is a row per token
    of the channels compress.kinds names: start and end targets (the answer's first and last token, or CLS
    when this window does not hold the whole answer: Hugging Face's SQuAD recipe), the token's characters in
    the context, and the question's example index. The first gold answer (`answers`, `starts`) is the one trained on."""
    try:
        encoded = tokenizer([q.lstrip() for q in batch["text"]], batch["text_pair"], truncation="only_second",
                            max_length=max_length, stride=stride or max_length // 2,
                            return_overflowing_tokens=True, return_offsets_mapping=True)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception for a window too small
        raise UserError(f"a question leaves no room for its context in windows of {max_length} tokens "
                        f"({str(exc).splitlines()[0][:200]}): raise --max-length or lower --doc-stride") from None
    labels = []
    for i, offsets in enumerate(encoded.pop("offset_mapping")):
        row = encoded["overflow_to_sample_mapping"][i]
        first = batch["starts"][row][0]
        last = first + len(batch["answers"][row][0])
        in_context = [s == 1 for s in encoded.sequence_ids(i)]
        label = []
        for span, inside in zip(offsets, in_context):
            channels = [0] * 5
            channels[FIRST_CHAR], channels[LAST_CHAR] = span if inside else (-1, -1)
            channels[EXAMPLE] = batch["label"][row]
            label.append(channels)
        spans = [(j, span) for j, (span, inside) in enumerate(zip(offsets, in_context)) if inside]
        if spans[0][1][0] <= first and spans[-1][1][1] >= last:  # the whole answer lies in this window
            start = next(j for j, (a, b) in spans if b > first)
            end = next(j for j, (a, b) in reversed(spans) if a < last)
        else:
            start = end = 0
        label[start][START] = label[end][END] = 1
        labels.append(label)
    encoded.pop("overflow_to_sample_mapping")
    encoded["label"] = labels
    return encoded


def align(word_ids: list[int | None], tags: list[int], no_label: int = NO_TAG) -> list[int]:
    """Per token: its word's tag on the word's first subword, `no_label` on the others and on special
    tokens (the losses and the metric skip them). Works from the tokenizer's word ids, so alike for
    WordPiece, byte-level BPE and SentencePiece; words cut off by truncation lose their tags."""
    aligned, previous = [], None
    for word in word_ids:
        aligned.append(tags[word] if word is not None and word != previous else no_label)
        previous = word
    return aligned


def _fit(values: list, length: int, fill: float) -> torch.Tensor:
    """Per-token rows (a tag or a logit vector per token) cut or padded with `fill` to `length` tokens each."""
    rows = [torch.as_tensor(v, dtype=torch.float32)[:length] for v in values]
    shape = (len(rows), length, *rows[0].shape[1:])
    out = torch.full(shape, fill, dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


class Collator:
    """Pads token ids per batch, renames label to labels, and passes cached teacher logits along.

    Per-token labels and teacher logits (a tagging task) are padded to the batch's tokens, labels with
    the mark the losses skip. Columns the model does not take (the length used for grouping) are
    dropped here, so the Trainer can keep every column (`remove_unused_columns=False`).
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def __call__(self, rows: list[dict]) -> dict:
        per_token = isinstance(rows[0].get("label"), list)
        batch = self.pad([{k: v for k, v in r.items() if k not in ("length", "teacher_logits")
                           and not (per_token and k == "label")} for r in rows])
        length = batch["input_ids"].shape[1]
        if per_token:
            batch["labels"] = _fit([r["label"] for r in rows], length, NO_TAG).long()
        if "teacher_logits" in rows[0]:
            logits = [r["teacher_logits"] for r in rows]
            batch["teacher_logits"] = _fit(logits, length, 0.0) if per_token else torch.tensor(logits, dtype=torch.float32)
        return batch


def length_batches(encoded: datasets.Dataset, tokenizer, batch_size: int, desc: str | None = None,
                   labels: bool = False):
    """Yield (row ids, padded batch) over `encoded`, batches formed by length to waste no padding; with
    `labels`, each batch holds its rows' labels."""
    order = np.argsort(np.asarray(encoded["length"]), kind="stable")
    collate = Collator(tokenizer)
    features = encoded.remove_columns([c for c in ("label", "teacher_logits") if c in encoded.column_names
                                       and not (labels and c == "label")])
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=desc is None, unit="batch"):
        rows = order[start : start + batch_size]
        yield torch.as_tensor(rows), collate([features[int(i)] for i in rows])


def label_array(encoded: datasets.Dataset) -> np.ndarray:
    """The rows' labels as one array: per-token labels padded with the skipped mark to the longest row,
    the width of the outputs `gather` makes."""
    labels = encoded["label"]
    if not isinstance(labels[0], list):
        return np.asarray(labels)
    return _fit(list(labels), max(encoded["length"]), NO_TAG).long().numpy()


def gather(outputs: torch.Tensor | None, rows: torch.Tensor, result: torch.Tensor, batch: dict,
           encoded: datasets.Dataset) -> torch.Tensor:
    """Put one batch's float32 outputs into `outputs` (made at the first batch) at `rows`. Per-token outputs
    ([batch, tokens, ...]) go into a [rows, longest row, ...] tensor, NaN wherever a row has no token."""
    per_token = result.dim() == 3
    if outputs is None:
        width = (max(encoded["length"]),) if per_token else ()
        outputs = torch.full((len(encoded), *width, *result.shape[(2 if per_token else 1):]), torch.nan)
    if per_token:
        result = result.masked_fill(~batch["attention_mask"].bool()[..., None], torch.nan)
        outputs[rows, :result.shape[1]] = result
    else:
        outputs[rows] = result
    return outputs


def data_record(task) -> dict:
    return {"source": task.source, "spec": task.spec, "kind": task.kind.name, "fingerprint": task.fingerprint,
            "train_examples": len(task.train), "dev_examples": len(task.dev)}
