"""Regenerate the README's results section from benchmarks/results/*.json (never typed by hand).

    python benchmarks/readme_tables.py        # rewrites the block between the results markers
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if x is not None else "—"


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
        kd, nokd = entry["kd"], entry["nokd"]
        lines.append(f"| {name} | {_pct(kd['teacher_accuracy'])} | {_pct(nokd['accuracy'])} | {_pct(kd['accuracy'])} | "
                     f"{kd['retention']:.3f} | {entry['kd_gain_points']:+.2f} | {entry['epoch_time_ratio']:.3f} |")
    for name, entry in data.items():
        if name.startswith("mpnet-base_teacher"):
            lines.append(f"\n{name}: dev accuracy {_pct(entry['accuracy'])}"
                         + (f", F1 {entry['f1']:.4f}" if "f1" in entry else ""))
    return lines


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


def main() -> None:
    parts = []
    for name, section in (("teacher", teacher_section), ("distill", distill_section), ("quantize", quantize_section)):
        data = _load(name)
        if data:
            machine = data["machine"]
            parts += section(data) + ["", f"Machine: {machine['cpu']}, {machine['cores']} cores, "
                                          f"flags {', '.join(machine['flags'])}; torch {machine['versions'].get('torch')}, "
                                          f"onnxruntime {machine['versions'].get('onnxruntime')}.", ""]
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    (ROOT / "README.md").write_text(head + START + "\n" + "\n".join(parts) + "\n" + END + tail)


if __name__ == "__main__":
    main()
