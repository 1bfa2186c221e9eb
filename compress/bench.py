"""Stage: measure a variant where it will be served: latency per shape and runtime, and accuracy.

Results go into the variant's bench/<machine key>.json, one file per machine, thread count and
device, so numbers from different machines never mix and concurrent benches never meet.
Accuracy comes from the deployed artifact: the ONNX file where there is one.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from compress import ort as runtime
from compress.checkpoint import load_classifier, load_config, load_tokenizer
from compress.configs import BenchConfig, validate
from compress.data import check_max_length, encode
from compress.errors import UserError, first_line
from compress.inference import predict_logits, task_metrics
from compress.latency import ort_latency_ms, torch_latency_ms
from compress.machine import machine
from compress.quantize import torch_int8
from compress.tasks import task_of
from compress.variant import Variant, parent_path

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'1x32,32x128' -> [(1, 32), (32, 128)]."""
    shapes = []
    for part in text.split(","):
        try:
            batch, sequence = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise UserError(f"--shapes takes BATCHxSEQUENCE pairs like 1x128,32x128, not '{part}'") from None
        if batch < 1 or not 1 <= sequence <= 4096:
            raise UserError(f"shape {part} is out of range (batch >= 1, sequence 1 to 4096)")
        shapes.append((batch, sequence))
    return shapes


def machine_key(info: dict, threads: int, device: str) -> str:
    gpu = f" + {info['gpu']}" if device == "cuda" and info.get("gpu") else ""
    return f"{info['cpu']}{gpu} | {threads} threads | {device}"


def key_here(threads: int | None, device: str) -> str:
    """The key of a measurement on this machine with `threads` (default: torch's count) on `device`."""
    return machine_key(machine(), threads or torch.get_num_threads(), device)


def measured(variant: Variant, shapes: list[tuple[int, int]], threads: int | None = BenchConfig.threads,
             device: str = BenchConfig.device) -> bool:
    """Whether `variant` already holds a measurement of every shape on this machine, threads and device."""
    key = key_here(threads, device)
    done = variant.benches.get(key, {}).get("latency_ms", {})
    return bool(done) and all(f"{b}x{s}" in by_shape for by_shape in done.values() for b, s in shapes)


def _onnx_artifact(variant: Variant):
    artifact = variant.record.extra.get("artifact")
    if artifact:  # a quantized variant: its artifact is what it is
        return variant.path / artifact if artifact.endswith(".onnx") else None
    path = variant.path / "onnx" / "model.onnx"
    return path if path.is_file() else None


def _torch_model(variant: Variant):
    """The variant in eager PyTorch: its checkpoint, or its parent re-quantized with its saved int8 weights."""
    if variant.record.params.get("backend") == "torch":
        model = torch_int8(load_classifier(parent_path(variant)))
        artifact = variant.path / variant.record.extra["artifact"]
        try:
            model.load_state_dict(torch.load(artifact, weights_only=False))
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in pickle, zip or torch
            raise UserError(f"cannot load the int8 weights {artifact}: {first_line(exc)}") from None
        return model
    if (variant.path / "model.safetensors").is_file():
        return load_classifier(variant.path).eval()
    return None


def bench(variant: Variant, shapes: list[tuple[int, int]], threads: int | None = BenchConfig.threads,
          device: str = BenchConfig.device, runs: int = BenchConfig.runs) -> Variant:
    """Latency (p50, p90, examples/s) per shape in ORT and eager PyTorch, and the artifact's accuracy."""
    validate(BenchConfig(threads=threads, device=device, runs=runs))
    if device == "cuda" and (not torch.cuda.is_available() or PROVIDERS["cuda"] not in ort.get_available_providers()):
        raise UserError("--device cuda: no CUDA GPU (or no CUDA build of onnxruntime) on this machine")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    onnx_path, model = _onnx_artifact(variant), _torch_model(variant)
    if onnx_path is None and model is None:
        raise UserError(f"{variant.path} has neither an ONNX export nor a PyTorch checkpoint to measure")
    config, tokenizer = load_config(variant.path), load_tokenizer(variant.path)
    for _, sequence in shapes:
        check_max_length(sequence, tokenizer, config, flag="--shapes sequence")
    vocab = config.vocab_size
    results, accuracy_source = {}, None
    task = task_of(variant.record)
    dev = encode(task.dev, tokenizer, variant.record.params["max_length"])
    if onnx_path is not None:
        sess = runtime.session(onnx_path, threads=threads, provider=PROVIDERS[device])
        results[f"ort-{device}"] = _per_shape(lambda b, s: ort_latency_ms(sess, b, s, runs, vocab_size=vocab), shapes)
        logits, accuracy_source = runtime.logits(sess, dev, tokenizer), f"onnx ({onnx_path.name}, ORT {device})"
    if model is not None:
        model = model.to(device)
        names = tokenizer.model_input_names
        results[f"torch-{device}"] = _per_shape(
            lambda b, s: torch_latency_ms(model, b, s, runs, vocab_size=vocab, input_names=names), shapes)
        if accuracy_source is None:
            logits, accuracy_source = predict_logits(model, dev, tokenizer), f"pytorch ({device})"
    info = machine()
    key = machine_key(info, threads, device)
    entry = {
        "machine": {**info, "threads": threads},
        "runs": runs,
        "latency_ms": results,
        "dev": task_metrics(logits.numpy(), np.asarray(dev["label"]), task.metrics),
        "accuracy_from": accuracy_source,
    }
    return variant.record_bench(key, entry)


def _per_shape(measure, shapes) -> dict:
    out = {}
    for batch, sequence in shapes:
        timing = measure(batch, sequence)
        out[f"{batch}x{sequence}"] = {**timing, "examples_per_s": round(1000 * batch / timing["p50"], 1)}
    return out
