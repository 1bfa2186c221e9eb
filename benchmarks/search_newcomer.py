"""A newcomer's search: the demo chain, then `compress search` at the latency the demo's pruned int8 student has.

    python benchmarks/search_newcomer.py --workspace /tmp/newcomer [--trials 2]   # -> results/search-newcomer.json
    python benchmarks/search_newcomer.py --workspace /tmp/newcomer --preset-training   # -> search-newcomer-small-data.json

Runs `compress run` (the built-in demo: minilm-l6 on Rotten Tomatoes, L3-kd-pruned-int8 among its
variants), reads that student's ORT p50 at 1x128 from its bench on this machine, then searches at that
budget as a new user would, and records what the search printed, its exit code, its trials and whether
it found a variant at least as accurate as the hand-made one. --preset-training gives every trial the
small-data preset's KD (compress/recipes/small-data.toml: intermediate losses, two augmented copies).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from compress.pipeline.recipe import preset_recipe
from compress.stages.bench import key_here
from compress.variant import Variant

from common import Results, compress

HANDMADE = Path("students/minilm-l6/rotten-tomatoes/L3-kd-pruned-int8")


def preset_training() -> list[str]:
    """The KD flags of the small-data preset's distill stage, read from the recipe that ships."""
    recipe = tomllib.loads(preset_recipe("small-data").read_text())
    distill = next(stage for stage in recipe["stages"] if stage["verb"] == "distill")
    return ["--intermediate", distill["intermediate"], "--augment", str(distill["augment"])]


def shown(line: str) -> bool:
    """A console line a reader wants: not empty, not a progress bar or its cursor movements."""
    bare = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\[A", "", line).strip()
    return bool(bare) and "it/s" not in bare and "s/it" not in bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset-training", action="store_true", help="Train every trial as the small-data preset.")
    args = parser.parse_args()
    args.workspace.mkdir(parents=True, exist_ok=True)
    run_command, run_wall = compress(args.workspace, "run")
    compress(args.workspace, "bench", args.workspace / HANDMADE, "--shapes", "1x128", "--threads", args.threads)
    handmade = Variant.load(args.workspace / HANDMADE)
    entry = handmade.benches[key_here(args.threads, "cpu")]
    budget = round(entry["latency_ms"]["ort-cpu"]["1x128"]["p50"] * 1.05, 2)  # the search's own timing margin
    search = ["--workspace", str(args.workspace), "search", "--teacher", "minilm-l6", "--task", "rotten-tomatoes",
              "--budget-ms", str(budget), "--trials", str(args.trials), "--threads", str(args.threads),
              *(preset_training() if args.preset_training else ())]
    print("$ compress", " ".join(search), flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "compress", *search], capture_output=True, text=True)
    wall = round(time.perf_counter() - started, 1)
    console = (done.stdout + done.stderr).replace("\r", "\n")
    printed = [line for line in console.splitlines() if shown(line)]
    record_path = args.workspace / "reports" / f"search-rotten-tomatoes-{budget:g}ms.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    winner = record.get("winner")
    results = Results("search-newcomer-small-data" if args.preset_training else "search-newcomer")
    results.data.update(
        demo_command=run_command, demo_wall_s=run_wall,
        handmade={"variant": str(HANDMADE), "accuracy": entry["dev"]["accuracy"],
                  "latency_ms": entry["latency_ms"]["ort-cpu"]["1x128"]},
        budget_ms=budget, search_command="compress " + " ".join(search), search_wall_s=wall,
        exit_code=done.returncode, printed=printed[-40:],
        trials=[{k: t.get(k) for k in ("candidate", "accuracy", "measured_p50_ms", "predicted_p50_ms", "twin_p50_ms",
                                       "measured_over_predicted", "measured_over_twin", "train_s")}
                for t in record.get("trials", [])],
        table_retimed=record.get("table", {}).get("retimed"),
        table_raised=len(record.get("table", {}).get("raised") or []),
        winner=winner and {k: winner[k] for k in ("candidate", "accuracy", "measured_p50_ms")},
        at_least_as_accurate=bool(winner and winner["accuracy"] >= entry["dev"]["accuracy"]),
    )
    results.save()
    print(f"search: exit {done.returncode} in {wall:.0f} s; winner {winner and winner['candidate']}")


if __name__ == "__main__":
    main()
