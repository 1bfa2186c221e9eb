"""The GPU half: training throughput against a bare PyTorch loop, and latency in every GPU runtime.

    COMPRESS_DATA=../shared/data/glue python benchmarks/gpu.py --workspace /tmp/gpu-ws

Needs a CUDA GPU; writes benchmarks/results/gpu.json. All in one run, on one GPU:
1. MiniLM-L6 fine-tuned on SST-2 by `compress teacher` at batch 32 and 128, beside a
   bare loop of the same model, batches (the Trainer's length-grouped order, already on the GPU),
   precision, optimizer (fused AdamW), clipping and schedule: the floor of what a step costs.
2. Its students (3 layers by KD, with and without the hidden-state loss, and pruned), measured by
   `compress bench --device cuda`: latency and accuracy from the same checkpoints.
3. The headline's MPNet shapes (teacher 12 x 768, its 6-layer student, that student pruned by
   Taylor scores to the per-layer shapes prune.json records, a 3-layer one) with random weights:
   latency does not depend on weight values; their accuracies are the headline's, measured on CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import MPNetConfig, MPNetForSequenceClassification, get_linear_schedule_with_warmup, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from compress.data.batches import Collator, encode
from compress.data.tasks import load_task
from compress.machine import autocast, kernels_for_many_shapes
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.model.registry import resolve_base
from compress.model.structure import STRUCTURE_KEY, apply_structure, record
from compress.runtime.latency import in_precision, torch_latency_ms
from compress.stages.bench import precisions
from compress.stages.prune import current_structure
from compress.variant import Variant

from common import RESULTS_DIR, Results, compress, read_variant

SHAPES = ((1, 128), (32, 128))
TASK = "sst2"


def bare_loop(base: Path, batch_size: int, precision: str, lr: float, steps: int, seed: int = 42) -> dict:
    """Examples/s of the plainest loop doing a compress training step's work, on the same batches."""
    set_seed(seed)
    task, tokenizer = load_task(TASK), load_tokenizer(base)
    train = encode(task.train, tokenizer, 128)
    order = list(LengthGroupedSampler(batch_size, lengths=train["length"],
                                      generator=torch.Generator().manual_seed(seed)))
    collate, rows = Collator(tokenizer, pad_to_multiple_of=8), train.remove_columns(["length"])  # as compress pads
    kernels_for_many_shapes()
    batches = [{k: v.cuda() for k, v in collate([rows[i] for i in order[s:s + batch_size]]).items()}
               for s in range(0, steps * batch_size, batch_size)]
    model = load_classifier(base, num_labels=task.num_labels, ignore_mismatched_sizes=True).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, fused=True)
    schedule = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)

    def step(batch):
        with autocast(precision, "cuda"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)

    warm = 20
    for batch in batches[:warm]:
        step(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches[warm:]:
        step(batch)
    torch.cuda.synchronize()
    examples = sum(len(b["labels"]) for b in batches[warm:])
    return {"examples_per_s": round(examples / (time.perf_counter() - started), 1), "steps": steps - warm}


def teacher_run(workspace: Path, base: Path, name: str, batch_size: int, lr: float, epochs: float) -> dict:
    command, wall = compress(workspace, "teacher", "--base", base, "--task", TASK, "--name", name,
                             "--batch-size", batch_size, "--lr", lr, "--epochs", epochs)
    meta = read_variant(workspace / "teachers" / name / TASK)
    return {"command": command, "wall_s": wall, "accuracy": meta["metrics"]["dev"]["accuracy"],
            "step_examples_per_s": meta["train"]["step_examples_per_s"],
            "examples_per_s_with_eval": meta["train"]["examples_per_s"], "precision": meta["train"]["precision"]}


def pruned_to(model, heads: list[int], neurons: list[int]):
    """`model` cut to these per-layer head and neuron counts, with new random weights: which heads
    and neurons are kept, and their values, do not change latency."""
    structure = current_structure(model)
    structure["heads"] = [kept[:count] for kept, count in zip(structure["heads"], heads)]
    structure["neurons"] = list(neurons)
    record(model, STRUCTURE_KEY, structure)
    apply_structure(model, structure)
    return model


def gpu_latency(model, runs: int) -> dict:
    """Per runtime (torch fp32/fp16/bf16, eager and CUDA graph) and shape: p50/p90 ms."""
    model = model.cuda().eval()
    out = {}
    for precision in precisions("cuda"):
        served = in_precision(model, precision)
        for graph in (False, True):
            out[f"torch-cuda-{precision}" + ("-graph" if graph else "")] = {
                f"{b}x{s}": torch_latency_ms(served, b, s, runs, warmup=10, vocab_size=model.config.vocab_size,
                                             graph=graph) for b, s in SHAPES}
        del served
    return out


def fastest(latency: dict, shape: str) -> tuple[str, float]:
    runtime = min(latency, key=lambda r: latency[r][shape]["p50"])
    return runtime, latency[runtime][shape]["p50"]


def speedups(models: dict, baseline: str) -> None:
    """Each model's speed-up over `baseline` per shape: in its fastest runtime, and in eager fp16."""
    for entry in models.values():
        for shape in (f"{b}x{s}" for b, s in SHAPES):
            runtime, p50 = fastest(entry["latency_ms"], shape)
            base_runtime, base_p50 = fastest(models[baseline]["latency_ms"], shape)
            entry.setdefault("fastest", {})[shape] = {"runtime": runtime, "p50": p50}
            entry.setdefault("speedup", {})[f"fastest {shape}"] = round(base_p50 / p50, 2)
            eager = "torch-cuda-fp16"
            entry["speedup"][f"{eager} {shape}"] = round(
                models[baseline]["latency_ms"][eager][shape]["p50"] / entry["latency_ms"][eager][shape]["p50"], 2)


def mpnet_shapes(runs: int) -> dict:
    headline = json.loads((RESULTS_DIR / "headline-sst2.json").read_text())["variants"]
    cut = json.loads((RESULTS_DIR / "prune.json").read_text())["runs"]["50%"]
    depth = {"teacher": 12, "L6-kd": 6, "L6-kd-prune-50-taylor": 6, "L3": 3}
    models = {}
    for name, layers in depth.items():
        torch.manual_seed(0)
        model = MPNetForSequenceClassification(MPNetConfig(num_hidden_layers=layers, num_labels=2))
        if "prune" in name:
            model = pruned_to(model, cut["heads_per_layer"], cut["neurons_per_layer"])
        models[name] = {"layers": layers, "parameters": sum(p.numel() for p in model.parameters()),
                        "accuracy_from_headline": headline.get(name, {}).get("accuracy"),
                        "latency_ms": gpu_latency(model, runs)}
        print(name, {s: fastest(models[name]["latency_ms"], s) for s in ("1x128", "32x128")}, flush=True)
    speedups(models, "teacher")
    return {"weights": "random (latency does not depend on them)",
            "accuracy_from": "benchmarks/results/headline-sst2.json (the same shapes trained, ORT fp32 on a CPU)",
            "pruned_shapes_from": "benchmarks/results/prune.json runs.50% (Taylor, global, of the 6-layer student)",
            "models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--skip-training", action="store_true", help="latency of the MPNet shapes only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU")
    results = Results("gpu")
    results.data["gpu"] = torch.cuda.get_device_name()
    results.data["mpnet_shapes"] = mpnet_shapes(args.runs)
    results.save()
    if args.skip_training:
        return
    base = resolve_base(args.base)
    ws = args.workspace
    training = results.data["training"] = {}

    def train_teacher(batch: int, lr: float, epochs: float) -> None:
        label = f"batch {batch}"
        run = teacher_run(ws, base, f"minilm-b{batch}", batch, lr, epochs)
        run["bare_loop"] = bare_loop(base, batch, run["precision"], lr, steps=600 if batch == 32 else 300)
        run["bare_over_compress"] = round(run["bare_loop"]["examples_per_s"] / run["step_examples_per_s"], 2)
        training[label] = run
        print(label, run, flush=True)
        results.save()

    train_teacher(32, 5e-5, 1)
    students = results.data["students"] = {}
    teacher = ws / "teachers" / "minilm-b32" / TASK
    made = {"teacher": teacher}
    for name, flags in (("L3-kd", ()), ("L3-kd-hidden-cosine", ("--intermediate", "hidden-cosine"))):
        command, wall = compress(ws, "distill", "--teacher", "minilm-b32", "--task", TASK, "--layers", 3,
                                 "--epochs", 1, "--batch-size", 32, "--name", name, *flags)
        made[name] = ws / "students" / "minilm-b32" / TASK / name
        students[name] = {"command": command, "wall_s": wall}
    command, wall = compress(ws, "prune", made["L3-kd"], "--heads", 0.5, "--neurons", 0.5, "--recover-epochs", 0.5,
                             "--name", "L3-kd-prune-50")
    made["L3-kd-prune-50"] = made["L3-kd"].parent / "L3-kd-prune-50"
    students["L3-kd-prune-50"] = {"command": command, "wall_s": wall}
    command, wall = compress(ws, "bench", *made.values(), "--device", "cuda", "--shapes", "1x128,32x128")
    results.data["bench_command"] = command
    for name, path in made.items():
        (entry,) = [e for key, e in Variant.load(path).benches.items() if key.endswith("| cuda")]
        meta = read_variant(path)
        students.setdefault(name, {}).update(
            accuracy=entry["dev"]["accuracy"], accuracy_from=entry["accuracy_from"],
            accuracy_by_precision=entry["accuracy_by_precision"], latency_ms=entry["latency_ms"],
            parameters=meta["parameters"], train=meta.get("train"))
    speedups(students, "teacher")
    for entry in students.values():
        entry["retention"] = round(entry["accuracy"] / students["teacher"]["accuracy"], 4)
    results.save()
    print(json.dumps({k: v.get("speedup") for k, v in students.items()}, indent=1), flush=True)
    train_teacher(128, 1e-4, 2)

if __name__ == "__main__":
    main()
