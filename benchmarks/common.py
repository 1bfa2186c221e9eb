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
