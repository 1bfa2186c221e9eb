"""Benchmark: distillation against the label-only baseline; writes results/distill.json.

  - minilm-l6 (6 layers) -> 3 layers on SST-2, KD and no-KD, from the teacher that
    benchmarks/teacher.py fine-tuned (teachers/minilm-l6/sst2);
  - mpnet-base (12 layers) -> 6 layers on the --mpnet-tasks (MRPC by default; SST-2 takes about
    40 minutes an epoch for the teacher on 2 cores), KD and no-KD.

The KD and no-KD runs go through the same training loop, one after the other, so their epoch
times compare what distillation with cached soft targets costs over plain fine-tuning.

    python benchmarks/distill.py [--workspace .] [--part all|minilm|mpnet] [--mpnet-tasks mrpc,sst2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import Results, compress, read_variant


def student_run(workspace: Path, teacher: str, task: str, layers: int, epochs: int, kd: bool, lr: float,
                reuse: bool = False, previous: dict | None = None) -> dict:
    """One student; a reused one keeps the wall time measured when it was made (in `previous`)."""
    name = f"L{layers}-{'kd' if kd else 'nokd'}"
    made_before = reuse and (workspace / "students" / teacher / task / name).exists()
    command, wall = compress(workspace, "distill", "--teacher", teacher, "--task", task, "--layers", layers,
                             "--epochs", epochs, "--lr", lr, "--name", name, *([] if reuse else ["--force"]),
                             *([] if kd else ["--no-kd"]))
    meta = read_variant(workspace / "students" / teacher / task / name)
    return {
        "command": command,
        "accuracy": meta["metrics"]["dev"]["accuracy"],
        **({"f1": meta["metrics"]["dev"]["f1"]} if "f1" in meta["metrics"]["dev"] else {}),
        "teacher_accuracy": meta["metrics"]["teacher_dev"]["accuracy"],
        "retention": meta["metrics"]["retention"],
        "agreement": meta["metrics"]["dev"]["agreement"],
        "parameters": meta["parameters"],
        "size_mb": meta["size_mb"],
        "epochs": epochs,
        "layer_ids": meta["params"]["layer_ids"],
        "train_runtime_s": meta["train"]["train_runtime_s"],
        "examples_per_s": meta["train"]["examples_per_s"],
        "wall_s": (previous or {}).get("wall_s") if made_before else wall,
    }


REUSE_NOTE = ("KD and no-KD trained in separate runs of a shared 2-core machine, not side by side; "
              "the side-by-side ratio is the minilm pair's")


def pair(results: Results, key: str, workspace: Path, teacher: str, task: str, layers: int, epochs: int, lr: float,
         reuse: bool = False):
    """KD, then no-KD, of the same student; then the gain and the epoch-time ratio.

    With `reuse`, students already in the workspace (made by these same commands) are read, not
    trained again; their epoch times then come from different moments of a shared machine.
    """
    entry = results.data.setdefault(key, {})
    entry["kd"] = student_run(workspace, teacher, task, layers, epochs, kd=True, lr=lr, reuse=reuse,
                              previous=entry.get("kd"))
    results.save()
    entry["nokd"] = student_run(workspace, teacher, task, layers, epochs, kd=False, lr=lr, reuse=reuse,
                                previous=entry.get("nokd"))
    entry["kd_gain_points"] = round(100 * (entry["kd"]["accuracy"] - entry["nokd"]["accuracy"]), 2)
    entry["epoch_time_ratio"] = round(entry["kd"]["train_runtime_s"] / entry["nokd"]["train_runtime_s"], 3)
    if reuse:
        entry["epoch_time_ratio_note"] = REUSE_NOTE
    results.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--part", choices=["all", "minilm", "mpnet"], default="all",
                        help="run only the minilm or the mpnet part; 'mpnet' adds to an existing results file")
    parser.add_argument("--mpnet-tasks", default="mrpc", help="comma-separated tasks for the mpnet part")
    parser.add_argument("--mpnet-epochs", type=int, default=2, help="epochs for the mpnet teacher and its students")
    parser.add_argument("--reuse", action="store_true", help="read students already made, do not train them again")
    args = parser.parse_args()
    ws = args.workspace
    results = Results("distill", extend=args.part == "mpnet")

    if args.part in ("all", "minilm"):
        pair(results, "minilm-l6_to_L3_sst2", ws, "minilm-l6", "sst2", layers=3, epochs=2, lr=5e-5)
    if args.part == "minilm":
        return
    for task in args.mpnet_tasks.split(","):
        # MRPC is small: smaller batches give the teacher more steps.
        made_before = (ws / "teachers" / "mpnet-base" / task).exists()
        command, wall = compress(ws, "teacher", "--base", "mpnet-base", "--task", task, "--epochs", args.mpnet_epochs,
                                 "--lr", 3e-5, "--batch-size", 16 if task == "mrpc" else 32)
        meta = read_variant(ws / "teachers" / "mpnet-base" / task)
        results.data[f"mpnet-base_teacher_{task}"] = {
            "command": command, "accuracy": meta["metrics"]["dev"]["accuracy"],
            **({"f1": meta["metrics"]["dev"]["f1"]} if "f1" in meta["metrics"]["dev"] else {}),
            "train_runtime_s": meta["train"]["train_runtime_s"],
            "wall_s": results.data.get(f"mpnet-base_teacher_{task}", {}).get("wall_s") if made_before else wall,
        }
        results.save()
        pair(results, f"mpnet-base_to_L6_{task}", ws, "mpnet-base", task, layers=6, epochs=args.mpnet_epochs, lr=5e-5,
             reuse=args.reuse)


if __name__ == "__main__":
    main()
