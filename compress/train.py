"""Shared by every training stage: encoding, the Trainer set-up, batched inference and metrics.

Training goes through the transformers Trainer: it gives per-epoch eval, best-epoch selection,
checkpoints with RNG state (exact resume), bf16/fp16 autocast and progress bars with ETA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from compress.errors import UserError
from compress.machine import autocast, device

datasets.disable_progress_bars()

# Models whose position ids start after the padding index: two positions are not usable.
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2}


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    seed: int = 42
    precision: str = "bf16"
    warmup: float = 0.1
    weight_decay: float = 0.01

    def as_dict(self) -> dict:
        return asdict(self)


def check_max_length(max_length: int, tokenizer, config) -> None:
    limit = config.max_position_embeddings - OFFSET_POSITIONS.get(config.model_type, 0)
    if tokenizer.model_max_length and tokenizer.model_max_length < 100_000:
        limit = min(limit, tokenizer.model_max_length)
    if not 8 <= max_length <= limit:
        raise UserError(f"--max-length {max_length} is outside what this model takes (8 to {limit})")


def encode(split: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Token ids without padding (the collator pads per batch), plus a length column for grouping."""

    def tokenize(batch):
        pair = batch["text_pair"] if "text_pair" in batch else None
        encoded = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    drop = [c for c in split.column_names if c != "label"]
    return split.map(tokenize, batched=True, batch_size=2000, remove_columns=drop)


def load_classifier(path: Path, **kwargs):
    """Load a sequence classifier, turning a missing or corrupt checkpoint into one clear line."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load a model from {path}: {first}") from None


def task_metrics(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    predictions = logits.argmax(-1)
    result = {"accuracy": float((predictions == labels).mean())}
    if "f1" in names:  # binary F1 of the positive class, as GLUE reports for MRPC
        tp = float(((predictions == 1) & (labels == 1)).sum())
        predicted, actual = float((predictions == 1).sum()), float((labels == 1).sum())
        result["f1"] = 2 * tp / (predicted + actual) if predicted + actual else 0.0
    return result


@torch.inference_mode()
def predict_logits(
    model, encoded: datasets.Dataset, tokenizer, precision: str = "fp32", batch_size: int = 64,
    desc: str | None = None,
) -> torch.Tensor:
    """Float32 logits for every row of `encoded`, in row order; batches are formed by length."""
    model.eval()
    order = np.argsort(np.asarray(encoded["length"]), kind="stable")
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    features = encoded.remove_columns([c for c in ("label", "length") if c in encoded.column_names])
    dev = next(model.parameters()).device
    out = torch.empty(len(encoded), model.config.num_labels)
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc=desc, disable=desc is None, unit="batch"):
        rows = order[start : start + batch_size]
        batch = collate([features[int(i)] for i in rows])
        with autocast(precision, dev.type):
            logits = model(**{k: v.to(dev) for k, v in batch.items()}).logits
        out[torch.as_tensor(rows)] = logits.float().cpu()
    return out


def training_arguments(output_dir: Path, config: TrainConfig, progress: bool = True) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        use_cpu=device() == "cpu",
        train_sampling_strategy="group_by_length",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )


def run_trainer(trainer: Trainer, checkpoints: Path):
    """Train, continuing from the newest checkpoint in `checkpoints` when there is one."""
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        print(f"resuming from {last}")
    return trainer.train(resume_from_checkpoint=last)


def metrics_fn(names: tuple[str, ...]):
    def compute(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return task_metrics(np.asarray(logits), np.asarray(prediction.label_ids), names)

    return compute
