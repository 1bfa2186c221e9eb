"""`compress search` against the hand-made headline variants, on one machine in one run; results/search-<task>.json.

    COMPRESS_DATA=../shared/data/glue python benchmarks/search.py --workspace WS [--task mrpc]

1. The hand-made variants that can meet the budgets (search-handmade-<task>.toml: the headline's
   6-layer student pruned 50% or cut to 3 layers, fp32 and int8) are made by `compress run`, on
   the workspace's teacher, and benched at 1x128.
2. Budgets: the p50 of L6-kd-prune-50-taylor-int8-dynamic, and half of it, each hand-made artifact
   timed in turn with the others over the rounds the search times its trials in (a single block
   caught in a slow spell of the second core once set the budget 1.5x too high).
3. `compress search` at each budget with the headline's training schedule (its 6-layer student's
   epochs and learning rate, the budget-setting variant's recovery), then: predicted against
   measured latency for every trained candidate, the winner against the best hand-made variant
   under the same budget (accuracy and training seconds), how well the proxy ranked the trained
   candidates, wall times.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import tomllib
from pathlib import Path

from compress.model.checkpoint import load_config
from compress.pipeline.search import ROUNDS, label, train_seconds
from compress.runtime import ort as runtime
from compress.runtime.export import MODEL
from compress.runtime.latency import alternating
from compress.stages.bench import key_here, parse_shapes
from compress.variant import Variant
from compress.workspace import ONNX_DIR

from common import Results, compress

BUDGET_FROM = "L6-kd-prune-50-taylor-int8-dynamic"
SHAPE, THREADS, RUNS = "1x128", 2, 30
# A coarser grid than the default (24 shapes, not 45: no 8-layer students, no quarter of the heads), to fit the
# benchmark into one 2-core session
GRID = ("--depths", "2,3,4,6", "--keep-heads", "1,0.5", "--keep-ffn", "1,0.5,0.25")


def schedule(recipe: dict) -> tuple[str, ...]:
    """The trials' training: the headline's for its 6-layer student and for the variant that sets the budget."""
    stages = {stage["name"]: stage for stage in recipe["stages"]}
    student, pruned = stages["L6-kd"], stages[stages[BUDGET_FROM]["from"]]
    return ("--epochs", str(student["epochs"]), "--lr", str(student["lr"]),
            "--recover-epochs", str(pruned["recover-epochs"]))


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    norm = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return round(cov / norm, 3) if norm else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--budgets", default="1,0.5", help="Budgets as fractions of the hand-made one's latency.")
    args = parser.parse_args()
    recipe_path = Path(__file__).parent / f"search-handmade-{args.task}.toml"
    recipe = tomllib.loads(recipe_path.read_text())
    model = recipe["teacher"]["base"]
    teacher = args.workspace / "teachers" / model / args.task
    students = args.workspace / "students" / model / args.task
    results = Results(f"search-{args.task}")
    run_command, run_wall = compress(args.workspace, "run", recipe_path, "--keep-teacher")
    handmade = {s["name"]: students / s["name"] for s in recipe["stages"]}
    for path in (teacher, *handmade.values()):  # ORT timings need the fp32 variants' exports
        variant = Variant.load(path)
        if not variant.is_quantized and variant.export is None:
            compress(args.workspace, "export", path)
    bench_command, bench_wall = compress(args.workspace, "bench", teacher, *handmade.values(), "--shapes", SHAPE,
                                         "--threads", THREADS)
    key = key_here(THREADS, "cpu")
    (batch, sequence), = parse_shapes(SHAPE)
    paths = {"teacher": teacher, **handmade}  # timed in turn, as the search times its trials: one slow spell
    rounds = alternating({name: runtime.session(path / ONNX_DIR / MODEL, threads=THREADS)  # would set the budget
                          for name, path in paths.items()}, batch, sequence, ROUNDS, RUNS,
                         vocab_size=load_config(teacher).vocab_size)

    def measured(name: str) -> dict:
        entry = Variant.load(paths[name]).benches[key]
        timing = entry["latency_ms"]["ort-cpu"][SHAPE]
        return {"accuracy": entry["dev"]["accuracy"],
                "latency_ms": {"p50": round(statistics.median(rounds[name]), 3),
                               "range": [min(rounds[name]), max(rounds[name])], "bench_p50": timing["p50"]},
                "train_s": round(sum(train_seconds(Variant.load(paths[name]), teacher).values()), 1)}

    rows = {name: measured(name) for name in handmade}
    teacher_row = measured("teacher")
    budget = round(rows[BUDGET_FROM]["latency_ms"]["p50"], 2)
    results.data.update(task=args.task, teacher={"name": model, **teacher_row}, shape=SHAPE, threads=THREADS,
                        handmade={"recipe": f"benchmarks/{recipe_path.name}", "command": run_command,
                                  "bench_command": bench_command, "variants": rows},
                        budgets={})
    results.save()
    for budget_ms in (round(budget * float(f), 2) for f in args.budgets.split(",")):
        search = ["search", "--teacher", model, "--task", args.task, "--budget-ms", budget_ms, "--shape", SHAPE,
                  "--threads", THREADS, "--trials", args.trials, *schedule(recipe), *GRID]
        try:
            command, wall = compress(args.workspace, *search)
        except subprocess.CalledProcessError:  # no trial met the budget: its record says so
            command, wall = shlex.join(["compress", "--workspace", str(args.workspace), *map(str, search)]), None
        record = json.loads((args.workspace / "reports" / f"{label(args.task, budget_ms)}.json").read_text())
        under = {n: r for n, r in rows.items() if r["latency_ms"]["p50"] <= budget_ms + 0.005}  # as rounded
        best = max(under.items(), key=lambda item: item[1]["accuracy"]) if under else None
        winner = record["winner"]
        trials = record["trials"]
        results.data["budgets"][f"{budget_ms:g}"] = {
            "budget_ms": budget_ms, "command": command, "wall_s": wall,
            "latency_table": {"wall_s": record["table"]["wall_s"], "candidates": len(record["table"]["rows"]),
                              "shapes_measured": record["table"]["shapes_measured_now"]},
            "proxy_wall_s": record["proxy"]["wall_s"], "train_s_total": record["train_s_total"],
            "trials": trials,
            "predicted_within_10pct": all(abs(t["measured_over_predicted"] - 1) <= 0.10 for t in trials),
            "winner": winner and {**winner, "retention": round(winner["accuracy"] / teacher_row["accuracy"], 4)},
            "best_handmade_under_budget": best and {"name": best[0], **best[1]},
            "winner_at_least_as_accurate": bool(winner and (best is None or winner["accuracy"] >= best[1]["accuracy"])),
            "winner_chain_trained_less": bool(winner and (best is None or winner["train_s"] < best[1]["train_s"])),
            "search_trained_less": bool(winner and (best is None or record["train_s_total"] < best[1]["train_s"])),
            "recipe": record["recipe"],
        }
        results.save()
    trained = {t["candidate"]: t for b in results.data["budgets"].values() for t in b["trials"]}
    kl = [t["proxy_kl"] for t in trained.values()]
    accuracy = [-t["accuracy"] for t in trained.values()]  # low KL should mean high accuracy
    results.data["proxy_rank_correlation"] = {
        "spearman": spearman(kl, accuracy), "candidates": len(trained),
        "what": "Spearman correlation of the proxy (KL from the teacher, untrained) with minus the trained "
                "artifact's dev accuracy, over every trained candidate of both budgets: 1 ranks perfectly"}
    results.save()


if __name__ == "__main__":
    main()
