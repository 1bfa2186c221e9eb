"""The folders show the architecture: stages stand side by side, and nothing imports upward."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "compress"
LOWER = ("model", "data", "training", "runtime")  # what the stages build on
UPPER = ("compress.stages", "compress.pipeline", "compress.cli", "compress.api")


def imported(path: Path) -> set[str]:
    """Every compress module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compress"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("compress"))
    return names


@pytest.mark.parametrize("stage", sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"))
def test_no_stage_imports_another_stage(stage):
    others = {f"compress.stages.{p.stem}" for p in (PACKAGE / "stages").glob("*.py")} - {f"compress.stages.{stage}"}
    assert not imported(PACKAGE / "stages" / f"{stage}.py") & (others | {"compress.stages"})


@pytest.mark.parametrize("package", LOWER)
def test_what_the_stages_build_on_imports_no_stage_pipeline_or_interface(package):
    for path in (PACKAGE / package).glob("*.py"):
        upward = {name for name in imported(path) if name.startswith(UPPER)}
        assert not upward, f"{path.relative_to(PACKAGE.parent)} imports {sorted(upward)}"


def test_the_stage_table_names_nothing_after_a_stage_module():
    """Importing compress.stages.<x> sets the package's attribute <x> to that module: a function of the
    same name in the table's module would be replaced by it."""
    table = ast.parse((PACKAGE / "stages" / "__init__.py").read_text())
    names = {node.name for node in table.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not names & {p.stem for p in (PACKAGE / "stages").glob("*.py")}
