"""The README's demo command, timed from a fresh clone: set-up and `compress run`, as a new user would.

    python benchmarks/demo.py [--keep]     # -> results/demo.json

Clones this repository's HEAD into a temporary folder, runs the README's first command there
(`python3 -m venv .venv && ... && compress run`) under bash, and records its wall time, exit code,
the result line of every stage, and the Python warnings, raw log dicts and any other lines that
reached the console (the demo should show none). pip's cache is whatever this machine has: say so when
comparing set-up times.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, Results

RESULT_LINE = re.compile(r"^(teacher|student|pruned|shared|quantized|exported|report:|\S+: accuracy) .*", re.M)
WARNING_LINE = re.compile(r"^.*\b\w*Warning: .*$", re.M)
# What a quiet run prints besides result lines: its plan, commands, epoch lines, notes, pip and progress bars
EXPECTED = re.compile(r"^(\s*$|\s*\x1b\[A|recipe |  (teacher|distill|prune|quantize|layerdrop|share) |  then |\$ compress |"
                      r"epoch \d|.* has no ONNX export yet|WARNING: Location|.*(it/s|s/it|batch/s)\]|real|user|sys)")


def demo_command() -> str:
    commands = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    return next(c for c in commands if c.endswith("compress run"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the clone (its workspace and report).")
    args = parser.parse_args()
    results = Results("demo")
    folder = Path(tempfile.mkdtemp(prefix="compress-demo-"))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(folder / "compress")], check=True)
        command = demo_command()
        started = time.perf_counter()
        run = subprocess.run(["bash", "-c", command], cwd=folder / "compress", capture_output=True, text=True)
        wall = round(time.perf_counter() - started, 1)
        console = (run.stdout + run.stderr).replace("\r", "\n")
        (folder / "console.log").write_text(console)
        results.data.update(
            readme_command=command, commit=subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                                                           capture_output=True, text=True).stdout.strip(),
            wall_s=wall, exit_code=run.returncode, target_wall_s=20 * 60,
            result_lines=[m.group(0) for m in RESULT_LINE.finditer(console)],
            python_warnings=[m.group(0)[:200] for m in WARNING_LINE.finditer(console) if "pip" not in m.group(0)],
            raw_log_dicts=len(re.findall(r"^\{'(?:loss|eval_loss|train_runtime)'", console, re.M)),
            other_console_lines=[line[:200] for line in console.splitlines()
                                 if not EXPECTED.match(line) and not RESULT_LINE.match(line)],
        )
        results.save()
        print(f"demo: exit {run.returncode} in {wall:.0f} s; {len(results.data['python_warnings'])} warnings; "
              f"console in {folder / 'console.log'}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
