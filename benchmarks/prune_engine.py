"""Benchmark: the pruning engine, torch-pruning's dependency graph against the hand slicing it replaced.

The same student, scoring batches, importance and seed go through `apply_pruning` of this tree
and of the last commit before torch-pruning (checked out into a temporary git worktree), each in a
fresh process, alternating, `--repeats` times. Recorded under "engine" in results/prune.json: the
kept heads and neurons of each (must be equal), the largest logit difference on the dev set, dev
accuracy before recovery, parameters, the time to prune (scoring + removal) as medians and their
ratio, and eager PyTorch fp32 latency at 1x128 of both pruned models, measured in this process.

    python benchmarks/prune_engine.py --student WS/students/T/TASK/NAME [--fraction 0.5] [--old 6288da0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from compress.machine import machine
from compress.model.checkpoint import load_classifier
from compress.runtime.latency import torch_latency_ms

from common import Results

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process whose PYTHONPATH is one tree or the other: prune, time, save what it made.
CHILD = r"""
import json, sys, time, torch
from pathlib import Path
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.configs import PruneConfig
from compress.data.batches import encode
from compress.runtime.inference import predict_logits
from compress.stages.prune import apply_pruning, current_structure, scoring_batches
from compress.data.tasks import task_of
from compress.variant import Variant

student, fraction, importance, out = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
variant = Variant.load(student)
task, tokenizer = task_of(variant.record), load_tokenizer(student)
max_length = variant.record.params["max_length"]
config = PruneConfig(heads=fraction, neurons=fraction, importance=importance)
batches = scoring_batches(task, tokenizer, max_length, config.score_examples, seed=42)
model = load_classifier(student)
start = time.perf_counter()
removed = apply_pruning(model, current_structure(model), config, batches, seed=42)
seconds = time.perf_counter() - start
dev = encode(task.dev, tokenizer, max_length)
logits = predict_logits(model, dev, tokenizer)
structure = model.config.compress_structure
torch.save({"logits": logits, "state": model.state_dict()}, out / "pruned.pt")
model.save_pretrained(out / "model")
json.dump({"seconds": seconds, "removed": removed, "heads": structure["heads"], "neurons": structure["neurons"],
           "accuracy": float((logits.argmax(-1) == torch.tensor(dev["label"])).float().mean()),
           "parameters": sum(p.numel() for p in model.parameters())}, open(out / "run.json", "w"))
"""


def run(tree: Path, args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", CHILD, str(args.student), str(args.fraction), args.importance, str(out),
                    str(args.threads)], env=env, check=True, cwd=tree)
    return json.loads((out / "run.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--importance", default="taylor")
    parser.add_argument("--old", default="6288da0", help="the last commit that sliced by hand")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.student = args.student.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old_tree), args.old], check=True)
        try:
            runs = {"hand slicing": [], "torch-pruning": []}
            for r in range(args.repeats):
                for engine, tree in (("hand slicing", old_tree), ("torch-pruning", ROOT)):
                    runs[engine].append(run(tree, args, Path(tmp) / f"{engine}-{r}"))
            old, new = (torch.load(Path(tmp) / f"{e}-0" / "pruned.pt") for e in runs)
            torch.set_num_threads(args.threads)
            models = {e: load_classifier(Path(tmp) / f"{e}-0" / "model") for e in runs}
            latency = {}
            for _ in range(2):  # alternate, so drift on a shared machine hits both
                for engine, model in models.items():
                    latency.setdefault(engine, []).append(torch_latency_ms(model, 1, 128, 30,
                                                                           vocab_size=model.config.vocab_size))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    first = {e: r[0] for e, r in runs.items()}
    seconds = {e: statistics.median(x["seconds"] for x in r) for e, r in runs.items()}
    results = Results("prune", extend=True)
    results.data["engine"] = {
        "machine": machine(), "command": "python " + " ".join(sys.argv), "student": str(args.student), "old_commit": args.old,
        "fraction": args.fraction, "importance": args.importance, "threads": args.threads,
        "same_kept_heads": first["hand slicing"]["heads"] == first["torch-pruning"]["heads"],
        "same_kept_neurons": first["hand slicing"]["neurons"] == first["torch-pruning"]["neurons"],
        "same_state_dict": old["state"].keys() == new["state"].keys()
        and all(torch.equal(old["state"][k], new["state"][k]) for k in old["state"]),
        "max_abs_logit_difference": float((old["logits"] - new["logits"]).abs().max()),
        "per_engine": {e: {"accuracy_before_recovery": first[e]["accuracy"], "parameters": first[e]["parameters"],
                           "removed": first[e]["removed"], "prune_seconds": [round(x["seconds"], 2) for x in r],
                           "prune_seconds_median": round(seconds[e], 2),
                           "latency_ms": {"torch-fp32": {"1x128": min(latency[e], key=lambda t: t["p50"])}}}
                       for e, r in runs.items()},
        "prune_time_ratio_new_to_old": round(seconds["torch-pruning"] / seconds["hand slicing"], 3),
    }
    results.save()
    print(json.dumps({k: v for k, v in results.data["engine"].items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
