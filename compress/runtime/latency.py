"""Latency of one forward pass at a batch x sequence shape: ONNX Runtime or PyTorch, on the CPU or a GPU.

Random token ids and no padding, a warm-up, then `runs` timed runs: median (p50) and p90.
On a GPU every timed run ends in a synchronize, so a time is the forward's, not its launch's.
On shared machines compare ratios taken in one run, not absolute times.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _inputs(batch: int, sequence: int, vocab_size: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(0)
    shape = (batch, sequence)
    return {"input_ids": generator.integers(100, vocab_size, shape).astype(np.int64),
            "attention_mask": np.ones(shape, np.int64), "token_type_ids": np.zeros(shape, np.int64)}


def _times(call, runs: int, warmup: int, sync=None) -> list[float]:
    """Milliseconds of each of `runs` calls, after `warmup` untimed ones."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict:
    """p50 and p90 of timed runs, and how many there were."""
    return {"p50": round(float(np.percentile(times, 50)), 3), "p90": round(float(np.percentile(times, 90)), 3),
            "runs": len(times)}


def _ort_call(sess, batch: int, sequence: int, vocab_size: int):
    names = {i.name for i in sess.get_inputs()}
    inputs = {k: v for k, v in _inputs(batch, sequence, vocab_size).items() if k in names}
    return lambda: sess.run(None, inputs)


def ort_latency_ms(sess, batch: int, sequence: int, runs: int = 30, warmup: int = 5, vocab_size: int = 1000) -> dict:
    return summary(_times(_ort_call(sess, batch, sequence, vocab_size), runs, warmup))


def in_turn(sessions: dict, batch: int, sequence: int, rounds: int, runs: int, warmup: int = 2,
            vocab_size: int = 1000) -> dict[str, list[list[float]]]:
    """{name: each round's run times} for ORT sessions timed in turn, round after round: a slow spell of
    a shared machine then falls on all of them, not on whichever was being timed (one block each)."""
    calls = {name: _ort_call(sess, batch, sequence, vocab_size) for name, sess in sessions.items()}
    times = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(_times(call, runs, warmup))
    return times


def alternating(sessions: dict, batch: int, sequence: int, rounds: int, runs: int, warmup: int = 2,
                vocab_size: int = 1000) -> dict[str, list[float]]:
    """{name: p50 of each round} of `in_turn`."""
    return {name: [summary(times)["p50"] for times in by_round]
            for name, by_round in in_turn(sessions, batch, sequence, rounds, runs, warmup, vocab_size).items()}


def in_precision(model, precision: str):
    """A copy of `model` with its weights in `precision` (fp16/bf16), as it would be served; fp32 is `model`."""
    return model if precision == "fp32" else copy.deepcopy(model).to(DTYPES[precision])


def _captured(model, inputs: dict):
    """One forward recorded as a CUDA graph: replaying it launches every kernel at once, which is what
    a graph-capturing runtime (CUDA graphs, torch.compile's reduce-overhead) gives a served model."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph: lazy initialisation must not be captured
        for _ in range(3):
            model(**inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(**inputs)
    return graph.replay


@torch.inference_mode()
def torch_latency_ms(model, batch: int, sequence: int, runs: int = 30, warmup: int = 5, vocab_size: int = 1000,
                     input_names=("input_ids", "attention_mask"), graph: bool = False) -> dict:
    """Time `model` as it is (its device and dtype). `graph`: replay a captured CUDA graph (GPU only)."""
    on = next(model.parameters()).device
    inputs = {k: torch.from_numpy(v).to(on) for k, v in _inputs(batch, sequence, vocab_size).items()
              if k in input_names}
    model.eval()
    forward = _captured(model, inputs) if graph else (lambda: model(**inputs))
    return summary(_times(forward, runs, warmup, torch.cuda.synchronize if on.type == "cuda" else None))
