"""The README's commands are the ones CI runs; its result tables are the ones the JSON files give."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme_commands = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command.endswith("pytest -q")
    assert ci_command in readme_commands
    setup = ci_command.removesuffix("pytest -q")
    assert setup + "compress run" in readme_commands  # the demo shares the same set-up


def test_readme_results_are_generated_from_the_committed_json():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    generated = tables.tables().strip("\n")
    assert generated.count("### ") >= 4  # headline, teacher, distillation, pruning, quantization...
    assert tables.readme_block((ROOT / "README.md").read_text()) == generated, \
        "README results differ from benchmarks/results/*.json: run python benchmarks/readme_tables.py"
