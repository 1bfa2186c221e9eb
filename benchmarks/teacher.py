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
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compress.machine import machine  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "teacher.json"


def run(workspace: Path, base: str, name: str, epochs: int, precision: str) -> dict:
    command = ["compress", "--workspace", str(workspace), "teacher", "--base", base, "--task", "sst2",
               "--name", name, "--epochs", str(epochs), "--precision", precision, "--force"]
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    meta = json.loads((workspace / "teachers" / name / "sst2" / "variant.json").read_text())
    return {
        "command": shlex.join(command),
        "base": base,
        "epochs": epochs,
        "precision": precision,
        "accuracy": meta["metrics"]["dev"]["accuracy"],
        "history": meta["metrics"]["history"],
        "examples_per_s": meta["train"]["examples_per_s"],
        "train_runtime_s": meta["train"]["train_runtime_s"],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--mpnet", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("COMPRESS_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))

    results = {"machine": machine(), "command": shlex.join(["python", *sys.argv]), "runs": {}}

    def save():
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    runs = results["runs"]
    runs["minilm-l6"] = run(args.workspace, "minilm-l6", "minilm-l6", 3, "bf16")
    save()
    runs["minilm-l6-fp32-1ep"] = run(args.workspace, "minilm-l6", "minilm-l6-fp32-1ep", 1, "fp32")
    save()
    runs["minilm-l6-bf16-1ep"] = run(args.workspace, "minilm-l6", "minilm-l6-bf16-1ep", 1, "bf16")
    fp32, bf16 = runs["minilm-l6-fp32-1ep"], runs["minilm-l6-bf16-1ep"]
    results["precision_ab"] = {
        "speedup": round(bf16["examples_per_s"] / fp32["examples_per_s"], 2),
        "speedup_baseline": "fp32 training examples/s, same model, data, seed and schedule, 1 epoch",
        "accuracy_fp32": fp32["accuracy"],
        "accuracy_bf16": bf16["accuracy"],
        "accuracy_delta_points": round(100 * (bf16["accuracy"] - fp32["accuracy"]), 2),
    }
    save()
    if args.mpnet:
        runs["mpnet-base"] = run(args.workspace, "mpnet-base", "mpnet-base", 2, "bf16")
        save()
    print(json.dumps(results.get("precision_ab"), indent=2))


if __name__ == "__main__":
    main()
