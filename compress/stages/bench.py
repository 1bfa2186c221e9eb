"""Stage: measure a variant where it will be served: latency per shape and runtime, and accuracy.

Results go into the variant's bench/<machine key>.json, one file per machine, thread count and
device, so numbers from different machines never mix and concurrent benches never meet.
Accuracy comes from the deployed artifact: the ONNX file where there is one.
"""

from __future__ import annotations

from datetime import datetime, timezone

import onnxruntime as ort
import torch

from compress.configs import MAX_BATCH, MAX_SEQUENCE, SHAPE, BenchConfig, parse_list
from compress.data.batches import check_max_length, label_array
from compress.data.tasks import task_of
from compress.errors import UserError, first_line
from compress.machine import machine
from compress.model.checkpoint import load_config, load_tokenizer
from compress.runtime import ort as runtime
from compress.runtime.artifacts import onnx_artifact, torch_model
from compress.runtime.inference import predict_logits
from compress.runtime.latency import in_precision, in_turn, ort_latency_ms, summary, torch_latency_ms
from compress.variant import Variant, as_variant

MAX_TOKENS = 2**20  # batch x sequence: a 128 x 8192 or 4096 x 256 forward, gigabytes of activations
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def parse_shapes(text: str, flag: str = "--shapes") -> list[tuple[int, int]]:
    """'1x32,32x128' -> [(1, 32), (32, 128)]."""
    return check_shapes(parse_list(text, flag, SHAPE))


def check_shapes(shapes) -> list[tuple[int, int]]:
    """`shapes` as (batch, sequence) pairs of integers within bounds a run can hold; the API may also
    give them as the flag's text, like "1x128"."""
    if isinstance(shapes, str):
        return parse_shapes(shapes)
    if not isinstance(shapes, (list, tuple)) or not shapes:
        raise UserError(f"shapes must be (batch, sequence) pairs like [(1, 128)] or text like '1x128', "
                        f"not {shapes!r:.60}")
    for shape in shapes:
        if not (isinstance(shape, (list, tuple)) and len(shape) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)):
            raise UserError(f"shape {shape!r:.60} is not a (batch, sequence) pair of integers")
        batch, sequence = shape
        if not (1 <= batch <= MAX_BATCH and 1 <= sequence <= MAX_SEQUENCE and batch * sequence <= MAX_TOKENS):
            raise UserError(f"shape {batch}x{sequence} is out of range (batch 1 to {MAX_BATCH}, sequence 1 to "
                            f"{MAX_SEQUENCE}, at most {MAX_TOKENS:,} tokens in all)")
    return [tuple(shape) for shape in shapes]


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


GPU_EXTRA = "pip install -e '.[gpu]' (onnxruntime-gpu) to measure ONNX Runtime's CUDA provider too"


def bench(variant: Variant, shapes: list[tuple[int, int]], threads: int | None = BenchConfig.threads,
          device: str = BenchConfig.device, runs: int = BenchConfig.runs) -> Variant:
    """Latency (p50, p90, examples/s) per shape and runtime, and the deployed artifact's accuracy.

    CPU: ORT and eager PyTorch fp32. GPU: PyTorch in fp32, fp16 and bf16, each eager and replayed
    from a CUDA graph (eager timings at batch 1 measure kernel launches, not the model), and ORT's
    CUDA provider where onnxruntime-gpu is installed.
    """
    variant, shapes = as_variant(variant), check_shapes(shapes)
    BenchConfig(threads=threads, device=device, runs=runs)  # checks them as the flags are checked
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA GPU on this machine")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    onnx_path, model = onnx_artifact(variant), torch_model(variant, device)
    if device == "cuda" and onnx_path is not None and PROVIDERS["cuda"] not in ort.get_available_providers():
        onnx_path = None
        if model is not None:
            print(f"ONNX Runtime has no CUDA provider here: {GPU_EXTRA}")
    if onnx_path is None and model is None:
        raise Unmeasurable(_why_unmeasurable(variant, device))
    config, tokenizer = load_config(variant.path), load_tokenizer(variant.path)
    for _, sequence in shapes:
        check_max_length(sequence, tokenizer, config, flag="--shapes sequence")
    vocab = config.vocab_size
    results, accuracy_source, by_precision = {}, None, {}
    task = task_of(variant.record)
    dev = task.encode(task.dev, tokenizer, variant.record.params["max_length"])
    labels = label_array(dev)
    if onnx_path is not None:
        sess = runtime.session(onnx_path, threads=threads, provider=PROVIDERS[device])
        results[f"ort-{device}"] = _per_shape(lambda b, s: ort_latency_ms(sess, b, s, runs, vocab_size=vocab), shapes,
                                              runs)
        logits, accuracy_source = runtime.logits(sess, dev, tokenizer), f"onnx ({onnx_path.name}, ORT {device})"
    if model is not None:
        names = tokenizer.model_input_names
        for precision in precisions(device):
            served = in_precision(model, precision)
            runtime_name = f"torch-{device}" if device == "cpu" else f"torch-{device}-{precision}"
            for graph in (False, True) if device == "cuda" else (False,):
                try:
                    results[runtime_name + ("-graph" if graph else "")] = _per_shape(
                        lambda b, s, m=served, g=graph: torch_latency_ms(m, b, s, runs, vocab_size=vocab,
                                                                         input_names=names, graph=g), shapes, runs)
                except RuntimeError as exc:  # a model whose forward cannot be captured is timed eager only
                    print(f"{variant.path}: no CUDA graph of {precision}: {first_line(exc)[:200]}")
            if device == "cuda":
                by_precision[precision] = task.scores(  # the kind's headline metric: accuracy for classifiers
                    predict_logits(served, dev, tokenizer).numpy(), labels)[task.kind.headline]
            del served
        if accuracy_source is None:
            logits, accuracy_source = predict_logits(model, dev, tokenizer), f"pytorch fp32 ({device})"
    info = machine()
    key = machine_key(info, threads, device)
    entry = {
        "machine": {**info, "threads": threads},
        "runs": runs,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "latency_ms": results,
        "dev": task.scores(logits.numpy(), labels),
        "accuracy_from": accuracy_source,
        **({"accuracy_by_precision": by_precision} if by_precision else {}),
    }
    return variant.record_bench(key, entry)


def bench_in_turn(variants: list[Variant], shapes: list[tuple[int, int]], threads: int | None = BenchConfig.threads,
                  runs: int = BenchConfig.runs, rounds: int = BenchConfig.rounds) -> list[Variant]:
    """Time the ONNX Runtime artifacts of `variants` (each benched already) again on the CPU, in turn: `rounds`
    rounds of `runs` runs each, every variant once per round. Each one's figure replaces its own block's (which
    goes to the bench history), so the speed-ups of one pass compare timings taken side by side, not a slow
    spell of a shared machine against a quiet one. Returns the variants timed."""
    BenchConfig(threads=threads, runs=runs, rounds=rounds)  # checks them as the flags are checked
    threads = threads or torch.get_num_threads()
    key = key_here(threads, "cpu")
    timed = {v.path: v for v in variants if onnx_artifact(v) is not None and key in v.benches}
    if not timed:
        return []
    sessions = {path: runtime.session(onnx_artifact(v), threads=threads, provider=PROVIDERS["cpu"])
                for path, v in timed.items()}
    vocab = min(load_config(path).vocab_size for path in timed)  # ids every artifact's embeddings hold
    for batch, sequence in check_shapes(shapes):
        times = in_turn(sessions, batch, sequence, rounds, runs, vocab_size=vocab)
        for path, variant in timed.items():
            entry = variant.benches[key]
            timing = summary([t for by_round in times[path] for t in by_round])
            variant.record_bench(key, {**{k: entry[k] for k in ("machine", "dev", "accuracy_from")},
                                       "runs": runs, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                       "latency_ms": {"ort-cpu": {f"{batch}x{sequence}": {
                                           **timing, "rounds": rounds, "examples_per_s": round(1000 * batch / timing["p50"], 1),
                                           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}}}})
    return list(timed.values())


class Unmeasurable(UserError):
    """This variant has nothing that runs on the device asked for (the other variants still can)."""


def _why_unmeasurable(variant: Variant, device: str) -> str:
    if variant.record.params.get("backend") == "torch":
        return f"{variant.path}: PyTorch int8 (torch.ao dynamic) runs on the CPU only; bench it with --device cpu"
    if onnx_artifact(variant) is not None:
        return f"{variant.path} is an ONNX artifact and ONNX Runtime has no CUDA provider here: {GPU_EXTRA}"
    return f"{variant.path} has neither an ONNX export nor a PyTorch checkpoint to measure"


def precisions(device: str) -> tuple[str, ...]:
    """The weight precisions PyTorch is timed in: fp32 on the CPU; on a GPU fp16 and (where it has it) bf16 too."""
    if device == "cpu":
        return ("fp32",)
    return ("fp32", "fp16", "bf16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")


def _per_shape(measure, shapes, runs: int) -> dict:
    """Each shape's timing, stamped with its run count and time: a later bench of the same key keeps it."""
    out = {}
    for batch, sequence in shapes:
        timing = measure(batch, sequence)
        out[f"{batch}x{sequence}"] = {**timing, "examples_per_s": round(1000 * batch / timing["p50"], 1), "runs": runs,
                                      "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return out
