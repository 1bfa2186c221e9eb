"""Benchmark: fine-tune teachers on all of SST-2 through the CLI; writes results/teacher.json.

Runs, in one go on one machine:
  - the kept teacher: minilm-l6, 3 epochs, bf16 autocast (the default precision here);
  - the precision A/B: the same model for 1 epoch in fp32 and in bf16, same seed and schedule,
    so accuracy and examples/s compare like for like;
  - optionally mpnet-base (--mpnet), which takes about 40 minutes an epoch on 2 cores.

    python benchmarks/teacher.py [--workspace .] [--mpnet]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import Results, compress, read_variant


def run(workspace: Path, base: str, name: str, epochs: int, precision: str) -> dict:
    command, wall = compress(workspace, "teacher", "--base", base, "--task", "sst2", "--name", name,
                             "--epochs", epochs, "--precision", precision, "--force")
    meta = read_variant(workspace / "teachers" / name / "sst2")
    return {
        "command": command,
        "base": base,
        "epochs": epochs,
        "precision": precision,
        "accuracy": meta["metrics"]["dev"]["accuracy"],
        "history": meta["metrics"]["history"],
        "examples_per_s": meta["train"]["examples_per_s"],
        "train_runtime_s": meta["train"]["train_runtime_s"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--mpnet", action="store_true")
    args = parser.parse_args()
    results = Results("teacher")
    runs = results.data["runs"] = {}

    runs["minilm-l6"] = run(args.workspace, "minilm-l6", "minilm-l6", 3, "bf16")
    results.save()
    runs["minilm-l6-fp32-1ep"] = run(args.workspace, "minilm-l6", "minilm-l6-fp32-1ep", 1, "fp32")
    results.save()
    runs["minilm-l6-bf16-1ep"] = run(args.workspace, "minilm-l6", "minilm-l6-bf16-1ep", 1, "bf16")
    fp32, bf16 = runs["minilm-l6-fp32-1ep"], runs["minilm-l6-bf16-1ep"]
    results.data["precision_ab"] = {
        "speedup": round(bf16["examples_per_s"] / fp32["examples_per_s"], 2),
        "speedup_baseline": "fp32 training examples/s, same model, data, seed and schedule, 1 epoch",
        "accuracy_fp32": fp32["accuracy"],
        "accuracy_bf16": bf16["accuracy"],
        "accuracy_delta_points": round(100 * (bf16["accuracy"] - fp32["accuracy"]), 2),
    }
    results.save()
    if args.mpnet:
        runs["mpnet-base"] = run(args.workspace, "mpnet-base", "mpnet-base", 2, "bf16")
        results.save()
    print(json.dumps(results.data["precision_ab"], indent=2))


if __name__ == "__main__":
    main()
