"""`compress run RECIPE.toml`: the whole chain from one file, skipping what has not changed.

A recipe names a teacher and a task, then stages in order. Each stage starts from the one
before it, or from the stage named in its `from` ("teacher" for the teacher). Every key of a
stage is that verb's command-line flag (`recover-epochs = 1` is `--recover-epochs 1`): both come
from the settings dataclasses (compress.configs) and the stage table (compress.stages), so the
recipe and the CLI share one set of options, defaults and checks. The recipe builds the settings
from its tables and runs the stages directly, without the command line.

A stage is skipped when its output exists and was made from the same parent, parameters and data:
a hash of those is stamped into each output's recipe.json. A stage killed mid-training resumes
when the recipe runs again (its `.partial` folder holds the checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

from compress.configs import BenchConfig, TaskConfig, TrainConfig, from_table, table_keys
from compress.errors import UserError
from compress.stages import (
    STAGES,
    TRAINING,
    bench_variants,
    ensure_export,
    make,
    make_teacher,
    say,
    write_report,
)
from compress.variant import Variant
from compress.workspace import META_FILE, check_name, inside, write_text

TASK_TABLE = table_keys(TaskConfig)  # {recipe key: field} of the task's settings
TASK_KEYS = tuple(TASK_TABLE)


@dataclass
class Step:
    verb: str
    name: str
    args: list[str]  # the command line after the verb, as the console shows it
    output: Path
    hash: str
    run: Callable[[bool, Callable], None]  # (replace its output, log): makes the output from settings built now
    skip: bool = False
    parent: str | None = None  # the step this one starts from
    kept: bool = False  # an existing teacher taken as it is: skipped, and its stamp (another recipe's) left alone

    def describe(self) -> str:
        state = "unchanged, skipped" if self.skip else "to run"
        return f"{self.verb:<9} {self.name:<28} -> {self.output}  [{state}]"


@dataclass
class Plan:
    recipe: Path
    steps: list[Step] = field(default_factory=list)
    bench: BenchConfig | None = None
    report: dict | None = None  # report's arguments: task, teacher, out


def demo_recipe() -> Path:
    return preset_recipe("demo")


PRESETS = ("demo", "small-data", "embeddings")  # the recipes that ship in compress/recipes/


def preset_recipe(preset: str) -> Path:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose {', '.join(PRESETS)}")
    return Path(str(resources.files("compress") / "recipes" / f"{preset}.toml"))


def init_workspace(directory: Path | str, preset: str = "demo") -> tuple[Path, bool]:
    """Make a workspace in `directory`: teachers/, students/, reports/ and recipe.toml from `preset`.

    Returns the recipe's path and whether it was written now: one that exists is left as it is."""
    directory = Path(directory)
    source = preset_recipe(preset)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("teachers", "students", "reports"):
        inside(directory, directory / name).mkdir(exist_ok=True)
    recipe = directory / "recipe.toml"
    if recipe.exists() or recipe.is_symlink():  # never write through a link
        return recipe, False
    write_text(recipe, source.read_text())  # a full disk leaves no empty recipe behind
    return recipe, True


def load(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"no recipe at {path}")
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe {path} is not valid TOML: {exc}") from None
    unknown = set(recipe) - {"teacher", "stages", "bench", "report"}
    if unknown:
        raise UserError(f"recipe {path}: unknown section(s) {', '.join(sorted(unknown))} "
                        "(teacher, stages, bench, report)")
    if not isinstance(recipe.get("teacher"), dict) or "base" not in recipe["teacher"]:
        raise UserError(f"recipe {path} needs a [teacher] table with a base")
    if not isinstance(recipe.get("stages", []), list):
        raise UserError(f"recipe {path}: stages must be an array of tables ([[stages]])")
    return recipe


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


RECIPE_DECIDES = ("force", "name")  # a recipe names its outputs and decides what to replace


def check_keys(params: dict, keys: list[str], where: str) -> None:
    """Refuse a key that is none of `keys` (a verb's flags without their dashes) or that the recipe decides."""
    for key in params:
        if key not in keys or key in RECIPE_DECIDES:
            known = sorted(k for k in keys if k not in RECIPE_DECIDES)
            raise UserError(f"{where}: unknown parameter '{key}' (choose from {', '.join(known)})")


def command_line(params: dict, keys: dict) -> list[str]:
    """{key: value} as the flags a user would type (shown as the `$ compress VERB ...` line)."""
    args = []
    for key, value in params.items():
        is_switch = key in keys and getattr(keys[key].type, "__args__", (keys[key].type,))[0] is bool
        args += ([f"--{key}"] if value else []) if is_switch or isinstance(value, bool) else [f"--{key}", str(value)]
    return args


def _stamped(output: Path) -> str | None:
    try:
        return (Variant.load(output).recipe_stamp or {}).get("hash")
    except UserError:
        return None


TEACHER_KEYS = ("base", *TASK_KEYS)


def _teacher_step(recipe: dict, path: Path, workspace: Path, keep_teacher: bool) -> tuple[Step, TaskConfig, dict]:
    """The [teacher] table as a step (its settings built and checked, its output, its hash), the task's settings,
    and the task's keys as written (distill's command line repeats them)."""
    from compress.stages.teacher import default_name as teacher_default
    from compress.stages.teacher import teacher_dir

    where = f"recipe {path} [teacher]"
    teacher = dict(recipe["teacher"])
    teacher_name = check_name(teacher.pop("name", None) or teacher_default(str(teacher["base"])),
                              f"recipe {path} [teacher] name")
    train_keys = table_keys(TrainConfig, TRAINING)
    check_keys(teacher, [*TEACHER_KEYS, *train_keys], where)
    task = from_table(TaskConfig, teacher, TASK_TABLE, where)
    train = from_table(TrainConfig, teacher, train_keys, where)
    base = teacher["base"]
    if isinstance(base, (dict, list)):
        raise UserError(f"{where}: 'base' takes one value, not {base!r}")
    data = task.load()
    output = teacher_dir(workspace, teacher_name, data.name)
    digest = _digest("teacher", recipe["teacher"], data.fingerprint)  # as written, name included
    kept = keep_teacher and (output / META_FILE).is_file()
    if kept and _stamped(output) != digest:  # not this recipe's teacher as it made it: the stages follow this
        # very fine-tune (one made again, even from the same table, has them made again) and this data
        digest = _digest("kept teacher", Variant.load(output).made, data.fingerprint)
    args = [*command_line(teacher, {}), "--name", teacher_name]
    run = partial(make_teacher, workspace, str(base), task, train, teacher_name)
    written = {key: teacher[key] for key in TASK_KEYS if key in teacher}
    return Step("teacher", teacher_name, args, output, digest, run, kept=kept), task, written


def _stage_step(stage: dict, where: str, steps: dict, previous: str, task: TaskConfig, task_written: dict,
                workspace: Path, students: Path) -> Step:
    """One [[stages]] table as a step: its verb's settings built from its keys and checked, its output, its hash."""
    if not isinstance(stage, dict):
        raise UserError(f"{where}: a stage is a table ([[stages]] with verb = ...), not {stage!r}")
    if stage.get("verb") not in STAGES:
        raise UserError(f"{where}: verb must be one of {', '.join(STAGES)}, not {stage.get('verb')!r}")
    params = {k: v for k, v in stage.items() if k not in ("verb", "from", "name")}
    per_recipe = sorted(set(params) & {"teacher", *TASK_KEYS})
    if per_recipe:  # else a stage could write where the plan does not show
        raise UserError(f"{where}: {', '.join(per_recipe)} cannot be set per stage: the teacher and the task "
                        "come from [teacher]")
    verb, source = stage["verb"], str(stage.get("from", previous))
    if source not in steps:
        raise UserError(f"{where}: from = '{source}' names no earlier stage (teacher, {', '.join(list(steps)[1:])})")
    name = check_name(stage.get("name") or f"{steps[source].name}-{verb}", f"{where}: name")
    if name in steps:
        raise UserError(f"{where}: the name '{name}' is already used by an earlier stage")
    parent, kind = steps[source], STAGES[verb]
    keys = kind.keys()
    check_keys(params, [*keys, *kind.switches, *(("teacher", *TASK_KEYS) if kind.takes == "teacher" else ())], where)
    for switch in kind.switches:
        if switch in params and not isinstance(params[switch], bool):
            raise UserError(f"{where}: '{switch}' is a switch: give true or false, not {params[switch]!r}")
    config = from_table(kind.config, params, table_keys(kind.config), where)
    train = from_table(TrainConfig, params, kind.training_keys(), where, **kind.train_defaults()) \
        if kind.epochs_key else None
    switches = {key.replace("-", "_"): params[key] for key in kind.switches if key in params}
    if kind.takes == "teacher":
        if source != "teacher":
            raise UserError(f"{where}: distill starts from the teacher, not from '{source}'")
        args = ["--teacher", parent.name, *command_line(task_written, {}), *command_line(params, keys)]
        run = partial(make, verb, parent.name, config, train, name, workspace=workspace, task=task, **switches)
    else:
        args = [str(parent.output), *command_line(params, keys)]
        run = partial(make, verb, parent.output, config, train, name, **switches)
    output = students / name  # every variant of a teacher and task lies in one folder (variant.derived_dir)
    return Step(verb, name, [*args, "--name", name], output, _digest(verb, params, parent.hash), run, parent=source)


def _section(recipe: dict, verb: str, path: Path) -> dict | None:
    section = recipe.get(verb)
    if section is not None and not isinstance(section, dict):
        raise UserError(f"recipe {path}: [{verb}] must be a table")
    return section


def plan(path: Path, workspace: Path, adopt: bool = False, keep_teacher: bool = False) -> Plan:
    """Resolve every stage's settings, output folder and hash, and whether it can be skipped.

    Every value is checked here, as its flag would be, so a bad one fails before anything runs. With
    `adopt`, an output that exists but carries no recipe stamp (made by hand with the same commands)
    counts as this stage's result instead of being made again. With `keep_teacher`, an existing teacher is
    taken as it is, whatever made it, and is not stamped: the stages build on the teacher the workspace
    has (`compress search` does so; `compress run --keep-teacher`), and their hashes follow that teacher's
    record, so a teacher fine-tuned again has its students made again.
    """
    recipe = load(path)
    from compress.stages.bench import parse_shapes

    teacher, task, task_written = _teacher_step(recipe, path, workspace, keep_teacher)
    students = workspace / "students" / teacher.name / teacher.output.name
    steps = {"teacher": teacher}
    previous = "teacher"
    for i, stage in enumerate(recipe.get("stages", []), start=1):
        step = _stage_step(stage, f"recipe {path} stage {i}", steps, previous, task, task_written, workspace,
                           students)
        steps[step.name] = step
        previous = step.name
    order = list(steps.values())
    # A step is skipped only if it and everything it builds on are unchanged.
    for step in order:
        stamp = _stamped(step.output)
        exists = (step.output / META_FILE).is_file()
        unchanged = stamp == step.hash or (adopt and stamp is None and exists) or step.kept
        step.skip = unchanged and (step.parent is None or steps[step.parent].skip)
    result = Plan(recipe=path, steps=order)
    bench, report = _section(recipe, "bench", path), _section(recipe, "report", path)
    if bench is not None:  # its values too, so a bad shape fails before the first stage runs
        keys = table_keys(BenchConfig)
        check_keys(bench, list(keys), f"recipe {path} [bench]")
        result.bench = from_table(BenchConfig, bench, keys, f"recipe {path} [bench]")
        parse_shapes(result.bench.shapes)
    if report is not None:
        result.report = _report_section(report, teacher, workspace, path)
    return result


REPORT_KEYS = ("task", "teacher", "out")


def _report_section(report: dict, teacher: Step, workspace: Path, path: Path) -> dict:
    """The [report] table as render's arguments: this recipe's teacher and task unless it names others, and an
    `out` that stays inside the workspace the recipe runs in."""
    where = f"recipe {path} [report]"
    check_keys(report, list(REPORT_KEYS), where)
    for key, value in report.items():
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: '{key}' takes one value, not {value!r}")
    chosen = {"teacher": teacher.name, "task": teacher.output.name, "out": None,
              **{key: str(value) for key, value in report.items()}}
    if chosen["out"] is not None:
        out = Path(chosen["out"])
        chosen["out"] = inside(workspace, out if out.is_absolute() else workspace / out)
        if out.suffix.lower() not in (".html", ".htm"):
            raise UserError(f"{where}: out {str(out)!r} is not an .html file")
    return chosen


def execute(plan: Plan, workspace: Path, dry_run: bool = False, log=say) -> list[Variant]:
    """Print a recipe's plan, then run what it does not skip, bench and report as it asks; returns the
    variants of its steps (none on a dry run)."""
    path = plan.recipe
    log(f"recipe {path}:")
    for step in plan.steps:
        log(f"  {step.describe()}")
    if plan.bench is not None:
        log("  then export and bench what ran or lacks a measured shape" + (", then report" if plan.report is not None else ""))
    if dry_run:
        return []
    for step in plan.steps:
        if not step.skip:
            force = step.output.exists()  # a changed stage replaces its old output
            log(f"$ compress {step.verb} {' '.join(step.args + (['--force'] if force else []))}")
            step.run(force, log)
        stamp(step, path)  # adopted outputs get the stamp; stamped ones keep theirs
    variants = [Variant.load(step.output) for step in plan.steps]
    if plan.bench is not None:
        from compress.stages.bench import measured, parse_shapes

        bench = plan.bench
        shapes = parse_shapes(bench.shapes)
        targets = [v for v, step in zip(variants, plan.steps)
                   if not step.skip or not measured(v, shapes, bench.threads, bench.device)]
        for variant in targets:
            ensure_export(variant, log)
        if targets:
            bench_variants([v.path for v in targets], bench, workspace, log)
    if plan.report is not None:
        write_report(workspace, plan.report["task"], plan.report["teacher"], plan.report["out"], log)
    return variants


def stamp(step: Step, recipe: Path) -> None:
    if step.kept:
        return
    variant = Variant.load(step.output)
    if (variant.recipe_stamp or {}).get("hash") != step.hash:
        variant.stamp_recipe({"hash": step.hash, "file": str(recipe), "stage": step.verb})
