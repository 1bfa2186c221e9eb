"""The headline run: a recipe (headline-sst2.toml, headline-mrpc.toml) through `compress run`; results/<recipe>.json.

Runs the recipe (adopting variants the other benchmarks already made with the same commands), then
gathers every variant's measured numbers on this machine into one JSON, checks the design's
targets against them, and copies the HTML report (and a PNG of it) into benchmarks/results/.

    COMPRESS_DATA=../shared/data/glue python benchmarks/headline.py [--recipe benchmarks/headline-mrpc.toml] [--rebench]

`compress run` benches only what it ran or what lacks a shape; --rebench then measures every variant
again in one `compress bench` pass, its ONNX Runtime artifacts timed in turn over 5 rounds, so that
every speed-up compares timings taken side by side (a slow spell on shared cores during the run, or
during one variant's block of runs, can make that variant's timings worthless).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tomllib
from pathlib import Path

from compress.machine import machine
from compress.stages.bench import machine_key
from compress.variant import Variant, main_metric

from common import RESULTS_DIR, Results, compress

# The targets: retention of the teacher's accuracy, full-chain speed-up at 1x128, int8 cost in points.
RETENTION, RETENTION_AIM, CHAIN_SPEEDUP, INT8_DROP = 0.97, 0.99, 10, 0.5
ROUNDS = 5  # --rebench times the artifacts in turn: in one block each, two variants of one shape measured 33% apart


def full_chains(recipe: dict) -> list[str]:
    """The recipe's full chains: int8 stages over a pruned student (quantize from prune; a stage without
    `from` builds on the stage before it, as in `compress run`)."""
    verbs, chains, previous = {s["name"]: s["verb"] for s in recipe["stages"]}, [], None
    for stage in recipe["stages"]:
        parent = stage.get("from", previous)
        if stage["verb"] == "quantize" and stage.get("mode") != "fp16" and verbs.get(parent) == "prune":
            chains.append(stage["name"])
        previous = stage["name"]
    return chains


def screenshot(html: Path, png: Path) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--hide-scrollbars", "--window-size=1400,2600", f"--screenshot={png.resolve()}",
                    html.resolve().as_uri()], check=True, capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--recipe", type=Path, default=Path(__file__).parent / "headline-sst2.toml")
    parser.add_argument("--rebench", action="store_true", help="Bench every variant again, in one pass, after the run.")
    args = parser.parse_args()
    command, wall = compress(args.workspace, "run", args.recipe, "--adopt")
    recipe = tomllib.loads(args.recipe.read_text())
    task = recipe["teacher"]["task"]
    threads = recipe["bench"]["threads"]
    key = machine_key(machine(), threads, "cpu")
    model = recipe["teacher"]["base"]
    teacher_dir = args.workspace / "teachers" / model / task
    paths = {"teacher": teacher_dir} | {s["name"]: args.workspace / "students" / model / task / s["name"]
                                        for s in recipe["stages"]}
    results = Results(args.recipe.stem)
    results.data.update(command=command, recipe=f"benchmarks/{args.recipe.name}", wall_s=wall,
                        bench_key=key)
    if args.rebench:
        bench_command, bench_wall = compress(args.workspace, "bench", *paths.values(), "--shapes",
                                             recipe["bench"]["shapes"], "--threads", threads, "--rounds", ROUNDS)
        compress(args.workspace, "report", "--task", task, "--teacher", model)
        results.data.update(bench_command=bench_command, bench_wall_s=bench_wall)
    variants = results.data["variants"] = {}
    for name, path in paths.items():
        variant = Variant.load(path)
        meta, bench = variant.meta, variant.benches.get(key)
        dev = bench["dev"] if bench else meta["metrics"]["dev"]
        variants[name] = {
            "stage": meta["stage"], "path": str(path), "seed": meta["params"].get("seed"),
            "accuracy": dev["accuracy"], **({"f1": dev["f1"]} if "f1" in dev else {}),
            "main_metric": main_metric(dev), "score": dev[main_metric(dev)],
            "accuracy_from": bench["accuracy_from"] if bench else "training-time evaluation",
            "parameters": meta.get("parameters"), "unique_parameters": meta.get("unique_parameters"),
            "size_mb": (variant.export or {}).get("size_mb") or meta.get("size_mb"),
            **({"drop_points": meta["metrics"]["drop_points"]} if "drop_points" in meta["metrics"] else {}),
            "latency_ms": bench["latency_ms"] if bench else {},
        }
    teacher = variants["teacher"]
    base = teacher["latency_ms"]["ort-cpu"]
    for row in variants.values():
        row["retention"] = round(row["score"] / teacher["score"], 4)
        row["speedup"] = {f"{runtime} {shape}": round(base[shape]["p50"] / timing["p50"], 2)
                          for runtime, shapes in row["latency_ms"].items() for shape, timing in shapes.items()
                          if shape in base}
        row["speedup_baseline"] = "the teacher in ORT fp32, p50, same machine, threads and run"
    chains = {name: {"value": variants[name]["speedup"]["ort-cpu 1x128"], "retention": variants[name]["retention"]}
              for name in full_chains(recipe)}
    for chain in chains.values():
        chain["met"] = chain["value"] >= CHAIN_SPEEDUP and chain["retention"] >= RETENTION
    int8_drops = {n: r["drop_points"] for n, r in variants.items() if "drop_points" in r}
    student = max((s["name"] for s in recipe["stages"] if s["verb"] == "distill"),  # the best distilled student
                  key=lambda name: variants[name]["retention"])
    meeting = {name: {"speedup": row["speedup"]["ort-cpu 1x128"], "retention": row["retention"]}
               for name, row in variants.items()
               if row["speedup"].get("ort-cpu 1x128", 0) >= CHAIN_SPEEDUP and row["retention"] >= RETENTION}
    results.data["targets"] = {
        "student_retention": {"name": student, "value": variants[student]["retention"], "target": RETENTION,
                              "aim": RETENTION_AIM, "met": variants[student]["retention"] >= RETENTION},
        "any_variant": {"target": f">= {CHAIN_SPEEDUP}x at retention >= {RETENTION}", "meeting": meeting,
                        "met": bool(meeting)},
        "full_chain_speedup_1x128": {"variants": chains, "target": CHAIN_SPEEDUP, "retention_target": RETENTION,
                                     "met": any(chain["met"] for chain in chains.values())},
        "int8_drop_points": {"values": int8_drops, "target": INT8_DROP,
                             "met": all(d <= INT8_DROP for d in int8_drops.values())},
    }
    results.save()
    report = args.workspace / "reports" / f"{model}-{task}.html"
    page = RESULTS_DIR / f"report-{args.recipe.stem.removeprefix('headline-')}.html"  # report-mrpc-small-data.html
    shutil.copyfile(report, page)
    screenshot(page, page.with_suffix(".png"))


if __name__ == "__main__":
    main()
