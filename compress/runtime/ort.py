"""ONNX Runtime sessions and batched inference over a task split, for parity, accuracy and latency."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import onnxruntime as ort
import torch

from compress.data.batches import gather, length_batches
from compress.errors import UserError, first_line


def session(path: Path, threads: int | None = None, provider: str = "CPUExecutionProvider",
            optimize: bool = True) -> ort.InferenceSession:
    """A session on `path`; a missing or corrupt file is one clear line."""
    if not Path(path).is_file():
        raise UserError(f"ONNX model not found: {path} (run compress export first)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=[provider])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/etc. types for a bad file
        raise UserError(f"cannot load ONNX model {path}: {first_line(exc)[:300]}") from None


def feed(sess: ort.InferenceSession, batch: dict) -> dict:
    """The batch's tensors the graph takes, as int64 numpy arrays."""
    names = {i.name for i in sess.get_inputs()}
    return {k: v.numpy().astype(np.int64) for k, v in batch.items() if k in names}


def logits(sess: ort.InferenceSession, encoded: datasets.Dataset, tokenizer, batch_size: int = 64,
           desc: str | None = None) -> torch.Tensor:
    """Float32 logits (the graph's one output: an embedder's is the sentence embedding) for every row of
    `encoded`, in row order (per token for a tagger: see batches.gather)."""
    out = None
    for rows, batch in length_batches(encoded, tokenizer, batch_size, desc):
        result = sess.run(None, feed(sess, batch))[0].astype(np.float32)
        out = gather(out, rows, torch.from_numpy(result), batch, encoded)
    return out

