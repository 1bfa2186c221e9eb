"""Benchmark: one process against two (torchrun, gloo, loopback) for a small distillation; results/distributed.json.

The minilm-l6 teacher on rotten-tomatoes (made by `compress run`, the demo) distilled into 3 layers
for one epoch, with the same effective batch: 1 process x 32 against 2 processes x 16, each
process given half of the machine's cores. This 2-core machine shows correctness and the scaling
path, not a speed-up.

    python benchmarks/distributed.py [--workspace .]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from common import Results, read_variant


def run(workspace: Path, processes: int) -> dict:
    name = f"L3-kd-{processes}proc"
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
              if processes > 1 else [sys.executable])
    command = [*launch, "-m", "compress", "--workspace", str(workspace), "distill", "--teacher", "minilm-l6",
               "--task", "rotten-tomatoes", "--layers", "3", "--epochs", "1", "--batch-size", str(32 // processes),
               "--name", name, "--force"]
    threads = max(1, (os.cpu_count() or 2) // processes)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    meta = read_variant(workspace / "students" / "minilm-l6" / "rotten-tomatoes" / name)
    return {"command": " ".join(command), "processes": processes, "threads_per_process": threads,
            "accuracy": meta["metrics"]["dev"]["accuracy"], "examples_per_s": meta["train"]["examples_per_s"],
            "train_runtime_s": meta["train"]["train_runtime_s"], "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    args = parser.parse_args()
    results = Results("distributed")
    one, two = run(args.workspace, 1), run(args.workspace, 2)
    results.data.update(runs={"1": one, "2": two}, speedup=round(two["examples_per_s"] / one["examples_per_s"], 2),
                        speedup_baseline="1 process, same effective batch, training examples/s, this run",
                        accuracy_delta_points=round(100 * (two["accuracy"] - one["accuracy"]), 2))
    results.save()


if __name__ == "__main__":
    main()
