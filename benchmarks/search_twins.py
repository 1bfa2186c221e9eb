"""Does the latency table predict a trained candidate? Side by side in one run, results/search-<task>.json.

    python benchmarks/search_twins.py --workspace WS [--task mrpc]    (after benchmarks/search.py)

The table times random-weight twins; the search benches the trained artifacts minutes or hours
later, so "measured over predicted" carries the machine's drift as well as any real difference.
Here every trial's artifact and a freshly built twin (the table's own code: `random_student`,
`artifacts`) are timed in alternating rounds, at the searched thread count and at one thread,
and the ratio is taken round by round: what remains is what the weights change. The twin takes the
graph the trained chain kept (the table's probe chose for itself; for MPNet, which has no fused
attention, export's probe put the two graphs within a few percent).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

from compress.data.tasks import task_of
from compress.machine import machine
from compress.model.checkpoint import load_config, load_tokenizer
from compress.pipeline.search import Shape, artifacts, random_student, timing_calibration
from compress.runtime import ort as runtime
from compress.runtime.export import MODEL
from compress.runtime.latency import alternating
from compress.stages.bench import parse_shapes
from compress.variant import Variant, parent_path
from compress.workspace import ONNX_DIR

from common import Results

ROUNDS, RUNS = 8, 30


def shape_of(candidate: str) -> tuple[Shape, str]:
    depth, heads, neurons, precision = re.fullmatch(r"L(\d+)-h(\d+)-f(\d+)-(.+)", candidate).groups()
    return Shape(int(depth), int(heads), int(neurons)), precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--task", default="mrpc")
    args = parser.parse_args()
    results = Results(f"search-{args.task}", extend=True)
    data = results.data
    if "budgets" not in data:
        sys.exit(f"no search results in {results.path}: run benchmarks/search.py --task {args.task} first")
    here, there = machine(), data["machine"]
    if (here["cpu"], here["flags"], here["cores"]) != (there["cpu"], there["flags"], there["cores"]):
        sys.exit(f"{results.path} was measured on {there['cpu']}, this is {here['cpu']}: twins compare in one machine")
    teacher = args.workspace / "teachers" / data["teacher"]["name"] / args.task
    config, tokenizer = load_config(teacher), load_tokenizer(teacher)
    record = Variant.load(teacher).record
    calibration = timing_calibration(task_of(record), tokenizer, record.max_length)  # as the table calibrates
    (batch, sequence), = parse_shapes(data["shape"])
    trials = {t["candidate"]: t for budget in data["budgets"].values() for t in budget["trials"]}
    rows = {}
    for candidate, trial in trials.items():
        shape, precision = shape_of(candidate)
        variant = Variant.load(args.workspace / trial["variant"])
        trained = variant.path / ONNX_DIR / MODEL
        source = Variant.load(parent_path(variant)) if variant.is_quantized else variant
        optimize = bool((source.export or {}).get("optimized"))  # the graph the trained chain kept
        with tempfile.TemporaryDirectory(prefix="compress-twin-") as tmp:
            twin = artifacts(random_student(config, shape), tokenizer, Path(tmp), [precision], calibration,
                             optimize=optimize)[precision]
            row = {"predicted_p50_ms": trial["predicted_p50_ms"], "search_measured_p50_ms": trial["measured_p50_ms"]}
            for threads in sorted({data["threads"], 1}, reverse=True):
                sessions = {"trained": runtime.session(trained, threads=threads),
                            "twin": runtime.session(twin, threads=threads)}
                p50s = alternating(sessions, batch, sequence, ROUNDS, RUNS, vocab_size=config.vocab_size)
                ratios = [a / b for a, b in zip(p50s["trained"], p50s["twin"])]
                row[f"{threads} threads"] = {
                    "trained_p50_ms": {"median": statistics.median(p50s["trained"]), "min": min(p50s["trained"]),
                                       "max": max(p50s["trained"])},
                    "twin_p50_ms": {"median": statistics.median(p50s["twin"]), "min": min(p50s["twin"]),
                                    "max": max(p50s["twin"])},
                    "trained_over_twin": round(statistics.median(ratios), 4)}
        rows[candidate] = row
        print(candidate, {k: v for k, v in row.items()}, flush=True)
    data["twins"] = {"what": f"each trial's artifact against a random-weight twin built now, timed in {ROUNDS} "
                             f"alternating rounds of {RUNS} runs at {data['shape']}; the ratio is the median over "
                             "rounds of trained p50 / twin p50", "rounds": ROUNDS, "runs": RUNS, "trials": rows}
    results.save()


if __name__ == "__main__":
    main()
