"""Benchmark: LayerDrop and cross-layer sharing of the 6-layer student; writes results/layerdrop_share.json.

  - LayerDrop: distil the student with LayerDrop (--rate) for --epochs, keep 3 layers (every other),
    against the baseline: the same 3 layers cut from the student and recovered by KD for the same epochs.
  - Sharing: G = 1, 2, 3 groups, tying all parameters or the attention only, each recovered by KD for
    --recover-epochs: accuracy, parameters, unique parameters and checkpoint size.

    python benchmarks/layerdrop_share.py [--workspace .] [--student students/mpnet-base/sst2/L6-kd]
        [--rate 0.5] [--epochs 0.25] [--recover-epochs 0.05] [--part all|layerdrop|share] [--reuse]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import Results, compress, read_variant


def summary(meta: dict) -> dict:
    metrics = meta["metrics"]
    return {
        "accuracy": metrics["dev"]["accuracy"], "retention": metrics["retention"],
        **({"accuracy_before_recovery": metrics["dev_before_training"]["accuracy"]}
           if "dev_before_training" in metrics else {}),
        "parameters": meta["parameters"], "unique_parameters": meta["unique_parameters"], "size_mb": meta["size_mb"],
        **({"train_runtime_s": meta["train"]["train_runtime_s"]} if "train" in meta else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--student", type=Path, default=Path("students/mpnet-base/sst2/L6-kd"))
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--epochs", type=float, default=0.25)
    parser.add_argument("--recover-epochs", type=float, default=0.05)
    parser.add_argument("--part", choices=["all", "layerdrop", "share"], default="all")
    parser.add_argument("--reuse", action="store_true",
                        help="read variants already made by these commands (e.g. by the headline recipe)")
    args = parser.parse_args()
    student = args.workspace / args.student
    base = read_variant(student)
    results = Results("layerdrop_share", extend=args.part != "all")
    results.data["student"] = {"path": str(args.student), **summary(base)}
    force = [] if args.reuse else ["--force"]

    if args.part in ("all", "layerdrop"):
        name = f"{base['name']}-ld{round(100 * args.rate)}-keep-every-other"
        command, wall = compress(args.workspace, "layerdrop", student, "--rate", args.rate, "--keep", "every-other",
                                 "--epochs", args.epochs, "--name", name, *force)
        full = read_variant(student.parent / f"{base['name']}-ld{round(100 * args.rate)}-full")
        cut, baseline = read_variant(student.parent / name), read_variant(student.parent / f"{name}-baseline")
        results.data["layerdrop"] = {
            "command": command, "rate": args.rate, "epochs": args.epochs, "kept_layers": cut["params"]["kept_layers"],
            "full_depth_after_layerdrop": summary(full), "kept_with_layerdrop": summary(cut),
            "kept_without_layerdrop_recovered": summary(baseline),
            "gain_points": round(100 * (cut["metrics"]["dev"]["accuracy"] - baseline["metrics"]["dev"]["accuracy"]), 2),
            "wall_s": wall,
        }
        results.save()

    if args.part in ("all", "share"):
        shares = results.data.setdefault("share", {})
        for what in ("attention", "all"):
            for groups in (3, 2, 1):
                name = f"{base['name']}-share-g{groups}-{what}"
                command, wall = compress(args.workspace, "share", student, "--groups", groups, "--what", what,
                                         "--recover-epochs", args.recover_epochs, "--name", name, *force)
                shares[f"G{groups}-{what}"] = {"command": command, "groups": groups, "what": what,
                                               **summary(read_variant(student.parent / name)), "wall_s": wall}
                results.save()


if __name__ == "__main__":
    main()
