"""Benchmark: ONNX fp32 against int8 (dynamic, with FFN outputs in fp32, per-channel, static) and PyTorch int8.

For each variant (default: the minilm-l6 SST-2 teacher from benchmarks/teacher.py and its 3-layer
KD student from benchmarks/distill.py), through the CLI: export, then quantize each way. Then, in
this one process and with a fixed thread count, latency at batch 1 and 32, sequence 128, for every
artifact, as ratios to the same model's ORT fp32 measured in this run. results/quantize.json.

    python benchmarks/quantize.py [--workspace .] [--threads 2] [VARIANT ...]

The committed results add the 6-layer MPNet students of the headline (SST-2: KD, and pruned 50%;
MRPC: KD), copied into a scratch workspace so the headline's own artifacts stay as they were measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from compress.model.checkpoint import load_classifier
from compress.runtime import ort as runtime
from compress.runtime.artifacts import torch_int8
from compress.runtime.latency import ort_latency_ms, torch_latency_ms
from compress.variant import Variant, derived_dir

from common import Results, compress, read_variant

SHAPES = ((1, 128), (32, 128))
KINDS = {  # suffix of the quantized variant -> extra quantize flags
    "int8-dynamic": [],
    "int8-dynamic-ffn-fp32": ["--fp32-ffn-output"],
    "int8-dynamic-pc": ["--per-channel"],
    "int8-static": ["--mode", "static", "--calibration", "256"],
    "torch-int8": ["--backend", "torch"],
}


def latencies(measure, runs: int) -> dict:
    return {f"{b}x{s}": measure(b, s, runs if b == 1 else max(10, runs // 3)) for b, s in SHAPES}


def bench_variant(results: Results, workspace: Path, path: Path, threads: int, runs: int) -> None:
    command, _ = compress(workspace, "export", path)
    parent, export = read_variant(path), Variant.load(path).export
    lineage = [parent.get("teacher", parent["name"]), parent["task"]] + ([parent["name"]] if "teacher" in parent else [])
    entry = results.data.setdefault("variants", {}).setdefault("/".join(lineage), {})  # mpnet-base/sst2/L6-kd
    vocab = load_classifier(path).config.vocab_size
    fp32 = runtime.session(path / "onnx" / "model.onnx", threads=threads)
    entry["ort-fp32"] = {
        "command": command, "accuracy": parent["metrics"]["dev"]["accuracy"], "size_mb": export["size_mb"],
        "optimized_graph": export["optimized"],
        "latency_ms": latencies(lambda b, s, r: ort_latency_ms(fp32, b, s, r, vocab_size=vocab), runs),
    }
    torch.set_num_threads(threads)
    model = load_classifier(path)
    inputs = export["inputs"]
    entry["torch-fp32"] = {
        "accuracy": parent["metrics"]["dev"]["accuracy"], "size_mb": parent["size_mb"],
        "latency_ms": latencies(lambda b, s, r: torch_latency_ms(model, b, s, r, vocab_size=vocab,
                                                                 input_names=inputs), runs),
    }
    results.save()
    for kind, flags in KINDS.items():
        command, _ = compress(workspace, "quantize", path, *flags, "--name", f"{parent['name']}-{kind}", "--force")
        quantized_dir = derived_dir(Variant.load(path), f"{parent['name']}-{kind}")
        meta = read_variant(quantized_dir)
        if kind == "torch-int8":
            quantized = torch_int8(model)
            measure = lambda b, s, r: torch_latency_ms(quantized, b, s, r, vocab_size=vocab, input_names=inputs)  # noqa: E731
        else:
            sess = runtime.session(quantized_dir / meta["artifact"], threads=threads)
            measure = lambda b, s, r: ort_latency_ms(sess, b, s, r, vocab_size=vocab)  # noqa: E731
        entry[kind] = {"command": command, "accuracy": meta["metrics"]["dev"]["accuracy"],
                       "drop_points": meta["metrics"]["drop_points"], "size_mb": meta["size_mb"],
                       "size_ratio": meta["size_ratio"], "latency_ms": latencies(measure, runs)}
        results.save()
    base = entry["ort-fp32"]["latency_ms"]
    for kind, row in entry.items():
        row["speedup"] = {shape: round(base[shape]["p50"] / row["latency_ms"][shape]["p50"], 2) for shape in base}
        row["speedup_baseline"] = "ORT fp32 of the same variant, p50, this run"
    results.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="*", type=Path)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    variants = args.variants or [args.workspace / "teachers" / "minilm-l6" / "sst2",
                                 args.workspace / "students" / "minilm-l6" / "sst2" / "L3-kd"]
    results = Results("quantize")
    results.data["threads"] = args.threads
    for path in variants:
        bench_variant(results, args.workspace, path, args.threads, args.runs)


if __name__ == "__main__":
    main()
