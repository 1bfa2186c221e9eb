"""Batched inference in PyTorch, and the classification metrics (accuracy; F1 for MRPC, MCC for CoLA).

Other kinds' metrics live with their kind (compress.kinds); `evaluate` asks the task's kind."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from compress.data.batches import gather, label_array, length_batches
from compress.kinds import CLASSIFICATION
from compress.machine import autocast, kernels_for_many_shapes


def task_metrics(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    """Accuracy, and each of `names`: binary F1 of the positive class (GLUE's MRPC), Matthews correlation (CoLA)."""
    predictions = logits.argmax(-1)
    result = {"accuracy": float((predictions == labels).mean())}
    if "f1" in names:  # binary F1 of the positive class, as GLUE reports for MRPC
        tp = float(((predictions == 1) & (labels == 1)).sum())
        predicted, actual = float((predictions == 1).sum()), float((labels == 1).sum())
        result["f1"] = 2 * tp / (predicted + actual) if predicted + actual else 0.0
    if "mcc" in names:
        result["mcc"] = matthews(predictions, labels, logits.shape[-1])
    return result


def matthews(predictions: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Matthews correlation for K classes (Gorodkin 2004), 0 when either side has one class only."""
    counts = np.zeros((classes, classes), dtype=np.float64)
    np.add.at(counts, (labels, predictions), 1)
    total, correct = counts.sum(), np.trace(counts)
    true, predicted = counts.sum(1), counts.sum(0)
    denominator = np.sqrt((total**2 - predicted @ predicted) * (total**2 - true @ true))
    return float((correct * total - predicted @ true) / denominator) if denominator else 0.0


@torch.inference_mode()
def predict_logits(
    model, encoded: datasets.Dataset, tokenizer, precision: str = "fp32", batch_size: int = 64,
    desc: str | None = None,
) -> torch.Tensor:
    """Float32 logits (an embedder's embeddings) for every row of `encoded`, in row order (per token for a
    tagger: see batches.gather)."""
    model.eval()
    kernels_for_many_shapes()
    dev = next(model.parameters()).device
    out = None
    for rows, batch in length_batches(encoded, tokenizer, batch_size, desc):
        with autocast(precision, dev.type):
            logits = model(**{k: v.to(dev) for k, v in batch.items()}).logits
        out = gather(out, rows, logits.float().cpu(), batch, encoded)
    return out


def evaluate(model, encoded_dev: datasets.Dataset, tokenizer, metric_names: tuple[str, ...],
             kind=CLASSIFICATION) -> tuple[dict, torch.Tensor]:
    """Dev metrics of the task's `kind` in fp32, and the outputs they came from."""
    logits = predict_logits(model, encoded_dev, tokenizer)
    return kind.metrics(logits.numpy(), label_array(encoded_dev), metric_names), logits
