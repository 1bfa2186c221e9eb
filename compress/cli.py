"""The command line: one verb per stage, each a thin layer over that stage's entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from compress.configs import (
    KD,
    LABEL_COLUMN,
    MAX_EPOCHS,
    MAX_LABELS,
    RECOVERY_TRAINING,
    BenchConfig,
    DistillConfig,
    ExportConfig,
    LayerDropConfig,
    PruneConfig,
    QuantizeConfig,
    SearchConfig,
    ShareConfig,
    TrainConfig,
    cli_options,
    finite,
    take,
)
from compress.errors import UserError, first_line
from compress.recipe import PRESETS

DEFAULT_BASE, DEFAULT_TASK = "minilm-l6", "rotten-tomatoes"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: os.environ.get("COMPRESS_WORKSPACE", "."),
              help="Folder holding teachers/, students/ and reports/ (env COMPRESS_WORKSPACE).")
@click.option("--verbose", is_flag=True,
              help="Show every library warning and log line (hidden by default: known harmless).")
@click.pass_context
def cli(ctx, workspace, verbose):
    """compress: fine-tune a teacher, distil and shrink it, export, measure and report."""
    if verbose:
        from transformers.utils import logging as hf_logging

        from compress import console

        console.verbose = True
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
    ctx.obj = {"workspace": workspace}


def task_options(fn):
    """The flags every verb that reads task data shares."""
    for option in reversed([
        click.option("--task", default=DEFAULT_TASK,
                     help="sst2, mrpc, cola, rotten-tomatoes, or a CSV/TSV/JSONL file or folder (train.* and dev.*)."),
        click.option("--data-dir", envvar="COMPRESS_DATA", help="GLUE folder holding SST-2/ and MRPC/ (env COMPRESS_DATA)."),
        click.option("--text-column", help="For your own files: the text column, or two as a,b for pairs."),
        click.option("--label-column", default=LABEL_COLUMN, help="For your own files: the integer label column."),
        click.option("--num-labels", type=click.IntRange(2, MAX_LABELS),
                     help="Classes the task has, when training lacks some [default: the labels seen, 0..K-1]."),
    ]):
        fn = option(fn)
    return fn


force_option = click.option(
    "--force", is_flag=True, help="Replace the output if it exists (only a folder compress made); training starts afresh.")


def training_options(recovery_flag: str | None = None):
    """TrainConfig's flags. The stages that shrink a variant (`recovery_flag` names their epochs
    flag: --recover-epochs, where 0 means none, or --epochs) train on RECOVERY_TRAINING's schedule at
    the variant's own max length, so the teacher's cached soft targets still apply."""
    defaults = RECOVERY_TRAINING if recovery_flag else {}
    names = ("lr", "batch_size", "seed", "precision") if recovery_flag else ("epochs", "lr", "batch_size", "max_length",
                                                                             "seed", "precision")

    def decorate(fn):
        fn = cli_options(TrainConfig, only=names, **defaults)(force_option(fn))
        if recovery_flag == "--recover-epochs":
            return click.option(recovery_flag, "epochs", type=click.FloatRange(0, MAX_EPOCHS),
                                default=defaults["epochs"], callback=finite,
                                help="Epochs of KD from the teacher afterwards (fractions allowed; 0: none).")(fn)
        return cli_options(TrainConfig, only=("epochs",), **defaults)(fn) if recovery_flag else fn

    return decorate


def report_existing(path: Path) -> bool:
    """Say so when a stage's output is already there (making it again needs --force)."""
    from compress.variant import Variant

    if not path.exists():
        return False
    if not (path / "variant.json").is_file():
        raise UserError(f"{path} exists and is not a variant compress made: choose another --name")
    variant = Variant.load(path)
    click.echo(f"{path} exists (dev {variant.record.metrics['dev']}); --force makes it again")
    return True


def already_made(parent, name: str, force: bool) -> bool:
    """Whether `name`, made from `parent`, exists and is left as it is (no --force)."""
    from compress.variant import derived_dir

    return not force and report_existing(derived_dir(parent, name))


def summary(kind: str, variant) -> str:
    """A stage's one result line."""
    metrics, train = variant.record.metrics, variant.record.extra.get("train")
    dev = ", ".join(f"{k} {v:.4f}" for k, v in metrics["dev"].items())
    before = metrics.get("dev_before_training")
    return (f"{kind} {variant.path}: dev {dev}"
            + (f" (before training: {variant.record.kind.headline} {before[variant.record.kind.headline]:.4f})"
               if before else "")
            + (f", {train['wall_s']:.0f} s training" if train else "")
            + (f", retention {metrics['retention']:.3f}" if metrics.get("retention") is not None else ""))


@cli.command()
@click.option("--base", default=DEFAULT_BASE,
              help="bert-base, minilm-l6, mpnet-base, a local model folder or a hub id.")
@task_options
@click.option("--name", help="Teacher name in the workspace [default: the base's name].")
@training_options()
@click.pass_obj
def teacher(obj, base, task, data_dir, text_column, label_column, num_labels, name, force, **training):
    """Fine-tune a teacher and cache its soft targets in teachers/<name>/<task>/."""
    from compress import teacher as stage
    from compress.tasks import load_task
    from compress.workspace import check_name

    name = check_name(stage.default_name(base) if name is None else name,
                      "the teacher's name (from --base; give --name)" if name is None else "--name")
    data = load_task(task, data_dir, text_column, label_column, num_labels)
    if not force and report_existing(stage.teacher_dir(obj["workspace"], name, data.name)):
        return
    variant = stage.fine_tune(base, data, obj["workspace"], TrainConfig(**training), name, replace=force)
    click.echo(summary("teacher", variant))


def teacher_for(workspace: Path, teacher_name: str, data, config: TrainConfig):
    """The workspace's teacher of that name fine-tuned on `data`'s task, fine-tuned first if there is none."""
    from compress import teacher as teachers
    from compress.variant import Variant
    from compress.workspace import check_name

    check_name(teacher_name, "--teacher")
    found = teachers.teacher_dir(workspace, teacher_name, data.name)
    if found.exists():
        return Variant.load(found)
    click.echo(f"teacher {teacher_name} has not been fine-tuned on {data.name} yet; fine-tuning it first")
    try:
        return teachers.fine_tune(teacher_name, data, workspace, config, teacher_name)
    except UserError as exc:
        raise UserError(f"no teacher '{teacher_name}' for {data.name} in {found.parent.parent}, "
                        f"and none can be fine-tuned: {exc}") from None


teacher_option = click.option(
    "--teacher", "teacher_name", default=DEFAULT_BASE,
    help="A teacher in the workspace; if it has no fine-tuned copy for the task, one is made first (with these "
         "training flags) from the base of that name.")


@cli.command()
@teacher_option
@task_options
@cli_options(DistillConfig)
@click.option("--reuse-teacher", is_flag=True,
              help="Use the workspace's teacher even if it was fine-tuned on other data under this task's name.")
@click.option("--name", help="Variant name [default: L<N>-nokd, or L<N>-kd then -<loss> for each intermediate "
              "loss, -2phase, -aug<N>].")
@training_options()
@click.pass_obj
def distill(obj, teacher_name, task, data_dir, text_column, label_column, num_labels, reuse_teacher, name, force,
            **params):
    """Distil a teacher into an N-layer student in students/<teacher>/<task>/<name>/."""
    from compress import distill as stage
    from compress.tasks import load_task
    from compress.workspace import check_name

    if name is not None:
        check_name(name)
    data = load_task(task, data_dir, text_column, label_column, num_labels)
    distill_config = take(DistillConfig, params)
    config = TrainConfig(**params)
    teacher_variant = teacher_for(obj["workspace"], teacher_name, data, config)
    name = name or stage.default_name(distill_config)
    if already_made(teacher_variant, name, force):
        return
    variant = stage.distill(teacher_variant, data, distill_config, config, name, replace=force,
                            reuse_teacher=reuse_teacher)
    click.echo(summary("student", variant))


def variant_argument(fn):
    return click.argument("variant", type=click.Path(file_okay=False, path_type=Path))(fn)


def load_variant(path: Path):
    from compress.variant import Variant

    if not path.is_dir():
        raise UserError(f"no variant folder at {path}")
    return Variant.load(path)


def name_option(default: str):
    return click.option("--name", help=f"Variant name [default: {default}].")


def variant_stage(verb: str, settings, name_default: str, epochs_flag: str | None = None):
    """A verb that makes one variant from VARIANT: the argument, its settings' flags (a KD flag not
    typed stays None: VARIANT's setting applies), --name, and --force with (for the stages that
    train) TrainConfig's flags."""

    def decorate(fn):
        fn = training_options(epochs_flag)(fn) if epochs_flag else force_option(fn)
        return cli.command(verb)(variant_argument(cli_options(settings, inherits=True)(name_option(name_default)(fn))))

    return decorate


def start(variant: Path, config_class, default_name, name: str | None, force: bool, params: dict):
    """A stage's input, settings and output name; None when the output exists and stays (no --force)."""
    parent, config = load_variant(variant), take(config_class, params)
    name = default_name(parent, config) if name is None else name
    return None if already_made(parent, name, force) else (parent, config, name)


@variant_stage("prune", PruneConfig, "<variant>-prune-h<%>n<%>-<importance>[-s<steps>]", "--recover-epochs")
def prune_command(variant, name, force, **params):
    """Remove attention heads, FFN neurons or whole layers of VARIANT physically, then recover it with KD
    (the KD settings VARIANT was trained with, unless a flag says otherwise)."""
    from compress import prune as stage

    if started := start(variant, PruneConfig, stage.default_name, name, force, params):
        parent, config, name = started
        click.echo(summary("pruned", stage.prune(parent, config, TrainConfig(**params), name, replace=force)))


@variant_stage("layerdrop", LayerDropConfig, "<variant>-ld<rate%>-keep-<keep>", "--epochs")
@click.option("--no-baseline", is_flag=True, help="Skip the baseline: the same cut of VARIANT, recovered by KD.")
def layerdrop_command(variant, no_baseline, name, force, **params):
    """Distil VARIANT with LayerDrop, keep a subset of its layers; and the baseline cut without LayerDrop
    (both with the KD settings VARIANT was trained with, unless a flag says otherwise)."""
    from compress import layerdrop as stage

    if started := start(variant, LayerDropConfig, stage.default_name, name, force, params):
        parent, config, name = started
        for made in stage.layerdrop(parent, config, TrainConfig(**params), name, baseline=not no_baseline,
                                    replace=force):
            click.echo(summary(made.record.stage, made))


@variant_stage("share", ShareConfig, "<variant>-share-g<G>-<what>", "--recover-epochs")
def share_command(variant, name, force, **params):
    """Tie VARIANT's layers in groups (ALBERT-style), then recover with KD (VARIANT's KD settings, unless a flag
    says otherwise); cuts unique parameters, not FLOPs."""
    from compress import share as stage

    if started := start(variant, ShareConfig, stage.default_name, name, force, params):
        parent, config, name = started
        shared = stage.share(parent, config, TrainConfig(**params), name, replace=force)
        click.echo(summary("shared", shared) + f", {shared.record.unique_parameters:,} unique of "
                   f"{shared.record.parameters:,} parameters")


@cli.command("export")
@variant_argument
@cli_options(ExportConfig)
def export_command(variant, opset, optimize):
    """Export VARIANT to ONNX in VARIANT/onnx/, refused unless it matches PyTorch (|logit diff| <= 1e-4)."""
    from compress.export import export

    result = export(load_variant(variant), opset=opset, optimize=optimize).export
    click.echo(f"exported {variant}/onnx/model.onnx ({result['size_mb']} MB, {graph_kept(result)}); "
               f"parity: max |logit diff| {result['parity']['max_abs_diff']:.1e}"
               + (f", agreement {result['parity']['agreement']:.4f}" if "agreement" in result["parity"] else ""))


def graph_kept(export_record: dict) -> str:
    """Which graph an export kept, and why, in words."""
    if export_record["optimized"]:
        fused = ", ".join(f"{n} {op}" for op, n in export_record.get("fused_ops", {}).items())
        return f"optimized graph, fused: {fused or 'nothing'}"
    if "fused_ops" in export_record:  # the optimizer ran and lost the timing
        return "plain graph (the optimizer's graph was not faster)"
    return "plain graph (--no-optimize)"


@variant_stage("quantize", QuantizeConfig, "<variant>-int8-<mode>[-ffn-fp32][-pc], -fp16 or -torch-int8")
def quantize_command(variant, name, force, **params):
    """Quantize VARIANT into a new variant beside it; accuracy is measured on the quantized artifact. The KD
    flags apply to --qat-epochs, which otherwise trains with the KD settings VARIANT was trained with."""
    from compress.quantize import default_name, quantize

    if started := start(variant, QuantizeConfig, default_name, name, force, params):
        parent, config, name = started
        result = quantize(parent, config, name, replace=force)
        record = result.record
        metric, score = record.headline
        click.echo(f"quantized {result.path}: dev {metric} {score:.4f} "
                   f"({-record.metrics['drop_points']:+.2f} points), {record.size_mb} MB")


@cli.command("bench")
@click.argument("variants", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@cli_options(BenchConfig)
@click.pass_obj
def bench_command(obj, variants, shapes, threads, device, runs):
    """Measure latency (ORT and PyTorch) and artifact accuracy of VARIANTS [default: every variant]."""
    from compress.bench import Unmeasurable, bench, key_here, parse_shapes
    from compress.variant import find_variants

    parsed = parse_shapes(shapes)
    targets = [load_variant(v) for v in variants] or find_variants(obj["workspace"])
    if not targets:
        raise UserError(f"no variants in {obj['workspace']} to measure")
    measured = 0
    for variant in targets:
        try:
            result = bench(variant, parsed, threads, device, runs)
        except Unmeasurable as exc:
            click.echo(f"skipped {exc}")
            continue
        measured += 1
        entry = result.benches[key_here(threads, device)]
        timings = [(shape, runtime, t["p50"]) for runtime, by_shape in entry["latency_ms"].items()
                   for shape, t in by_shape.items()]
        if device == "cuda":  # six PyTorch runtimes and maybe ORT's: the fastest per shape
            timings = [min((t for t in timings if t[0] == shape), key=lambda t: t[2]) for shape in dict.fromkeys(
                t[0] for t in timings)]
        metric = variant.record.kind.headline
        click.echo(f"{variant.path}: {metric} {entry['dev'][metric]:.4f}; "
                   + "; ".join(f"{runtime} {shape} {p50:.2f} ms" for shape, runtime, p50 in timings))
    if not measured:
        raise UserError(f"nothing could be measured on {device}")


@cli.command("eval")
@variant_argument
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A labelled file in the task's format (GLUE's columns, or your files' --text-column and "
                   "--label-column): a test split kept apart from dev.")
def eval_command(variant, data):
    """Score VARIANT (its ONNX artifact where it has one, else PyTorch) on --data with the task's metrics; the
    result goes to VARIANT/eval/ and into the report."""
    from compress.evaluation import evaluate_file

    result = evaluate_file(load_variant(variant), data)
    click.echo(f"{variant} on {data} ({result['rows']} rows, {result['scored_by']}): "
               + ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()))


@cli.command("report")
@click.option("--task", help="Task name [default: the only task in the workspace].")
@click.option("--teacher", help="Teacher name [default: every teacher of the task].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="[default: reports/<teacher>-<task>.html]")
@click.pass_obj
def report_command(obj, task, teacher, out):
    """Write one self-contained HTML page comparing every variant: plots, table, machines, commands."""
    from compress.report import render

    click.echo(f"report: {render(obj['workspace'], task, teacher, out)}")


@cli.command("run")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan (what runs, what is skipped) and stop.")
@click.option("--adopt", is_flag=True,
              help="Take outputs that exist without a recipe stamp (made by hand) as this recipe's, not remake them.")
@click.option("--keep-teacher", is_flag=True,
              help="Build on the workspace's fine-tuned teacher as it is, even if another recipe or other flags made it.")
@click.pass_context
def run_command(ctx, recipe, dry_run, adopt, keep_teacher):
    """Run RECIPE.toml, the whole chain [default: the built-in demo]; unchanged stages are skipped."""
    from compress import recipe as recipes

    path = recipe or recipes.demo_recipe()
    plan = recipes.plan(path, ctx.obj["workspace"], cli.commands, adopt, keep_teacher)
    execute(plan, ctx.obj, dry_run)


def execute(plan, obj: dict, dry_run: bool = False) -> None:
    """Print a recipe's plan, then run what it does not skip, bench and report as it asks."""
    from compress import recipe as recipes
    from compress.variant import Variant

    path = plan.recipe
    click.echo(f"recipe {path}:")
    for step in plan.steps:
        click.echo(f"  {step.describe()}")
    if plan.bench is not None:
        click.echo("  then export and bench what ran or lacks a measured shape" + (", then report" if plan.report is not None else ""))
    if dry_run:
        return
    for step in plan.steps:
        if step.skip:
            recipes.stamp(step, path)  # adopted outputs get the stamp; stamped ones keep theirs
            continue
        command = cli.commands[step.verb]
        force = ["--force"] if step.output.exists() else []  # a changed stage replaces its old output
        click.echo(f"$ compress {step.verb} {' '.join(step.args + force)}")
        command.main(args=step.args + force, standalone_mode=False, obj=obj)
        recipes.stamp(step, path)
    if plan.bench is not None:
        from compress.bench import measured, parse_shapes

        variants = [Variant.load(step.output) for step in plan.steps]
        shapes = parse_shapes(str(plan.bench.get("shapes", BenchConfig.shapes)))
        threads, device = plan.bench.get("threads"), plan.bench.get("device", BenchConfig.device)
        targets = [v for v, step in zip(variants, plan.steps)
                   if not step.skip or not measured(v, shapes, threads, device)]
        for variant in targets:
            if "artifact" not in variant.record.extra and variant.export is None:
                cli.commands["export"].main(args=[str(variant.path)], standalone_mode=False, obj=obj)
        if targets:
            args = recipes.flags(cli.commands["bench"], plan.bench, "bench")
            cli.commands["bench"].main(args=[*(str(v.path) for v in targets), *args], standalone_mode=False,
                                       obj=obj)
    if plan.report is not None:
        teacher = plan.steps[0]
        args = ["--teacher", teacher.name, "--task", teacher.output.name,
                *recipes.flags(cli.commands["report"], plan.report, "report")]
        cli.commands["report"].main(args=args, standalone_mode=False, obj=obj)


@cli.command("search")
@teacher_option
@task_options
@cli_options(SearchConfig)
@cli_options(KD)
@cli_options(TrainConfig, only=("epochs", "lr", "batch_size", "max_length", "seed", "precision"))
@click.pass_obj
def search_command(obj, teacher_name, task, data_dir, text_column, label_column, num_labels, **params):
    """The most accurate student under --budget-ms on this machine: measure a latency table, rank what fits by a
    cheap proxy, train the best --trials, write the winner as a recipe (search-<task>-<budget>ms.toml)."""
    from compress import recipe as recipes
    from compress import search as stage
    from compress.tasks import load_task
    from compress.variant import command_line

    data = load_task(task, data_dir, text_column, label_column, num_labels)
    config, kd, train = take(SearchConfig, params), take(KD, params), TrainConfig(**params)
    stage.check(config)  # before a teacher may be fine-tuned for it
    teacher_variant = teacher_for(obj["workspace"], teacher_name, data, train)
    typed = {"task": str(Path(task).resolve()) if Path(task).exists() else task,  # the recipe may run elsewhere
             "data-dir": str(Path(data_dir).resolve()) if data_dir else None, "text-column": text_column,
             "label-column": label_column if text_column else None, "num-labels": num_labels}
    task_params = {key: value for key, value in typed.items() if value is not None}

    def run_recipe(path: Path) -> None:
        execute(recipes.plan(path, obj["workspace"], cli.commands, keep_teacher=True), obj)

    result = stage.search(teacher_variant, data, config, train, run_recipe, task_params, command_line(),
                          log=click.echo, kd=kd)
    winner = result["winner"]
    headline = data.kind.headline
    click.echo(f"winner {winner['candidate']}: dev {headline} {winner['dev'][headline]:.4f} "
               f"({winner['drop_points']:.2f} points below the teacher), {winner['measured_p50_ms']:.2f} ms at "
               f"{config.shape} (predicted {winner['predicted_p50_ms']:.2f}); recipe: {result['recipe']}; "
               f"record: reports/{stage.label(data.name, config.budget_ms)}.json")


@cli.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(PRESETS), default="demo",
              help="The recipe to start from: demo (minutes on a laptop CPU), or small-data (the chain that keeps "
                   "97% of the teacher on a few thousand examples: TinyBERT-class distillation, gradual pruning, QAT).")
@click.pass_obj
def init_command(obj, directory, preset):
    """Make a workspace in DIRECTORY [default: --workspace, else here]: teachers/, students/, reports/ and
    recipe.toml (a preset, to edit)."""
    from compress.recipe import init_workspace

    directory = directory or obj["workspace"]
    recipe, written = init_workspace(directory, preset)
    if not written:
        click.echo(f"{recipe} exists; left as it is")
    click.echo(f"workspace ready in {directory}: edit {recipe}, then: compress --workspace {directory} run {recipe}")


@cli.command("list")
@click.pass_obj
def list_command(obj):
    """Every variant in the workspace with its stage, parent, accuracy, size and latency."""
    from compress.variant import parent_path, scan

    variants, broken = scan(obj["workspace"])
    if not variants and not broken:
        raise UserError(f"no variants in {obj['workspace']}")
    rows = [("variant", "stage", "parent", "dev acc.", "params (M)", "unique (M)", "MB", "p50 ms 1x128")]
    for v in variants:
        record = v.record
        latency = "-"
        for entry in v.benches.values():
            for runtime in ("ort-cpu", "torch-cpu"):
                if "1x128" in entry["latency_ms"].get(runtime, {}):
                    latency = f"{entry['latency_ms'][runtime]['1x128']['p50']:.2f} ({runtime.split('-')[0]})"
                    break
            break
        rows.append((
            _workspace_id(v.path, obj["workspace"]), record.stage,
            _workspace_id(parent_path(v), obj["workspace"]) if record.parent else "-",
            f"{record.headline[1]:.4f}",
            f"{record.parameters / 1e6:.1f}" if record.parameters else "-",
            f"{record.unique_parameters / 1e6:.1f}" if record.unique_parameters else "-",
            f"{record.size_mb or 0:.1f}", latency,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for path, reason in broken:
        click.echo(f"{_workspace_id(path, obj['workspace'])}  BROKEN: {reason}")


def _workspace_id(path: Path, workspace: Path) -> str:
    """A variant's path inside the workspace (teachers/<t>/<task>, students/<t>/<task>/<name>)."""
    try:
        return str(path.resolve().relative_to(workspace.resolve()))
    except ValueError:
        return str(path)


def main() -> None:
    """Entry point: bad input ends in one line on stderr and exit code 2, never a traceback."""
    from transformers.utils import logging as hf_logging

    from compress import distributed

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # weight loading and saving bars; training keeps its own
    if not distributed.is_main():  # under torchrun, rank 0 alone speaks (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    try:
        distributed.init()
        cli.main(standalone_mode=False)
    except (UserError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"compress: error: {message}", err=True)
        sys.exit(2)
    except OSError as exc:  # read-only workspace, full disk, permissions: the library's words, one line
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"compress: error: {exc.strerror or first_line(exc)}{where}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.Abort):
        click.echo("compress: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
