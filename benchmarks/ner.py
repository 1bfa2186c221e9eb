"""Benchmark: token classification (NER), the fourth task kind, on WNUT-17; writes results/ner.json.

The minilm-l6 teacher (6 layers, from its PyPI package) fine-tuned on WNUT-17 (emerging entities,
BIO tags of six types, ../shared/data/wnut17), its 3-layer KD student (per-token KD at temperature T
on each word's first subword; by default as the small-data preset distils, with the hidden-state and
attention losses and two augmented copies of every sentence, entity words kept), that student pruned by
half over three rounds (heads and FFN neurons, KD recovery inheriting the student's KD) and quantized to
ORT dynamic int8; where dynamic int8 costs more than 1 entity-F1 point against the pruned
fp32 graph, one epoch of QAT first and its int8 instead. Every variant is exported and benched in one
pass (batch 1 x 128, 2 threads); entity F1 on the whole dev split (1,009 sentences) is scored on each
variant's ONNX artifact. Targets (issue 34): the pruned int8 student at >= 0.95 of the teacher's F1
and >= 4x its speed.

    python benchmarks/ner.py [--workspace /work/ws-ner] [--teacher-epochs 6] [--teacher-lr 1e-4] [--student-epochs 6]
        [--intermediate hidden,attention] [--augment 2] [--prune-steps 3]
    python benchmarks/ner.py --base TINY_MODEL_DIR --teacher-epochs 1 --student-epochs 1 --results ner-dry-run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import QAT_IF_DROP_OVER, ROOT, Results, chain_figures, student_chain

SHAPE, THREADS = "1x128", 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("/work/ws-ner"))
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--student-epochs", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--intermediate", default="hidden,attention",
                        help="the student's intermediate losses, inherited by the pruned variant's recovery ('' for none)")
    parser.add_argument("--augment", type=int, default=2, help="augmented copies of each training sentence (0: none)")
    parser.add_argument("--prune-steps", type=int, default=3, help="rounds of gradual pruning (1: one shot)")
    parser.add_argument("--results", default="ner", help="results/<name>.json")
    args = parser.parse_args()
    task = ("--task", "wnut17", "--data-dir", args.data_dir)
    results = Results(args.results)
    settings = results.data["settings"] = {
        "teacher": {"base": args.base, "epochs": args.teacher_epochs, "lr": args.teacher_lr, "batch_size": 32,
                    "max_length": args.max_length},
        "student": {"layers": 3, "epochs": args.student_epochs, "lr": 1e-4, "temperature": 2.0, "alpha": 0.5,
                    "kd": "alpha * T^2 * KL + (1 - alpha) * CE, per token on each word's first subword",
                    "intermediate": args.intermediate, "augment": args.augment},
        "prune": {"heads": 0.5, "neurons": 0.5, "recover_epochs": 2, "steps": args.prune_steps},
        "quantize": {"mode": "dynamic", "qat_if_drop_over_points": QAT_IF_DROP_OVER, "qat_epochs": 1},
        "bench": {"shape": SHAPE, "threads": THREADS, "runtime": "ort-cpu", "runs": 30},
    }
    name = Path(args.base).name if Path(args.base).exists() else args.base
    variants = student_chain(results, args.workspace, name, task, settings, SHAPE, THREADS)
    retention = chain_figures(results, variants, ("entity_f1", "entity_precision", "entity_recall"), SHAPE, THREADS)
    results.data["retention_of"] = "entity F1 on WNUT-17 dev (1,009 sentences), each from its ONNX artifact"
    results.data["targets"] = {"int8_retention": 0.95, "int8_speedup": 4.0,
                               "met": (retention["int8"] or 0) >= 0.95 and results.data["speedup"]["int8"] >= 4}
    results.save()
    print(json.dumps({k: results.data[k] for k in ("retention", "speedup", "targets")}, indent=2))


if __name__ == "__main__":
    main()
