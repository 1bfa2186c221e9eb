"""Stage: one self-contained HTML page comparing every variant of a teacher on a task.

Accuracy against latency per machine, runtime and shape (SVG plots inline, Pareto frontier drawn,
teacher marked), a table with lineage, size and speed-up over the teacher, the machines and the
command behind every variant. Nothing is invented: an unmeasured variant says so.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from compress.errors import UserError
from compress.kinds import AXIS_LABELS
from compress.variant import Variant, find_variants, main_metric, parent_path
from compress.workspace import inside, named_file, write_text

GENERATOR_MARK = '<meta name="generator" content="compress">'



def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, score) points no other point beats on both, fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def runtime_group(runtime: str) -> str:
    """The column a runtime is shown in. A GPU is measured in three precisions, eager and as a CUDA
    graph; the report shows each kind at its fastest precision (the table names which)."""
    if runtime.startswith("torch-cuda-"):
        return "torch-cuda graph" if runtime.endswith("-graph") else "torch-cuda eager"
    return runtime


@dataclass
class Row:
    number: int  # the point's label in the plots, and the table's first column
    variant: Variant
    lineage: list[str]
    score: float  # the task's main dev metric (variant.main_metric): accuracy, MCC for CoLA, Spearman for regression
    accuracy_from: str
    latency: dict = field(default_factory=dict)  # (machine, runtime group, shape) -> {"p50", "p90", "runtime"}

    @property
    def name(self) -> str:
        return self.variant.record.name


def _lineage(variant: Variant, by_path: dict[str, Variant]) -> list[str]:
    """Names from the teacher down to `variant`."""
    chain, parent = [variant.record.name], parent_path(variant)
    while parent is not None and len(chain) <= len(by_path):
        above = by_path.get(str(parent.resolve()))
        chain.append(above.record.name if above else parent.name)
        parent = parent_path(above) if above else None
    return chain[::-1]


def _rows(variants: list[Variant], metric: str) -> list[Row]:
    by_path = {str(v.path.resolve()): v for v in variants}
    rows = []
    for number, v in enumerate(variants, 1):
        measured = list(v.benches.values())
        dev = measured[-1]["dev"] if measured else v.record.metrics["dev"]
        source = measured[-1]["accuracy_from"] if measured else "training-time evaluation (PyTorch fp32)"
        row = Row(number, v, _lineage(v, by_path), dev.get(metric, math.nan), source)
        for machine, entry in v.benches.items():
            for runtime, shapes in entry["latency_ms"].items():
                for shape, timing in shapes.items():
                    key = (machine, runtime_group(runtime), shape)
                    if key not in row.latency or timing["p50"] < row.latency[key]["p50"]:
                        row.latency[key] = {**timing, "runtime": runtime}
        rows.append(row)
    return rows


SEARCH_FIELDS = {"task", "teacher", "budget_ms", "shape", "machine_key", "config", "command", "table", "proxy",
                 "trials", "winner", "recipe", "train_s_total", "wall_s"}  # what the report shows of a search record


def searches(workspace: Path, teacher: str | None, task: str, rows: list[Row]) -> list[dict]:
    """The `compress search` records of this teacher and task, each with its winner's row number."""
    numbers = {str(r.variant.path.resolve()): r.number for r in rows}
    found = []
    for path in sorted((workspace / "reports").glob(f"search-{task}-*ms.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a record being written, or not a search's: the variants still report
        if not isinstance(record, dict) or not SEARCH_FIELDS <= set(record) or record["task"] != task \
                or teacher not in (None, record["teacher"]):
            continue
        winner = record.get("winner") or {}
        record["winner_number"] = numbers.get(str((workspace / winner.get("variant", "-")).resolve()))
        found.append(record)
    return found


def _plot(rows: list[Row], teacher: Row | None, key: tuple[str, str, str], metric: str, found: list[dict] = ()) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if key in r.latency]
    points = [(r.latency[key]["p50"], 100 * r.score) for r in measured]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#4c72b0", zorder=3)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="#dd8452", lw=1.5,
            ls="--", zorder=2, label="Pareto frontier")
    for r, (x, y) in zip(measured, points):  # numbers, not names: twenty names overprint each other
        ax.annotate(str(r.number), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if r is teacher:
            ax.scatter([x], [y], marker="*", s=220, color="#c44e52", zorder=4, label="teacher")
    for search in found:  # a search's winner and its budget, on the plot of its machine, runtime and shape
        if (search["machine_key"], f"ort-{search['config'].get('device')}", search["shape"]) != key:
            continue
        ax.axvline(search["budget_ms"], color="#55a868", ls=":", lw=1.2, label=f"budget {search['budget_ms']:g} ms")
        for r, (x, y) in zip(measured, points):
            if r.number == search["winner_number"]:
                ax.scatter([x], [y], marker="D", s=90, facecolors="none", edgecolors="#55a868", lw=1.8, zorder=5,
                           label=f"search winner ({search['budget_ms']:g} ms)")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, ms (log scale), {key[1]}, batch x seq {key[2]}")
    ax.set_ylabel(f"dev {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def _device_of(machine_key: str) -> str:
    """A panel's device in words: 'GPU NVIDIA H200' or 'CPU AMD EPYC, 2 threads' (from bench.machine_key)."""
    hardware, threads, device = (part.strip() for part in machine_key.rsplit("|", 2))
    if device == "cuda" and " + " in hardware:
        return f"GPU {hardware.rsplit(' + ', 1)[1]}"
    return f"CPU {hardware}, {threads}"


def build(workspace: Path, task: str | None = None, teacher: str | None = None) -> dict:
    """Everything the template shows, gathered from the workspace's variant.json files."""
    variants = find_variants(workspace, teacher, task)
    if not variants:
        raise UserError(f"no variants in {workspace} for teacher {teacher or 'any'}, task {task or 'any'}")
    tasks = {v.record.task for v in variants}
    if len(tasks) > 1:
        raise UserError(f"variants of several tasks ({', '.join(sorted(tasks))}): choose one with --task")
    metric = main_metric(variants[0].record.metrics["dev"])  # the teacher's, listed first: one task, one metric
    rows = _rows(variants, metric)
    teacher_row = next((r for r in rows if r.variant.record.stage == "teacher"), None)
    keys = sorted({k for r in rows for k in r.latency})
    machines = {}
    for r in rows:
        for name, entry in r.variant.benches.items():
            machines.setdefault(name, entry["machine"])
    table = []
    for r in rows:
        record = r.variant.record
        cells = []
        for key in keys:
            timing, base = r.latency.get(key), teacher_row.latency.get(key) if teacher_row else None
            cells.append({"timing": timing, "speedup": base["p50"] / timing["p50"] if timing and base else None})
        table.append({
            "number": r.number, "name": r.name, "lineage": " → ".join(r.lineage), "stage": record.stage,
            "params": ", ".join(f"{k}={v}" for k, v in record.params.items()
                                if k not in ("base_path", "warmup", "weight_decay") and v is not None),
            "parameters": record.parameters, "unique_parameters": record.unique_parameters or record.parameters,
            "size_mb": (r.variant.export or {}).get("size_mb") or record.size_mb,
            "score": r.score, "accuracy_from": r.accuracy_from,
            "evaluations": [{"name": Path(e["file"]).name, "file": e["file"], "rows": e.get("rows"),
                             "scored_by": e.get("scored_by"), "score": e["metrics"][metric]}
                            for e in r.variant.evaluations if isinstance(e["metrics"].get(metric), (int, float))],
            "delta": 100 * (r.score - teacher_row.score) if teacher_row else None,
            "cells": cells, "command": record.command,
        })
    task = tasks.pop()
    found = searches(workspace, teacher_row.name if teacher_row else teacher, task, rows)
    plots = [{"key": key, "svg": _plot(rows, teacher_row, key, AXIS_LABELS[metric], found)} for key in keys]
    return {"task": task, "teacher": teacher_row.name if teacher_row else teacher, "device_of": _device_of,
            "metric": AXIS_LABELS[metric],
            "keys": keys, "table": table, "plots": plots, "machines": machines, "searches": found}


def render(workspace: Path, task: str | None = None, teacher: str | None = None, out: Path | None = None) -> Path:
    """Write the report to `out` (default: reports/<teacher>-<task>.html); an existing file is
    replaced only if it is a compress report."""
    if out is not None:
        out = named_file(workspace, out)
        _check_report_target(out)
    context = build(workspace, task, teacher)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("compress", "templates"), autoescape=jinja2.select_autoescape(["html"]))
    page = environment.get_template("report.html.j2").render(**context)
    out = out or inside(workspace, workspace / "reports" / f"{context['teacher'] or 'variants'}-{context['task']}.html")
    _check_report_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # only ever inside the workspace: named_file checked the rest
    write_text(out, page)
    return Path(os.path.abspath(out))


def _check_report_target(out: Path) -> None:
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: a report is an .html file")
    if out.is_symlink() or (out.exists() and not out.is_file()):  # a FIFO would block the check below
        raise UserError(f"--out {out} is a folder, a link or a special file, not a report file")
    if out.exists():
        try:
            made_by_us = GENERATOR_MARK in out.read_text(encoding="utf-8", errors="replace")[:2000]
        except OSError:
            made_by_us = False
        if not made_by_us:
            raise UserError(f"refusing to overwrite {out}: it is not a report compress wrote")
