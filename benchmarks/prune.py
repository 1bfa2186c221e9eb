"""Benchmark: structured pruning of the 6-layer student; writes results/prune.json.

Through the CLI, for heads and FFN neurons removed together at 25, 50 and 75% (0% is the student
itself), Taylor importance, global scope, then KD recovery for --recover-epochs; and random
importance at 50% as the control. Recorded per variant: dev accuracy before and after recovery,
parameters, and eager PyTorch fp32 latency at batch 1 and 32, sequence 128, measured in this one
process at a fixed thread count, as ratios to the unpruned student measured in the same run.

    python benchmarks/prune.py [--workspace .] [--student students/mpnet-base/sst2/L6-kd]
                               [--recover-epochs 0.05] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from compress.model.checkpoint import load_classifier
from compress.runtime.latency import torch_latency_ms

from common import Results, compress, read_variant

SHAPES = ((1, 128), (32, 128))


def latency(path: Path, threads: int, runs: int) -> dict:
    torch.set_num_threads(threads)
    model = load_classifier(path)
    return {f"{b}x{s}": torch_latency_ms(model, b, s, runs if b == 1 else max(10, runs // 3),
                                         vocab_size=model.config.vocab_size)
            for b, s in SHAPES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--student", type=Path, default=Path("students/mpnet-base/sst2/L6-kd"))
    parser.add_argument("--recover-epochs", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    student = args.workspace / args.student
    results = Results("prune")
    results.data.update(threads=args.threads, recover_epochs=args.recover_epochs, student=str(args.student))
    base = read_variant(student)
    runs = results.data["runs"] = {"0%": {
        "accuracy": base["metrics"]["dev"]["accuracy"], "parameters": base["parameters"], "path": str(student)}}
    plans = [(f"{round(100 * f)}%", f, "taylor") for f in (0.25, 0.5, 0.75)] + [("50%-random", 0.5, "random")]
    for key, fraction, importance in plans:
        name = f"{base['name']}-prune-{key.replace('%', '')}-{importance}"
        command, wall = compress(args.workspace, "prune", student, "--heads", fraction, "--neurons", fraction,
                                 "--importance", importance, "--recover-epochs", args.recover_epochs,
                                 "--name", name, "--force")
        meta = read_variant(student.parent / name)
        runs[key] = {
            "command": command, "importance": importance, "fraction": fraction, "path": str(student.parent / name),
            "accuracy_before_recovery": meta["metrics"]["dev_before_training"]["accuracy"],
            "accuracy": meta["metrics"]["dev"]["accuracy"], "retention": meta["metrics"]["retention"],
            "parameters": meta["parameters"], "heads_per_layer": meta["structure"]["heads_per_layer"],
            "neurons_per_layer": meta["structure"]["neurons_per_layer"], "wall_s": wall,
        }
        results.save()
    # Latency last, all in this one process, one model after another.
    for key, run in runs.items():
        run["latency_ms"] = {"torch-fp32": latency(Path(run["path"]), args.threads, args.runs)}
    reference = runs["0%"]["latency_ms"]["torch-fp32"]
    for run in runs.values():
        own = run["latency_ms"]["torch-fp32"]
        run["speedup"] = {shape: round(reference[shape]["p50"] / own[shape]["p50"], 2) for shape in own}
        run["speedup_baseline"] = "the unpruned student in eager PyTorch fp32, p50, this run"
    results.data["taylor_vs_random_50_points"] = round(100 * (runs["50%"]["accuracy"] - runs["50%-random"]["accuracy"]), 2)
    results.data["taylor_vs_random_50_points_before_recovery"] = round(
        100 * (runs["50%"]["accuracy_before_recovery"] - runs["50%-random"]["accuracy_before_recovery"]), 2)
    results.save()


if __name__ == "__main__":
    main()
