"""The README's commands are the ones CI runs; its numbers and the results page are the ones the JSON files give."""

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


def test_results_and_readme_numbers_are_generated_from_the_committed_json():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert tables.generated("results").count("### ") >= 4  # headline, teacher, distillation, pruning, quantization...
    assert "6-layer KD student keeps" in tables.generated("summary")
    for path, name in tables.BLOCKS:
        assert tables.block(path.read_text(), name) == tables.generated(name), \
            f"{path.name} differs from benchmarks/results/*.json: run python benchmarks/readme_tables.py"


def test_the_readme_is_short_and_links_the_reference_and_the_results():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 12_000, len(readme)
    for page in ("docs/cli.md", "docs/results.md"):
        assert f"]({page})" in readme and (ROOT / page).is_file()


def _json_numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_numbers(item)


def test_every_number_in_the_findings_comes_from_the_json():
    """The findings prose is written by hand; each of its decimals must be a JSON value, rounded as printed."""
    import json

    page = (ROOT / "docs" / "results.md").read_text()
    prose = page.split("<!-- results:start -->")[0]
    numbers = {round(x, 6) for path in (ROOT / "benchmarks" / "results").glob("*.json")
               for x in _json_numbers(json.loads(path.read_text()))}
    unsourced = []
    for text in re.findall(r"(?<![\w.])\d+\.\d+%?", prose):
        value, decimals = float(text.rstrip("%")), len(text.rstrip("%").split(".")[1])
        scales = (100,) if text.endswith("%") else (1, 1e-6)  # a plain number, or millions (parameters)
        if not any(round(scale * x, decimals) == value for x in numbers for scale in scales):
            unsourced.append(text)
    assert not unsourced, f"numbers in docs/results.md found in no benchmarks/results/*.json: {unsourced}"
