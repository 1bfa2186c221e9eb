"""`compress run RECIPE.toml`: the whole chain from one file, skipping what has not changed.

A recipe names a teacher and a task, then stages in order. Each stage starts from the one
before it, or from the stage named in its `from` ("teacher" for the teacher). Every key of a
stage is that verb's command-line flag (`recover-epochs = 1` is `--recover-epochs 1`), so the
recipe and the CLI share one set of options, defaults and checks.

A stage is skipped when its output exists and was made from the same parent, parameters and data:
a hash of those is stamped into each output's recipe.json. A stage killed mid-training resumes
when the recipe runs again (its `.partial` folder holds the checkpoints).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import click
import tomllib

from compress.errors import UserError
from compress.variant import Variant
from compress.workspace import META_FILE, check_name, inside, write_text

STAGE_VERBS = ("distill", "prune", "layerdrop", "share", "quantize")
TASK_KEYS = ("task", "data-dir", "text-column", "label-column", "num-labels")


@dataclass
class Step:
    verb: str
    name: str
    args: list[str]  # the command line after the verb
    output: Path
    hash: str
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
    bench: dict | None = None
    report: dict | None = None


def demo_recipe() -> Path:
    return preset_recipe("demo")


PRESETS = ("demo", "small-data")  # the recipes that ship in compress/recipes/


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


RECIPE_DECIDES = ("--help", "--force", "--name")  # a recipe names its outputs and decides what to replace


def flags(command: click.Command, params: dict, where: str) -> list[str]:
    """Turn {key: value} into that command's flags, refusing keys it does not have or that the recipe sets."""
    options = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    args = []
    for key, value in params.items():
        flag = f"--{key}"
        if flag not in options or flag in RECIPE_DECIDES:
            known = sorted(o[2:] for o in options if o.startswith("--") and o not in RECIPE_DECIDES)
            raise UserError(f"{where}: unknown parameter '{key}' (choose from {', '.join(known)})")
        if options[flag].is_flag:
            if not isinstance(value, bool):
                raise UserError(f"{where}: '{key}' is a switch: give true or false, not {value!r}")
            args += [flag] if value else []
        elif isinstance(value, (dict, list)):
            raise UserError(f"{where}: '{key}' takes one value, not {value!r}")
        else:
            args += [flag, str(value)]
    return args


def _stamped(output: Path) -> str | None:
    try:
        return (Variant.load(output).recipe_stamp or {}).get("hash")
    except UserError:
        return None


def plan(path: Path, workspace: Path, commands: dict[str, click.Command], adopt: bool = False,
         keep_teacher: bool = False) -> Plan:
    """Resolve every stage's command line, output folder and hash, and whether it can be skipped.

    With `adopt`, an output that exists but carries no recipe stamp (made by hand with the same
    commands) counts as this stage's result instead of being made again. With `keep_teacher`, an
    existing teacher is taken as it is, whatever made it, and is not stamped: the stages build on the
    teacher the workspace has (`compress search` does so; `compress run --keep-teacher`), and their
    hashes follow that teacher's record, so a teacher fine-tuned again has its students made again.
    """
    from compress.tasks import load_task
    from compress.teacher import default_name as teacher_default
    from compress.teacher import teacher_dir

    recipe = load(path)
    result = Plan(recipe=path)
    teacher = dict(recipe["teacher"])
    teacher_name = check_name(teacher.pop("name", None) or teacher_default(str(teacher["base"])),
                              f"recipe {path} [teacher] name")
    task_params = {k: teacher[k] for k in TASK_KEYS if k in teacher}
    args = [*flags(commands["teacher"], teacher, f"recipe {path} [teacher]"), "--name", teacher_name]
    with commands["teacher"].make_context("teacher", list(args)) as ctx:
        options = ctx.params  # the teacher's flags, parsed and checked as the CLI does
    task = load_task(options["task"], options["data_dir"], options["text_column"], options["label_column"],
                     options["num_labels"])
    output = teacher_dir(workspace, teacher_name, task.name)
    students = workspace / "students" / teacher_name / task.name
    digest = _digest("teacher", recipe["teacher"], task.fingerprint)  # as written, name included
    kept = keep_teacher and (output / META_FILE).is_file()
    if kept and _stamped(output) != digest:  # not this recipe's teacher as it made it: the stages follow this
        # very fine-tune (one made again, even from the same table, has them made again) and this data
        digest = _digest("kept teacher", Variant.load(output).made, task.fingerprint)
    steps = {"teacher": Step("teacher", teacher_name, args, output, digest, kept=kept)}
    order = [steps["teacher"]]
    previous = "teacher"

    for i, stage in enumerate(recipe.get("stages", []), start=1):
        where = f"recipe {path} stage {i}"
        if not isinstance(stage, dict):
            raise UserError(f"{where}: a stage is a table ([[stages]] with verb = ...), not {stage!r}")
        if stage.get("verb") not in STAGE_VERBS:
            raise UserError(f"{where}: verb must be one of {', '.join(STAGE_VERBS)}, not {stage.get('verb')!r}")
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
        parent = steps[source]
        if verb == "distill":
            if source != "teacher":
                raise UserError(f"{where}: distill starts from the teacher, not from '{source}'")
            args = ["--teacher", teacher_name, *flags(commands[verb], {**task_params, **params}, where)]
        else:
            args = [str(parent.output), *flags(commands[verb], params, where)]
        output = students / name  # every variant of a teacher and task lies in one folder (variant.derived_dir)
        steps[name] = Step(verb, name, [*args, "--name", name], output, _digest(verb, params, parent.hash),
                           parent=source)
        order.append(steps[name])
        previous = name

    for step in order:  # parse every command line now: a bad value fails before anything runs
        with commands[step.verb].make_context(step.verb, list(step.args)):
            pass
    # A step is skipped only if it and everything it builds on are unchanged.
    for step in order:
        stamp = _stamped(step.output)
        exists = (step.output / META_FILE).is_file()
        unchanged = stamp == step.hash or (adopt and stamp is None and exists) or step.kept
        step.skip = unchanged and (step.parent is None or steps[step.parent].skip)
    result.steps = order
    result.bench = recipe.get("bench")
    result.report = recipe.get("report")
    for verb, section in (("bench", result.bench), ("report", result.report)):
        if section is not None:  # their values too, so a bad shape fails before the first stage runs
            if not isinstance(section, dict):
                raise UserError(f"recipe {path}: [{verb}] must be a table")
            with commands[verb].make_context(verb, flags(commands[verb], section, f"recipe {path} [{verb}]")):
                pass
    if result.report is not None and "out" in result.report:  # a recipe's report stays in the workspace it runs in
        out = Path(str(result.report["out"]))
        result.report = {**result.report, "out": str(inside(workspace, out if out.is_absolute() else workspace / out))}
        if out.suffix.lower() not in (".html", ".htm"):
            raise UserError(f"recipe {path} [report]: out {str(out)!r} is not an .html file")
    if result.bench is not None and "shapes" in result.bench:
        from compress.bench import parse_shapes

        parse_shapes(str(result.bench["shapes"]))
    return result


def stamp(step: Step, recipe: Path) -> None:
    if step.kept:
        return
    variant = Variant.load(step.output)
    if (variant.recipe_stamp or {}).get("hash") != step.hash:
        variant.stamp_recipe({"hash": step.hash, "file": str(recipe), "stage": step.verb})
