"""The stages as Python functions, for notebooks and scripts; the CLI is a thin layer over these.

    from pathlib import Path
    from compress.api import TrainConfig, DistillConfig, PruneConfig, QuantizeConfig, load_task
    from compress.api import fine_tune, distill, prune, quantize, bench, report

    task = load_task("rotten-tomatoes")
    teacher = fine_tune("minilm-l6", task, Path("ws"), TrainConfig(epochs=3))
    student = distill(teacher, task, DistillConfig(layers=3), TrainConfig(epochs=3))
    pruned = prune(student, PruneConfig(heads=0.5, neurons=0.5), TrainConfig(epochs=1, lr=3e-5))
    int8 = quantize(pruned, QuantizeConfig(mode="dynamic"))
    bench(int8, [(1, 128)])
    report(Path("ws"))

    ner = load_task("wnut17", "../shared/data")      # a tagger: the same calls, entity F1 its metric
    qa = load_task("my-squad/")                      # a reader (SQuAD v1.1 JSON): QA F1 and exact match
    run("recipe.toml", workspace="ws")               # a whole chain from a recipe, as `compress run`
    search("minilm-l6", TaskConfig(task="rotten-tomatoes"), SearchConfig(budget_ms=4), workspace="ws")

Each stage takes a Variant (or the path of its folder) and gives a new one (fine_tune starts
from a base model); its settings are the same dataclasses the CLI builds from its flags, checked
as the flags are when built, and paths may be str or Path. Bad arguments raise UserError. A KD
field left at None (the default) is the one the variant was trained with, as an untyped flag is
(compress.training.kd). run and search print the lines `compress run` and `compress search` print.
"""

from pathlib import Path

from compress.configs import (
    KD,
    DistillConfig,
    LayerDropConfig,
    PruneConfig,
    QuantizeConfig,
    SearchConfig,
    ShareConfig,
    TaskConfig,
    TrainConfig,
)
from compress.data.tasks import Task, load_task
from compress.errors import as_path, require
from compress.pipeline.recipe import init_workspace
from compress.runtime.export import export
from compress.stages.bench import bench, bench_in_turn
from compress.stages.distill import distill
from compress.stages.layerdrop import layerdrop
from compress.stages.prune import prune
from compress.stages.quantize import quantize
from compress.stages.report import render
from compress.stages.share import share
from compress.stages.teacher import fine_tune
from compress.variant import Variant, find_variants


def init(directory, preset: str = "demo") -> Path:
    """A workspace in `directory` (a str or Path) with recipe.toml from `preset` (demo, small-data); returns
    the recipe's path (one that exists is left as it is). `compress run` runs it."""
    return init_workspace(as_path(directory, "directory"), require(preset, str, "preset"))[0]


def report(workspace, task: str | None = None, teacher: str | None = None, out=None):
    """The report page of `workspace` (a str or Path), written to `out` [default: reports/<teacher>-<task>.html]."""
    require(task, (str, type(None)), "task")
    require(teacher, (str, type(None)), "teacher")
    return render(as_path(workspace, "workspace"), task, teacher, None if out is None else as_path(out, "out"))


def run(recipe, workspace=".", adopt: bool = False, keep_teacher: bool = False) -> list[Variant]:
    """Run `recipe` (a str or Path to its TOML) in `workspace`, skipping unchanged stages, as `compress run` does;
    returns the variants of its steps, the teacher first."""
    from compress.pipeline import recipe as recipes

    workspace = as_path(workspace, "workspace")
    plan = recipes.plan(as_path(recipe, "recipe"), workspace, require(adopt, bool, "adopt"),
                        require(keep_teacher, bool, "keep_teacher"))
    return recipes.execute(plan, workspace)


def search(teacher: str, task: TaskConfig, config: SearchConfig, train: TrainConfig | None = None,
           kd: KD | None = None, workspace=".") -> dict:
    """The most accurate student under `config.budget_ms` on this machine, as `compress search` finds it, from
    the workspace's teacher of that name (fine-tuned first if it has none for the task); returns its record."""
    from compress import stages

    require(teacher, str, "teacher")
    require(task, TaskConfig, "task")
    require(config, SearchConfig, "config")
    train = TrainConfig() if train is None else require(train, TrainConfig, "train")
    kd = KD() if kd is None else require(kd, KD, "kd")
    command = f"compress.api.search({teacher!r}, {task!r}, {config!r}, {train!r}, {kd!r})"
    return stages.search(as_path(workspace, "workspace"), teacher, task, config, kd, train, command)


__all__ = [
    "KD", "DistillConfig", "LayerDropConfig", "PruneConfig", "QuantizeConfig", "SearchConfig", "ShareConfig",
    "TaskConfig", "TrainConfig", "Task", "Variant", "bench", "bench_in_turn", "distill", "export", "find_variants", "fine_tune", "init",
    "layerdrop", "load_task", "prune", "quantize", "report", "run", "search", "share",
]
