"""Helpers for the benchmark scripts: run a compress command, read its variant, save results."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compress.machine import machine  # noqa: E402

RESULTS_DIR = Path(__file__).parent / "results"
os.environ.setdefault("COMPRESS_DATA", str(ROOT.parent / "shared" / "data" / "glue"))


def compress(workspace: Path, *args: str) -> tuple[str, float]:
    """Run one compress command to completion; return it as text and its wall time.

    It runs as `python -m compress` under this interpreter, so a script started with a venv's
    python needs no activated venv; the text says `compress`, the command a user would type.
    """
    command = ["--workspace", str(workspace), *map(str, args)]
    print("$ compress", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "compress", *command], check=True)
    return shlex.join(["compress", *command]), round(time.perf_counter() - started, 1)


def read_variant(path: Path) -> dict:
    return json.loads((path / "variant.json").read_text())


class Results:
    """A results file holding the machine and the command, saved after every step."""

    def __init__(self, name: str, extend: bool = False):
        """A fresh results file, or with `extend` the existing one, to which this run adds entries."""
        self.path = RESULTS_DIR / f"{name}.json"
        self.data = json.loads(self.path.read_text()) if extend and self.path.is_file() else {}
        command = shlex.join(["python", *sys.argv])
        if self.data:
            self.data["command"] = f"{self.data['command']} && {command}"
        else:
            self.data = {"machine": machine(), "command": command}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


QAT_IF_DROP_OVER = 1.0  # metric points dynamic int8 may cost against its fp32 parent before QAT is tried (issue 34)


def student_chain(results: Results, workspace: Path, name: str, task: tuple, settings: dict,
                  shape: str, threads: int) -> dict[str, Path]:
    """The teacher -> L3 KD student -> pruned -> int8 chain of the NER and QA benchmarks, then one bench pass.

    `task` holds the task flags, `settings` the teacher, student, prune and quantize settings results.json
    records (the student's `intermediate` and `augment`, prune's `steps`: the small-data preset's, when set).
    A teacher fine-tuned earlier with the same settings is kept (seeded, it would come out the same). Where
    dynamic int8 costs more than QAT_IF_DROP_OVER points, one epoch of QAT first and its int8 instead.
    Returns the benched variants' folders by role: teacher, student, pruned, int8.
    """
    commands, walls = results.data.setdefault("commands", []), results.data.setdefault("wall_s", {})
    folder_name = Path(task[1]).name
    students = workspace / "students" / name / folder_name
    teacher_dir, student_dir, pruned_dir = (workspace / "teachers" / name / folder_name, students / "L3-kd",
                                            students / "L3-kd-pruned")
    teacher, student, prune = settings["teacher"], settings["student"], settings["prune"]
    small_data = [flag for key in ("intermediate", "augment") if student.get(key) for flag in (f"--{key}", student[key])]

    def step(label: str, *command) -> None:
        text, walls[label] = compress(workspace, *command)
        commands.append(text)
        results.save()

    made = read_variant(teacher_dir)["params"] if (teacher_dir / "variant.json").is_file() else {}
    if all(made.get(key) == teacher[key] for key in ("base", "epochs", "lr", "batch_size", "max_length")):
        walls["teacher"] = "kept: fine-tuned by an earlier run with the same settings"
    else:
        step("teacher", "teacher", "--base", teacher["base"], "--name", name, *task, "--epochs", teacher["epochs"],
             "--lr", teacher["lr"], "--batch-size", teacher["batch_size"], "--max-length", teacher["max_length"],
             "--force")
    step("student", "distill", "--teacher", name, *task, "--layers", student["layers"], "--epochs",
         student["epochs"], "--lr", student["lr"], "--temperature", student["temperature"], "--alpha",
         student["alpha"], "--max-length", teacher["max_length"], *small_data, "--name", student_dir.name, "--force")
    step("prune", "prune", student_dir, "--heads", prune["heads"], "--neurons", prune["neurons"], "--recover-epochs",
         prune["recover_epochs"], *(("--steps", prune["steps"]) if prune.get("steps") else ()),
         "--name", pruned_dir.name, "--force")
    for folder in (teacher_dir, student_dir, pruned_dir):
        step(f"export {folder.name}", "export", folder)
    step("int8", "quantize", pruned_dir, "--mode", "dynamic", "--force")
    int8_dir = students / f"{pruned_dir.name}-int8-dynamic"
    drop = results.data["dynamic_int8_drop_points"] = read_variant(int8_dir)["metrics"]["drop_points"]
    if drop > QAT_IF_DROP_OVER:
        step("qat int8", "quantize", pruned_dir, "--qat-epochs", settings["quantize"]["qat_epochs"], "--force")
        int8_dir = students / f"{pruned_dir.name}-qat-int8-dynamic"
    variants = {"teacher": teacher_dir, "student": student_dir, "pruned": pruned_dir, "int8": int8_dir}
    step("bench", "bench", *variants.values(), "--shapes", shape, "--threads", threads)
    return variants


def chain_figures(results: Results, variants: dict[str, Path], metrics: tuple[str, ...], shape: str,
                  threads: int) -> dict:
    """Each benched variant's `metrics` (from its ONNX artifact, the first one the retained one), latency, size and
    parameters, then retention and speed-up against the teacher of the same pass; returns the retention."""
    figures = {}
    for role, folder in variants.items():
        meta = read_variant(folder)
        (bench_file,) = (folder / "bench").glob("*.json")
        entry = json.loads(bench_file.read_text())
        timing = entry["latency_ms"]["ort-cpu"][shape]
        export = folder / "onnx" / "export.json"
        figures[role] = {"variant": folder.name, **{key: entry["dev"][key] for key in metrics},
                         "metrics_from": entry["accuracy_from"],
                         "latency_ms": {"p50": timing["p50"], "p90": timing["p90"]},
                         "size_mb": json.loads(export.read_text())["size_mb"] if export.is_file() else meta.get("size_mb"),
                         "parameters": meta.get("parameters")}
    results.data.update(figures)
    teacher, retained = figures["teacher"], metrics[0]
    retention = results.data["retention"] = {  # None: the teacher scored nothing to keep
        role: round(f[retained] / teacher[retained], 4) if teacher[retained] else None
        for role, f in figures.items() if role != "teacher"}
    results.data["speedup"] = {role: round(teacher["latency_ms"]["p50"] / f["latency_ms"]["p50"], 2)
                               for role, f in figures.items() if role != "teacher"}
    results.data["speedup_baseline"] = f"the teacher's ORT fp32 p50 at {shape}, {threads} threads, same bench pass"
    return retention
