"""Benchmark: what TinyBERT-class distillation and QAT buy; writes results/distill-quality.json.

Each row is one 6-layer student of the 12-layer MPNet teacher (fine-tuned as benchmarks/distill.py
does), trained by the same command but for the options under test, one after the other on the
same machine, so their per-epoch times compare what each option costs over plain logit KD:

    logit-kd        soft targets only (the committed baseline)
    intermediate    + hidden-state and attention losses (TinyBERT's), the teacher running live
    two-phase       the intermediate losses alone first, then the logits (TinyBERT's schedule)
    augment         intermediate + --augment N (words swapped for embedding neighbours)

The `int8` rows quantize a row's student with ORT dynamic int8, as is and after one epoch of
quantization-aware KD (`quantize --qat-epochs 1`), accuracy measured on the int8 artifact.

    python benchmarks/distill_quality.py --task mrpc --rows logit-kd,intermediate [--seed 42] [--workspace .]
    python benchmarks/distill_quality.py --task mrpc --int8 logit-kd
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import Results, compress, read_variant

TEACHER = "mpnet-base"
INTERMEDIATE = ("--intermediate", "hidden,attention")
ROWS = {  # row -> distill flags beyond the shared ones
    "logit-kd": (),
    "intermediate": INTERMEDIATE,
    "two-phase": (*INTERMEDIATE, "--intermediate-epochs", 2),
    "augment": (*INTERMEDIATE, "--augment", 2),
}
# benchmarks/distill.py's settings (an existing teacher is read, not trained again)
SHARED = {"mrpc": ("--layers", 6, "--epochs", 2, "--lr", 5e-5)}
TEACHER_FLAGS = {"mrpc": ("--epochs", 2, "--lr", 3e-5, "--batch-size", 16)}


def student_row(ws: Path, task: str, row: str, seed: int) -> dict:
    name = f"L6-{row}-s{seed}"
    command, wall = compress(ws, "distill", "--teacher", TEACHER, "--task", task, *SHARED[task], "--seed", seed,
                             *ROWS[row], "--name", name)
    meta = read_variant(ws / "students" / TEACHER / task / name)
    dev, train = meta["metrics"]["dev"], meta["train"]
    epochs = meta["params"]["epochs"] + meta["params"].get("intermediate_epochs", 0)
    return {
        "command": command, "variant": name, "seed": seed,
        "accuracy": dev["accuracy"], **({"f1": dev["f1"]} if "f1" in dev else {}),
        "teacher_accuracy": meta["metrics"]["teacher_dev"]["accuracy"], "retention": meta["metrics"]["retention"],
        "agreement": dev["agreement"], "history": meta["metrics"]["history"],
        **({"augmentation": meta["augmentation"]} if "augmentation" in meta else {}),
        "train_wall_s": train["wall_s"], "seconds_per_epoch": round(train["wall_s"] / epochs, 1),
        "step_examples_per_s": train["step_examples_per_s"], "wall_s": wall,
    }


def int8_row(ws: Path, task: str, row: str, seed: int) -> dict:
    """The student of `row` in ORT dynamic int8, as is and after one epoch of QAT."""
    student = ws / "students" / TEACHER / task / f"L6-{row}-s{seed}"
    fp32 = read_variant(student)["metrics"]["dev"]["accuracy"]
    out = {"fp32_accuracy": fp32}
    for kind, flags in (("plain", ()), ("qat", ("--qat-epochs", 1))):
        command, wall = compress(ws, "quantize", student, *flags)
        name = f"{student.name}{'-qat' if flags else ''}-int8-dynamic"
        meta = read_variant(student.parent / name)
        accuracy = meta["metrics"]["dev"]["accuracy"]
        out[kind] = {"command": command, "variant": name, "accuracy": accuracy,
                     "drop_points": round(100 * (fp32 - accuracy), 2), "size_mb": meta["size_mb"], "wall_s": wall}
        if flags:
            qat = read_variant(student.parent / f"{student.name}-qat")
            out[kind]["qat_fp32_accuracy"] = qat["metrics"]["dev"]["accuracy"]
            out[kind]["qat_train_wall_s"] = qat["train"]["wall_s"]
    return out


RETENTION_TARGET, INT8_DROP_TARGET = 0.97, 0.5  # ../shared/design.md


def targets(result: dict) -> dict:
    """Where one task's rows stand against the design's targets, and by how much they miss."""
    out = {}
    rows = result.get("rows", {})
    if rows:
        best = max(rows, key=lambda k: rows[k]["retention"])
        value = rows[best]["retention"]
        out["student_retention"] = {"target": RETENTION_TARGET, "best_row": best, "value": round(value, 4),
                                    "met": value >= RETENTION_TARGET,
                                    "missed_by": round(max(0.0, RETENTION_TARGET - value), 4)}
    for key, row in result.get("int8", {}).items():
        # QAT is also one more epoch of KD: against its own fp32 weights the int8 artifact may lose more
        drop, own = row["qat"]["drop_points"], round(100 * (row["qat"]["qat_fp32_accuracy"] - row["qat"]["accuracy"]), 2)
        out[f"int8_drop_points {key}"] = {
            "target": INT8_DROP_TARGET, "plain": row["plain"]["drop_points"], "qat": drop,
            "qat_against_its_own_fp32_weights": own, "met": drop <= INT8_DROP_TARGET,
            "missed_by": round(max(0.0, drop - INT8_DROP_TARGET), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--task", default="mrpc", choices=sorted(SHARED))
    parser.add_argument("--rows", default="", help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--int8", default="", help="comma-separated rows whose students to quantize, plain and QAT")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    results = Results("distill-quality", extend=True)
    command, _ = compress(args.workspace, "teacher", "--base", TEACHER, "--task", args.task, *TEACHER_FLAGS[args.task])
    teacher = read_variant(args.workspace / "teachers" / TEACHER / args.task)
    results.data.setdefault(args.task, {})["teacher"] = {
        "command": command, "accuracy": teacher["metrics"]["dev"]["accuracy"],
        "f1": teacher["metrics"]["dev"].get("f1"), "train_wall_s": teacher["train"]["wall_s"]}
    rows = results.data[args.task].setdefault("rows", {})
    for row in filter(None, args.rows.split(",")):
        rows[f"{row}/seed{args.seed}"] = student_row(args.workspace, args.task, row, args.seed)
        baseline = rows.get(f"logit-kd/seed{args.seed}")
        if baseline:
            for entry in rows.values():
                if entry["seed"] == args.seed:
                    entry["epoch_time_ratio_to_logit_kd"] = round(
                        entry["seconds_per_epoch"] / baseline["seconds_per_epoch"], 2)
        results.save()
    for row in filter(None, args.int8.split(",")):
        results.data[args.task].setdefault("int8", {})[f"{row}/seed{args.seed}"] = int8_row(
            args.workspace, args.task, row, args.seed)
        results.save()
    results.data[args.task]["targets"] = targets(results.data[args.task])
    results.save()


if __name__ == "__main__":
    main()
