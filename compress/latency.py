"""Latency of one forward pass at a batch x sequence shape: ONNX Runtime or eager PyTorch.

Random token ids and no padding, a warm-up, then `runs` timed runs: median (p50) and p90.
On shared machines compare ratios taken in one run, not absolute times.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from compress.machine import autocast


def _inputs(batch: int, sequence: int, vocab_size: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(0)
    shape = (batch, sequence)
    return {"input_ids": generator.integers(100, vocab_size, shape).astype(np.int64),
            "attention_mask": np.ones(shape, np.int64), "token_type_ids": np.zeros(shape, np.int64)}


def _timed(call, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": round(float(np.percentile(times, 50)), 3), "p90": round(float(np.percentile(times, 90)), 3),
            "runs": runs}


def ort_latency_ms(sess, batch: int, sequence: int, runs: int = 30, warmup: int = 5, vocab_size: int = 1000) -> dict:
    names = {i.name for i in sess.get_inputs()}
    inputs = {k: v for k, v in _inputs(batch, sequence, vocab_size).items() if k in names}
    return _timed(lambda: sess.run(None, inputs), runs, warmup)


@torch.inference_mode()
def torch_latency_ms(model, batch: int, sequence: int, runs: int = 30, warmup: int = 5, vocab_size: int = 1000,
                     precision: str = "fp32", input_names=("input_ids", "attention_mask")) -> dict:
    inputs = {k: torch.from_numpy(v) for k, v in _inputs(batch, sequence, vocab_size).items() if k in input_names}
    model.eval()

    def forward():
        with autocast(precision, "cpu"):
            model(**inputs)

    return _timed(forward, runs, warmup)
