"""Benchmark: regression, the second task kind, on GLUE STS-B; writes results/stsb.json.

The minilm-l6 teacher (6 layers, from its PyPI package) fine-tuned on STS-B, a 3-layer KD student
(MSE to the teacher's prediction mixed with MSE to the score), both exported to ONNX and benched
side by side in one pass (batch 1 x 128, 2 threads): Spearman (the main metric) and Pearson of each
on the whole dev split, the student's Spearman retention, ORT latency and the speed-up. Epochs are
modest (the base, all-MiniLM-L6-v2, was trained for sentence similarity already), so that it runs
in about half an hour on a busy 2-core CPU.

    python benchmarks/stsb.py [--workspace /work/ws-stsb] [--teacher-epochs 4] [--student-epochs 3]
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from common import Results, compress, read_variant

SHAPE, THREADS = "1x128", 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("/work/ws-stsb"))
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--measure-only", action="store_true",
                        help="Export and bench the teacher and student an earlier run trained (its commands are "
                             "recorded as they ran)")
    args = parser.parse_args()
    workspace = args.workspace
    results = Results("stsb")
    settings = results.data["settings"] = {
        "teacher": {"base": "minilm-l6", "epochs": args.teacher_epochs, "lr": args.teacher_lr, "batch_size": 32, "max_length": 128},
        "student": {"layers": 3, "epochs": args.student_epochs, "lr": 1e-4, "alpha": 0.5,
                    "kd": "alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, score); no temperature"},
        "bench": {"shape": SHAPE, "threads": THREADS, "runtime": "ort-cpu", "runs": 30},
    }
    commands = results.data["commands"] = []
    teacher_dir = workspace / "teachers" / "minilm-l6" / "stsb"
    student_dir = workspace / "students" / "minilm-l6" / "stsb" / "L3-kd"
    walls = {}
    training = {"teacher": ("teacher", "--base", "minilm-l6", "--task", "stsb", "--epochs", settings["teacher"]["epochs"],
                            "--lr", settings["teacher"]["lr"], "--force"),
                "student": ("distill", "--teacher", "minilm-l6", "--task", "stsb", "--layers", 3, "--epochs",
                            settings["student"]["epochs"], "--lr", settings["student"]["lr"], "--alpha",
                            settings["student"]["alpha"], "--force")}
    for role, args_of_role in training.items():
        if args.measure_only:  # trained before: the command as it ran, its wall time from the variant's record
            commands.append(shlex.join(["compress", "--workspace", str(workspace), *map(str, args_of_role)]))
            continue
        command, walls[role] = compress(workspace, *args_of_role)
        commands.append(command)
        results.save()
    for folder in (teacher_dir, student_dir):
        command, walls[f"export {folder.name}"] = compress(workspace, "export", folder)
        commands.append(command)
    command, walls["bench"] = compress(workspace, "bench", teacher_dir, student_dir, "--shapes", SHAPE,
                                       "--threads", THREADS)
    commands.append(command)

    figures = {}
    for role, folder in (("teacher", teacher_dir), ("student", student_dir)):
        meta = read_variant(folder)
        (bench_file,) = (folder / "bench").glob("*.json")
        entry = json.loads(bench_file.read_text())
        timing = entry["latency_ms"]["ort-cpu"][SHAPE]
        figures[role] = {
            "spearman": entry["dev"]["spearman"], "pearson": entry["dev"]["pearson"],
            "metrics_from": entry["accuracy_from"],
            "spearman_pytorch": meta["metrics"]["dev"]["spearman"], "pearson_pytorch": meta["metrics"]["dev"]["pearson"],
            "latency_ms": {"p50": timing["p50"], "p90": timing["p90"]},
            "parameters": meta["parameters"], "size_mb": json.loads((folder / "onnx" / "export.json").read_text())[
                "size_mb"],
            "train_wall_s": meta["train"]["wall_s"],
            **({"teacher_pearson": meta["metrics"]["dev"]["teacher_pearson"]} if role == "student" else {}),
        }
    results.data["teacher"], results.data["student"] = figures["teacher"], figures["student"]
    results.data["retention"] = round(figures["student"]["spearman"] / figures["teacher"]["spearman"], 4)
    results.data["retention_of"] = "Spearman on STS-B dev (1,500 pairs), each from its ONNX artifact"
    results.data["speedup"] = round(figures["teacher"]["latency_ms"]["p50"] / figures["student"]["latency_ms"]["p50"], 2)
    results.data["speedup_baseline"] = f"the teacher's ORT fp32 p50 at {SHAPE}, {THREADS} threads, same bench pass"
    results.data["wall_s"] = walls
    if args.measure_only:
        results.data["trained_by"] = "an earlier run of this script with the same settings (its first two commands)"
    results.save()
    print(json.dumps({k: results.data[k] for k in ("retention", "speedup")}, indent=2))


if __name__ == "__main__":
    main()
