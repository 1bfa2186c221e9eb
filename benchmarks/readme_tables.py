"""Regenerate the results in docs/results.md and the README's summary from benchmarks/results/*.json.

    python benchmarks/readme_tables.py        # rewrites the blocks between the markers in both files

Numbers are never typed by hand: tests/test_repo.py fails when a block differs from what this makes.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_PAGE, README = ROOT / "docs" / "results.md", ROOT / "README.md"
BLOCKS = ((RESULTS_PAGE, "overview"), (RESULTS_PAGE, "results"), (README, "summary"))  # file, marker name


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if x is not None else "—"


def _millions(n) -> str:
    return f"{n / 1e6:.1f}" if n else "—"


def _ms(timing) -> str:
    return f"{timing['p50']:.2f}" if timing else "—"


def teacher_section(data: dict) -> list[str]:
    lines = ["### Teachers on SST-2 (`benchmarks/results/teacher.json`)", "",
             "| run | epochs | precision | dev accuracy | train examples/s | wall s |", "|---|---|---|---|---|---|"]
    for name, run in data.get("runs", {}).items():
        lines.append(f"| {name} | {run['epochs']} | {run['precision']} | {_pct(run['accuracy'])} | "
                     f"{run['examples_per_s']:.1f} | {run['wall_s']:.0f} |")
    ab = data.get("precision_ab")
    if ab:
        lines += ["", f"bf16 autocast against fp32, 1 epoch each, same seed and schedule: {ab['speedup']}x the "
                  f"training examples/s, accuracy {_pct(ab['accuracy_bf16'])} against {_pct(ab['accuracy_fp32'])} "
                  f"({ab['accuracy_delta_points']:+.2f} points)."]
    return lines


def distill_section(data: dict) -> list[str]:
    lines = ["### Distillation (`benchmarks/results/distill.json`)", "",
             "| student | teacher acc. | no-KD acc. | KD acc. | KD retention | KD gain (points) | KD/plain epoch time |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in data.items():
        if not isinstance(entry, dict) or "kd" not in entry:
            continue
        kd, nokd = entry["kd"], entry.get("nokd")  # the no-KD twin may still be to come
        nokd_accuracy, gain, ratio = ((_pct(nokd["accuracy"]), f"{entry['kd_gain_points']:+.2f}",
                                       f"{entry['epoch_time_ratio']:.3f}") if nokd else ("not run yet", "—", "—"))
        lines.append(f"| {name} | {_pct(kd['teacher_accuracy'])} | {nokd_accuracy} | {_pct(kd['accuracy'])} | "
                     f"{kd['retention']:.3f} | {gain} | {ratio} |")
    for name, entry in data.items():
        if isinstance(entry, dict) and "epoch_time_ratio_note" in entry:
            lines.append(f"\n{name}, epoch time ratio: {entry['epoch_time_ratio_note']}.")
        if name.startswith("mpnet-base_teacher"):
            lines.append(f"\n{name}: dev accuracy {_pct(entry['accuracy'])}"
                         + (f", F1 {entry['f1']:.4f}" if "f1" in entry else ""))
    return lines


def distill_quality_section(data: dict) -> list[str]:
    """Each TinyBERT-class option against plain logit KD, and int8 with and without QAT."""
    lines = []
    for task, result in data.items():
        if task not in TASK_NAMES:
            continue
        teacher = result["teacher"]
        lines += [f"### TinyBERT-class distillation on {TASK_NAMES[task]}, 6 of 12 layers "
                  "(`benchmarks/results/distill-quality.json`)", "",
                  f"Teacher (12-layer MPNet): {_pct(teacher['accuracy'])}"
                  + (f", F1 {teacher['f1']:.4f}" if teacher.get("f1") else "") + ".", "",
                  "| row | seed | dev acc. | F1 | retention | s per epoch | per-epoch time / logit KD |",
                  "|---|---|---|---|---|---|---|"]
        for key, row in result.get("rows", {}).items():
            ratio, f1 = row.get("epoch_time_ratio_to_logit_kd"), row.get("f1")
            lines.append(f"| {key.split('/')[0]} | {row['seed']} | {_pct(row['accuracy'])} | "
                         f"{f'{f1:.4f}' if f1 else '—'} | {row['retention']:.3f} | {row['seconds_per_epoch']:.0f} | "
                         f"{f'{ratio:.2f}' if ratio else '—'} |")
        if result.get("int8"):
            lines += ["", "| student | fp32 acc. | ORT dynamic int8 | drop (points) | QAT variant fp32 | "
                      "its ORT dynamic int8 | drop from the student | drop from its own fp32 |",
                      "|---|---|---|---|---|---|---|---|"]
            for key, row in result["int8"].items():
                plain, qat = row["plain"], row["qat"]
                own = 100 * (qat["qat_fp32_accuracy"] - qat["accuracy"])
                lines.append(f"| {key} | {_pct(row['fp32_accuracy'])} | {_pct(plain['accuracy'])} | "
                             f"{plain['drop_points']:+.2f} | {_pct(qat['qat_fp32_accuracy'])} | {_pct(qat['accuracy'])} | "
                             f"{qat['drop_points']:+.2f} | {own:+.2f} |")
        lines.append("")
    return lines[:-1]


def quantize_section(data: dict) -> list[str]:
    lines = ["### Quantization (`benchmarks/results/quantize.json`, "
             f"{data.get('threads')} threads, speed-up over the same variant's ORT fp32 in the same run)", "",
             "| variant | artifact | dev acc. | drop (points) | MB | size ratio | p50 ms 1x128 | speed-up 1x128 | p50 ms 32x128 | speed-up 32x128 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, kinds in data.get("variants", {}).items():
        for kind, row in kinds.items():
            lat, speed = row["latency_ms"], row.get("speedup", {})
            lines.append(
                f"| {variant} | {kind} | {_pct(row['accuracy'])} | {row.get('drop_points', 0):+.2f} | {row['size_mb']:.1f} | "
                f"{row.get('size_ratio') or '—'} | {lat['1x128']['p50']:.2f} | {speed.get('1x128', '—')} | "
                f"{lat['32x128']['p50']:.1f} | {speed.get('32x128', '—')} |")
    return lines


def distributed_section(data: dict) -> list[str]:
    runs = data["runs"]
    lines = ["### One process against two (`benchmarks/results/distributed.json`; torchrun, gloo, same effective batch)", "",
             "| processes | threads each | examples/s | dev accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['processes']} | {r['threads_per_process']} | {r['examples_per_s']:.1f} | {_pct(r['accuracy'])} |"
              for r in runs.values()]
    return lines + ["", f"Speed-up of 2 processes: {data['speedup']}x ({data['speedup_baseline']}); accuracy "
                        f"{data['accuracy_delta_points']:+.2f} points. Two processes on two cores share what one "
                        "process had: this shows the scaling path works, not a speed-up."]


TASK_NAMES = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA"}
METRIC_NAMES = {"accuracy": "accuracy", "mcc": "Matthews correlation"}
HEADLINES = ("headline-sst2", "headline-mrpc", "headline-mrpc-small-data", "headline-cola-small-data")


def _headline_task(data: dict) -> str:
    return TASK_NAMES[Path(data["variants"]["teacher"]["path"]).name]


def _headline_title(name: str, data: dict) -> str:
    teacher = Path(data["variants"]["teacher"]["path"]).parent.name
    how = ", the small-data preset's chain" if name.endswith("small-data") else ""
    return f"{teacher} compressed on {_headline_task(data)}{how}"


def _score(row: dict) -> str:
    """A variant's main metric: accuracy as a percentage, MCC as a coefficient."""
    if row.get("main_metric", "accuracy") == "accuracy":
        return _pct(row["accuracy"])
    return f"{row['score']:.4f}"


def _against_target(data: dict) -> str:
    """Where the run stands against 10x at 0.97 retention (ORT, 1x128): the fastest variant that keeps 0.97
    and the most retentive one at 10x, which is the same variant when the target is met."""
    rows = {n: r for n, r in data["variants"].items() if n != "teacher" and "ort-cpu 1x128" in r["speedup"]}
    keep = [kv for kv in rows.items() if kv[1]["retention"] >= 0.97]
    fast = [kv for kv in rows.items() if kv[1]["speedup"]["ort-cpu 1x128"] >= 10]
    fastest = max(keep, key=lambda kv: kv[1]["speedup"]["ort-cpu 1x128"]) if keep else None
    keeping = max(fast, key=lambda kv: kv[1]["retention"]) if fast else None

    def said(kv):
        return f"{kv[0]} ({kv[1]['speedup']['ort-cpu 1x128']}x at {kv[1]['retention']:.3f})"

    if fastest and fastest[1]["speedup"]["ort-cpu 1x128"] >= 10:
        return f"10x at 0.97 met: {said(fastest)}"
    return ("10x at 0.97 not met: " + (f"fastest at 0.97 {said(fastest)}" if fastest else "none keeps 0.97")
            + (f", most retentive at 10x {said(keeping)}" if keeping
               else f", none reaches 10x, fastest {said(max(rows.items(), key=lambda kv: kv[1]['speedup']['ort-cpu 1x128']))}"))


def headline_section(name: str, data: dict) -> list[str]:
    metric = data["variants"]["teacher"].get("main_metric", "accuracy")
    f1 = any("f1" in row for row in data["variants"].values())
    extra = (" | F1" if f1 else "") + (f" | {METRIC_NAMES[metric]}" if metric != "accuracy" else "")
    lines = [f'<a id="{name}"></a>', "", f"### Headline: {_headline_title(name, data)} (`benchmarks/results/{name}.json`, recipe "
             f"`{data['recipe']}`; {data['bench_key']})", "",
             f"| variant | stage | seed | accuracy (artifact){extra} | retention | params (M) | unique (M) | MB "
             "| ORT p50 ms 1x128 | speed-up 1x128 | ORT p50 ms 32x128 | speed-up 32x128 |",
             "|---|---|---|---|" + "---|" * (extra.count("|")) + "---|---|---|---|---|---|---|---|"]
    for variant, row in data["variants"].items():
        ort = row["latency_ms"].get("ort-cpu", {})
        more = (f" | {_pct(row.get('f1'))}" if f1 else "") + (f" | {row['score']:.4f}" if metric != "accuracy" else "")
        lines.append(
            f"| {variant} | {row['stage']} | {row.get('seed', '—')} | {_pct(row['accuracy'])}{more} | "
            f"{row['retention']:.3f} | {_millions(row['parameters'])} | {_millions(row['unique_parameters'])} | "
            f"{row['size_mb']:.1f} | "
            f"{_ms(ort.get('1x128'))} | {row['speedup'].get('ort-cpu 1x128', '—')} | {_ms(ort.get('32x128'))} | "
            f"{row['speedup'].get('ort-cpu 32x128', '—')} |")
    targets = data["targets"]
    retention, chains, int8 = targets["student_retention"], targets["full_chain_speedup_1x128"], targets["int8_drop_points"]
    student = retention.get("name", "6-layer KD student")
    lines += ["", f"Retention is on {METRIC_NAMES[metric]}. Targets, from this JSON:",
              f"- {student} retention {retention['value']:.3f} (target {retention['target']}, "
              f"aim {retention['aim']}): {'met' if retention['met'] else 'not met'}.",
              *(f"- Full chain ({chain}) {row['value']}x the teacher's ORT fp32 speed at 1x128, retention "
                f"{row['retention']:.3f} (target {chains['target']}x at {chains['retention_target']}): "
                f"{'met' if row['met'] else 'not met'}."
                for chain, row in chains["variants"].items())]
    if "any_variant" in targets:
        meeting = targets["any_variant"]["meeting"]
        lines.append(f"- Any variant {targets['any_variant']['target']}: "
                     + (", ".join(f"{n} ({m['speedup']}x at {m['retention']:.3f})" for n, m in meeting.items())
                        if meeting else "none") + ".")
    if int8["values"]:
        worst = max(int8["values"].items(), key=lambda kv: kv[1])
        lines.append(f"- int8 drop at most {int8['target']} points: {'met' if int8['met'] else 'not met'} "
                     f"(worst {worst[0]}, {worst[1]:+.2f} points).")
    return lines


def prune_section(data: dict) -> list[str]:
    lines = [f"### Pruning the 6-layer student (`benchmarks/results/prune.json`; heads and FFN neurons removed together, "
             f"KD recovery {data['recover_epochs']} epoch, PyTorch fp32 latency ratios to the unpruned student, "
             f"{data['threads']} threads)", "",
             "| removed | importance | acc. before recovery | acc. after | params (M) | speed-up 1x128 | speed-up 32x128 |",
             "|---|---|---|---|---|---|---|"]
    for key, run in data["runs"].items():
        lines.append(f"| {key} | {run.get('importance', '—')} | {_pct(run.get('accuracy_before_recovery'))} | "
                     f"{_pct(run['accuracy'])} | {_millions(run['parameters'])} | "
                     f"{run.get('speedup', {}).get('1x128', '—')} | {run.get('speedup', {}).get('32x128', '—')} |")
    if "taylor_vs_random_50_points" in data:
        lines += ["", f"Taylor against random at 50%: {data['taylor_vs_random_50_points_before_recovery']:+.2f} points "
                      f"before recovery, {data['taylor_vs_random_50_points']:+.2f} after."]
    return lines


def layerdrop_share_section(data: dict) -> list[str]:
    lines = ["### LayerDrop and sharing on the 6-layer student (`benchmarks/results/layerdrop_share.json`)", ""]
    drop = data.get("layerdrop")
    if drop:
        lines += [f"Keeping layers {drop['kept_layers']} of 6 after {drop['epochs']} epoch of KD: with LayerDrop "
                  f"(rate {drop['rate']}, cut without retraining) {_pct(drop['kept_with_layerdrop']['accuracy'])}; "
                  f"without (the same cut, KD-recovered for the same epochs) "
                  f"{_pct(drop['kept_without_layerdrop_recovered']['accuracy'])} ({drop['gain_points']:+.2f} points). "
                  f"The LayerDrop-trained model with all 6 layers: "
                  f"{_pct(drop['full_depth_after_layerdrop']['accuracy'])}.", ""]
    shares = data.get("share")
    if shares:
        lines += ["| sharing | acc. before recovery | acc. after | params (M) | unique (M) | checkpoint MB |",
                  "|---|---|---|---|---|---|",
                  f"| none (the student) | — | {_pct(data['student']['accuracy'])} | "
                  f"{_millions(data['student']['parameters'])} | {_millions(data['student']['unique_parameters'])} | "
                  f"{data['student']['size_mb']:.1f} |"]
        for key, row in shares.items():
            lines.append(f"| {key} | {_pct(row.get('accuracy_before_recovery'))} | {_pct(row['accuracy'])} | "
                         f"{_millions(row['parameters'])} | {_millions(row['unique_parameters'])} | {row['size_mb']:.1f} |")
    return lines


def gpu_section(data: dict) -> list[str]:
    lines = [f"### On a GPU: {data['gpu']} (`benchmarks/results/gpu.json`)", "",
             "Training MiniLM-L6 on SST-2 (bf16), examples/s in training steps, beside a bare PyTorch loop of the "
             "same model, batches, optimizer, clipping and schedule:", "",
             "| batch | compress | bare loop | bare / compress | dev accuracy |", "|---|---|---|---|---|"]
    for name, run in data.get("training", {}).items():
        lines.append(f"| {name.removeprefix('batch ')} | {run['step_examples_per_s']:.0f} | "
                     f"{run['bare_loop']['examples_per_s']:.0f} | {run['bare_over_compress']:.2f}x | "
                     f"{_pct(run['accuracy'])} |")
    shapes = data["mpnet_shapes"]
    lines += ["", "Latency of the headline's MPNet shapes (random weights; accuracy from the CPU headline), p50 ms in "
              "the fastest GPU runtime (a captured CUDA graph in fp16 or bf16) and in eager fp16, speed-up over the "
              "12-layer teacher:", "",
              "| model | parameters (M) | accuracy | 1x128 fastest | speed-up | 1x128 eager fp16 | speed-up | "
              "32x128 fastest | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for name, model in shapes["models"].items():
        eager = model["latency_ms"]["torch-cuda-fp16"]["1x128"]
        lines.append(f"| {name} | {_millions(model['parameters'])} | {_pct(model['accuracy_from_headline'])} | "
                     f"{model['fastest']['1x128']['p50']:.3f} | {model['speedup']['fastest 1x128']:.2f}x | "
                     f"{eager['p50']:.3f} | {model['speedup']['torch-cuda-fp16 1x128']:.2f}x | "
                     f"{model['fastest']['32x128']['p50']:.3f} | {model['speedup']['fastest 32x128']:.2f}x |")
    students = data.get("students")
    if students:
        lines += ["", "MiniLM-L6 teacher trained on the GPU and its students, measured by `compress bench --device cuda` "
                  "(accuracy and latency from the same checkpoints):", "",
                  "| variant | accuracy | retention | 1x128 fastest ms | speed-up | 32x128 fastest ms | speed-up |",
                  "|---|---|---|---|---|---|---|"]
        for name, entry in students.items():
            lines.append(f"| {name} | {_pct(entry['accuracy'])} | {entry['retention']:.3f} | "
                         f"{entry['fastest']['1x128']['p50']:.3f} | {entry['speedup']['fastest 1x128']:.2f}x | "
                         f"{entry['fastest']['32x128']['p50']:.3f} | {entry['speedup']['fastest 32x128']:.2f}x |")
    return lines


def search_section(data: dict) -> list[str]:
    task = TASK_NAMES.get(data["task"], data["task"])
    lines = [f"### `compress search` on {task} (`benchmarks/results/search-{data['task']}.json`)", "",
             f"Budgets: p50 at {data['shape']}, {data['threads']} threads; the first is the hand-made "
             "L6-kd-prune-50-taylor-int8-dynamic's latency in this run. Training seconds are the whole chain's "
             "from the teacher (distillation and recovery).", "",
             "| budget ms | variant | by | accuracy | p50 ms (predicted) | training s |", "|---|---|---|---|---|---|"]
    for budget in data["budgets"].values():
        best, winner = budget["best_handmade_under_budget"], budget["winner"]
        if best:
            lines.append(f"| {budget['budget_ms']:g} | {best['name']} | hand | {_pct(best['accuracy'])} | "
                         f"{best['latency_ms']['p50']:.2f} | {best['train_s']:.0f} |")
        for trial in budget["trials"]:
            mark = "search winner" if winner and trial["candidate"] == winner["candidate"] else "search trial"
            lines.append(f"| {budget['budget_ms']:g} | {trial['candidate']} | {mark} | {_pct(trial['accuracy'])} | "
                         f"{trial['measured_p50_ms']:.2f} ({trial['predicted_p50_ms']:.2f}) | {trial['train_s']:.0f} |")
    lines.append("")
    for budget in data["budgets"].values():
        table = budget["latency_table"]
        made = (f"{table['shapes_measured']} shapes measured in {table['wall_s']:.0f} s" if table["shapes_measured"]
                else "read from the cache an earlier search on this machine measured")
        versus = ("no hand-made variant meets this budget" if budget["best_handmade_under_budget"] is None else
                  "winner at least as accurate as the best hand-made variant under the budget: "
                  f"{'yes' if budget['winner_at_least_as_accurate'] else 'no'}; with less training, the winner's "
                  f"chain: {'yes' if budget['winner_chain_trained_less'] else 'no'}, the whole search (every "
                  f"trial): {'yes' if budget['search_trained_less'] else 'no'}")
        lines.append(f"- {budget['budget_ms']:g} ms: latency table of {table['candidates']} candidates, {made}; proxy "
                     f"{budget['proxy_wall_s']:.0f} s; training {budget['train_s_total']:.0f} s; whole search "
                     f"{budget['wall_s']:.0f} s; every trial's measured latency within 10% of the prediction: "
                     f"{'yes' if budget['predicted_within_10pct'] else 'no'}; {versus}.")
    twins = data.get("twins")
    if twins:
        rows = twins["trials"].values()
        parts = []
        for threads in sorted({k for row in rows for k in row if k.endswith(" threads")}, key=lambda k: -int(k.split()[0])):
            ratios = [row[threads]["trained_over_twin"] for row in rows]
            swing = max(row[threads]["twin_p50_ms"]["max"] / row[threads]["twin_p50_ms"]["min"] for row in rows)
            parts.append(f"{'1 thread' if threads == '1 threads' else threads}: {min(ratios):.3f} to {max(ratios):.3f} "
                         f"(one file's p50 varied up to {swing:.2f}x from round to round)")
        lines.append(f"- Each trained artifact against a random-weight twin, timed side by side in {twins['rounds']} "
                     f"alternating rounds (`benchmarks/search_twins.py`), trained over twin p50: "
                     + "; ".join(parts) + ".")
    rank = data.get("proxy_rank_correlation")
    if rank:
        lines.append(f"- The proxy's rank correlation (Spearman) with trained accuracy over {rank['candidates']} "
                     "trained candidates: " + (f"{rank['spearman']}." if rank["spearman"] is not None
                                               else "not measurable with fewer than 3."))
    return lines


def ner_section(name: str, data: dict) -> list[str]:
    teacher, student, prune = data["settings"]["teacher"], data["settings"]["student"], data["settings"]["prune"]
    kd = (f"per-token KD with {student['intermediate']} losses and {student['augment']} augmented copies"
          if student.get("intermediate") or student.get("augment") else "plain per-token KD")
    rounds = f"{prune['steps']} rounds" if prune.get("steps", 1) > 1 else "one shot"
    lines = [f"### NER: {teacher['base']} on WNUT-17, {kd} (`benchmarks/results/{name}.json`; teacher {teacher['epochs']} "
             f"epochs at lr {teacher['lr']:g}, L{student['layers']} student {student['epochs']} epochs, pruned in {rounds}; "
             "entity F1 on the whole dev split from each ONNX artifact, ORT p50 at 1x128, 2 threads, one bench pass)", "",
             "| role | variant | entity F1 | precision | recall | retention | p50 ms | speed-up | MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for role in ("teacher", "student", "pruned", "int8"):
        row = data[role]
        lines.append(f"| {role} | {row['variant']} | {row['entity_f1']:.4f} | {row['entity_precision']:.4f} | "
                     f"{row['entity_recall']:.4f} | {data['retention'].get(role, 1.0):.3f} | "
                     f"{row['latency_ms']['p50']:.2f} | {data['speedup'].get(role, 1.0)} | {row['size_mb']:.1f} |")
    return lines


def embeddings_section(data: dict) -> list[str]:
    lines = ["### Sentence embeddings (`benchmarks/results/embeddings.json`; STS-B dev Spearman and retrieval recall from "
             "each ONNX artifact, ORT p50 at 2 threads in one bench pass, speed-up over the MPNet teacher)", "",
             "| variant | STS-B Spearman | retention | recall@1 | recall@10 | p50 ms 1x128 | speed-up 1x128 | "
             "p50 ms 32x128 | speed-up 32x128 | MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in data["rows"].items():
        lat = row["latency_ms"]
        lines.append(f"| {key} | {row['stsb_spearman']:.4f} | {row['retention']:.3f} | {row['recall_at_1']:.3f} | "
                     f"{row['recall_at_10']:.3f} | {lat['1x128']['p50']:.2f} | {row['speedup']['1x128']} | "
                     f"{lat['32x128']['p50']:.1f} | {row['speedup']['32x128']} | {row['size_mb']:.1f} |")
    targets = data["targets"]
    said = {True: "met", False: "not met"}
    lines += ["", f"Targets: L3 at 0.99 of the teacher's Spearman {said[targets['l3_retention']['met']]} (best "
                  f"{targets['l3_retention']['value']:.3f}, {targets['l3_retention']['variant']}); 8x at 0.98 "
                  f"{said[targets['8x_at_0.98']['met']]}"
                  f"{' (' + ', '.join(targets['8x_at_0.98']['variants']) + ')' if targets['8x_at_0.98']['variants'] else ''}; "
                  f"an MPNet student above all-MiniLM-L6-v2 at its latency or less {said[targets['beats_minilm_l6']['met']]}."]
    return lines


def summary() -> str:
    """The README's few numbers: where the headline runs stand against their targets, and the demo."""
    lines = ["Where it stands (generated from the JSON; details in [docs/results.md](docs/results.md)):", ""]
    for name in HEADLINES:
        data = _load(name)
        if not data:
            continue
        retention = data["targets"]["student_retention"]
        student = retention.get("name", "its 6-layer KD student")
        lines.append(f"- {_headline_title(name, data)}: {student} keeps {retention['value']:.3f} of the teacher's "
                     f"{METRIC_NAMES[data['variants']['teacher'].get('main_metric', 'accuracy')]} (target "
                     f"{retention['target']}); {_against_target(data)}.")
    quality = _load("distill-quality") or {}
    for task, result in quality.items():
        if task not in TASK_NAMES or not result.get("rows"):
            continue
        rows = result["rows"]
        best_key = max(rows, key=lambda k: rows[k]["retention"])
        plain = rows.get("logit-kd/seed42")
        line = (f"- {TASK_NAMES[task]}, TinyBERT-class options: the best 6-layer student ({best_key.split('/')[0]}) keeps "
                f"{rows[best_key]['retention']:.3f} of the teacher's accuracy (target 0.97)"
                + (f", against {plain['retention']:.3f} with logit KD alone" if plain else ""))
        for key, row in result.get("int8", {}).items():
            own = 100 * (row["qat"]["qat_fp32_accuracy"] - row["qat"]["accuracy"])
            line += (f"; ORT dynamic int8 of the {key.split('/')[0]} student costs {row['plain']['drop_points']:.2f} "
                     f"points, {row['qat']['drop_points']:.2f} after one epoch of QAT (target 0.5; {own:.2f} against "
                     "the QAT variant's own fp32 weights)")
        lines.append(line + ".")
    for search in filter(None, (_load(f"search-{task}") for task in ("sst2", "mrpc"))):
        for budget in search["budgets"].values():
            winner, best = budget["winner"], budget["best_handmade_under_budget"]
            if not winner:
                continue
            against = (f"the best hand-made variant under the budget, {best['name']}, {_pct(best['accuracy'])} "
                       f"after {best['train_s']:.0f} s." if best else "no hand-made variant under the budget.")
            lines.append(f"- `compress search` ({TASK_NAMES.get(search['task'], search['task'])}, budget "
                         f"{budget['budget_ms']:g} ms at {search['shape']}): {winner['candidate']}, "
                         f"{_pct(winner['accuracy'])} in {winner['measured_p50_ms']:.2f} ms after "
                         f"{winner['train_s']:.0f} s of training ({budget['train_s_total']:.0f} s for all "
                         f"{len(budget['trials'])} trials), against {against}")
    gpu = _load("gpu")
    if gpu:
        run, student = gpu["training"]["batch 32"], gpu["mpnet_shapes"]["models"]["L6-kd"]
        lines.append(f"- On an {gpu['gpu']}: training runs at {run['step_examples_per_s']:.0f} examples/s at batch 32, "
                     f"{run['bare_over_compress']:.2f}x behind a bare PyTorch loop (target 1.25x); the 6-layer student "
                     f"of the 12-layer MPNet shape is {student['speedup']['fastest 1x128']:.2f}x faster than it at "
                     f"1 x 128 in the fastest GPU runtime, a CUDA graph (target 1.8x).")
    demo = _load("demo")
    if demo:
        machine = demo["machine"]
        lines.append(f"- The demo command above, from a fresh clone on {machine['cpu']} ({machine['cores']} cores, "
                     f"{', '.join(machine['flags'])}): {demo['wall_s'] / 60:.1f} minutes (target "
                     f"{demo['target_wall_s'] / 60:.0f}), exit code {demo['exit_code']}; on its console "
                     f"{len(demo['python_warnings'])} Python warnings and "
                     f"{len(demo.get('other_console_lines', []))} lines besides results, progress and plan.")
    return "\n".join(lines)


def overview() -> str:
    """docs/results.md's opening table: for each headline run, the variants nearest the 10x-at-0.97 target: the
    fastest that keeps 0.97 (else the most retentive) and the most retentive at 10x (else the fastest)."""
    lines = ["| run | variant | main metric (artifact) | retention | ORT speed-up 1x128 | 10x at 0.97 |",
             "|---|---|---|---|---|---|"]
    for name in HEADLINES:
        data = _load(name)
        if not data:
            continue
        rows = {n: r for n, r in data["variants"].items() if n != "teacher" and "ort-cpu 1x128" in r["speedup"]}
        keep = [n for n, r in rows.items() if r["retention"] >= 0.97]
        fast = [n for n, r in rows.items() if r["speedup"]["ort-cpu 1x128"] >= 10]
        picks = dict.fromkeys(filter(None, (
            max(keep, key=lambda n: rows[n]["speedup"]["ort-cpu 1x128"]) if keep
            else max(rows, key=lambda n: rows[n]["retention"]),
            max(fast, key=lambda n: rows[n]["retention"]) if fast
            else max(rows, key=lambda n: rows[n]["speedup"]["ort-cpu 1x128"]))))
        teacher = data["variants"]["teacher"]
        lines.append(f"| [{_headline_title(name, data)}](#{name}) | teacher | {_score(teacher)} | 1.000 | 1.0 | |")
        for variant in picks:
            row = rows[variant]
            met = row["speedup"]["ort-cpu 1x128"] >= 10 and row["retention"] >= 0.97
            lines.append(f"| | {variant} | {_score(row)} | {row['retention']:.3f} | "
                         f"{row['speedup']['ort-cpu 1x128']} | {'met' if met else 'not met'} |")
    return "\n".join(lines)


def tables() -> str:
    """docs/results.md's tables, from the JSON files alone."""
    parts = []
    for name, section in (*((h, lambda d, h=h: headline_section(h, d)) for h in HEADLINES), ("teacher", teacher_section),
                          ("distill", distill_section), ("distill-quality", distill_quality_section),
                          ("prune", prune_section),
                          ("layerdrop_share", layerdrop_share_section), ("quantize", quantize_section),
                          ("distributed", distributed_section), ("gpu", gpu_section), ("search-sst2", search_section),
                          ("search-mrpc", search_section), ("embeddings", embeddings_section),
                          *((n, lambda d, n=n: ner_section(n, d)) for n in ("ner-plain-kd", "ner"))):
        data = _load(name)
        if data:
            machine = data["machine"]
            gpu = f" and {machine['gpu']}" if machine.get("gpu") else ""
            parts += section(data) + ["", f"Machine: {machine['cpu']}{gpu}, {machine['cores']} cores, "
                                          f"flags {', '.join(machine['flags'])}; torch {machine['versions'].get('torch')}, "
                                          f"onnxruntime {machine['versions'].get('onnxruntime')}.", ""]
    return "\n".join(parts)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def block(text: str, name: str) -> str:
    """What stands between a file's `name` markers."""
    start, end = markers(name)
    return text.split(start)[1].split(end)[0].strip("\n")


def generated(name: str) -> str:
    return {"results": tables, "summary": summary, "overview": overview}[name]().strip("\n")


def main() -> None:
    for path, name in BLOCKS:
        start, end = markers(name)
        head, rest = path.read_text().split(start)
        _, tail = rest.split(end)
        path.write_text(head + start + "\n" + generated(name) + "\n" + end + tail)


if __name__ == "__main__":
    main()
