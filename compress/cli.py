"""The command line: one verb per stage (those that make a variant from another built from compress.stages' table),
each a thin layer over the function that runs it; `compress run` and `search` run stages without it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from compress import stages
from compress.configs import (
    KD,
    MAX_EPOCHS,
    RECOVERY_TRAINING,
    BenchConfig,
    ExportConfig,
    SearchConfig,
    TaskConfig,
    TrainConfig,
    cli_options,
    finite,
    take,
)
from compress.errors import UserError, first_line
from compress.pipeline.recipe import PRESETS
from compress.stages import RECOVERY, TRAINING

DEFAULT_BASE = "minilm-l6"


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


task_options = cli_options(TaskConfig)  # the flags every verb that reads task data shares


force_option = click.option(
    "--force", is_flag=True, help="Replace the output if it exists (only a folder compress made); training starts afresh.")


def training_options(recovery_flag: str | None = None):
    """TrainConfig's flags. The stages that shrink a variant (`recovery_flag` names their epochs
    flag: --recover-epochs, where 0 means none, or --epochs) train on RECOVERY_TRAINING's schedule at
    the variant's own max length, so the teacher's cached soft targets still apply."""
    defaults = RECOVERY_TRAINING if recovery_flag else {}

    def decorate(fn):
        fn = cli_options(TrainConfig, only=RECOVERY if recovery_flag else TRAINING, **defaults)(force_option(fn))
        if recovery_flag == "recover-epochs":
            return click.option(f"--{recovery_flag}", "epochs", type=click.FloatRange(0, MAX_EPOCHS),
                                default=defaults["epochs"], callback=finite,
                                help="Epochs of KD from the teacher afterwards (fractions allowed; 0: none).")(fn)
        return cli_options(TrainConfig, only=("epochs",), **defaults)(fn) if recovery_flag else fn

    return decorate


def task_of(params: dict) -> TaskConfig:
    return take(TaskConfig, params)


@cli.command()
@click.option("--base", default=DEFAULT_BASE,
              help="bert-base, minilm-l6, mpnet-base, a local model folder or a hub id.")
@task_options
@click.option("--name", help="Teacher name in the workspace [default: the base's name].")
@training_options()
@click.pass_obj
def teacher(obj, base, name, force, **params):
    """Fine-tune a teacher and cache its soft targets in teachers/<name>/<task>/."""
    stages.make_teacher(obj["workspace"], base, task_of(params), TrainConfig(**params), name, force)


teacher_option = click.option(
    "--teacher", "teacher_name", default=DEFAULT_BASE,
    help="A teacher in the workspace; if it has no fine-tuned copy for the task, one is made first (with these "
         "training flags) from the base of that name.")


def stage_command(verb: str, stage: stages.Stage) -> None:
    """The verb of one row of the stage table: its input (VARIANT, or --teacher and the task's flags), its
    settings' flags (a KD flag not typed stays None: the input's setting applies), its switches, --name,
    and --force with (for the stages that train) TrainConfig's flags."""

    def command(obj, name, force, variant=None, teacher_name=None, **params):
        switches = {key.replace("-", "_"): params.pop(key.replace("-", "_")) for key in stage.switches}
        task = task_of(params) if stage.takes == "teacher" else None
        config = take(stage.config, params)
        train = TrainConfig(**params) if stage.epochs_key else None
        stages.make(verb, teacher_name if stage.takes == "teacher" else variant, config, train, name, force,
                    workspace=obj["workspace"], task=task, **switches)

    command.__doc__ = stage.help
    fn = training_options(stage.epochs_key if stage.takes == "variant" else None)(command) if stage.epochs_key \
        else force_option(command)
    fn = click.option("--name", help=f"Variant name [default: {stage.name_help}].")(fn)
    for switch, help_text in reversed(stage.switches.items()):
        fn = click.option(f"--{switch}", is_flag=True, help=help_text)(fn)
    fn = cli_options(stage.config, inherits=stage.takes == "variant")(fn)
    if stage.takes == "teacher":
        fn = teacher_option(task_options(fn))
    else:
        fn = click.argument("variant", type=click.Path(file_okay=False, path_type=Path))(fn)
    cli.command(verb)(click.pass_obj(fn))


for _verb, _stage in stages.STAGES.items():
    stage_command(_verb, _stage)


def variant_argument(fn):
    return click.argument("variant", type=click.Path(file_okay=False, path_type=Path))(fn)


@cli.command("export")
@variant_argument
@cli_options(ExportConfig)
def export_command(variant, **params):
    """Export VARIANT to ONNX in VARIANT/onnx/, refused unless it matches PyTorch (|logit diff| <= 1e-4)."""
    stages.export_variant(variant, ExportConfig(**params))


@cli.command("bench")
@click.argument("variants", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@cli_options(BenchConfig)
@click.pass_obj
def bench_command(obj, variants, **params):
    """Measure latency (ORT and PyTorch) and artifact accuracy of VARIANTS [default: every variant]."""
    stages.bench_variants(list(variants), BenchConfig(**params), obj["workspace"])


@cli.command("eval")
@variant_argument
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A labelled file in the task's format (GLUE's columns, or your files' --text-column and "
                   "--label-column): a test split kept apart from dev.")
def eval_command(variant, data):
    """Score VARIANT (its ONNX artifact where it has one, else PyTorch) on --data with the task's metrics; the
    result goes to VARIANT/eval/ and into the report."""
    from compress.stages.evaluation import evaluate_file

    result = evaluate_file(stages.load_variant(variant), data)
    click.echo(f"{variant} on {data} ({result['rows']} rows, {result['scored_by']}): "
               + ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()))


@cli.command("report")
@click.option("--task", help="Task name [default: the only task in the workspace].")
@click.option("--teacher", help="Teacher name [default: every teacher of the task].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="[default: reports/<teacher>-<task>.html]")
@click.pass_obj
def report_command(obj, task, teacher, out):
    """Write one self-contained HTML page comparing every variant: plots, table, machines, commands."""
    stages.write_report(obj["workspace"], task, teacher, out)


@cli.command("run")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan (what runs, what is skipped) and stop.")
@click.option("--adopt", is_flag=True,
              help="Take outputs that exist without a recipe stamp (made by hand) as this recipe's, not remake them.")
@click.option("--keep-teacher", is_flag=True,
              help="Build on the workspace's fine-tuned teacher as it is, even if another recipe or other flags made it.")
@click.pass_obj
def run_command(obj, recipe, dry_run, adopt, keep_teacher):
    """Run RECIPE.toml, the whole chain [default: the built-in demo]; unchanged stages are skipped."""
    from compress.pipeline import recipe as recipes

    plan = recipes.plan(recipe or recipes.demo_recipe(), obj["workspace"], adopt, keep_teacher)
    recipes.execute(plan, obj["workspace"], dry_run)


def renamed(old: str, new: str, meaning: str):
    """A flag that was renamed: refused in one line that names the new one."""
    def refuse(ctx, param, value):
        if value is not None:
            raise click.UsageError(f"search {old} is now {new} ({meaning})")

    return click.option(old, f"renamed_{old.strip('-')}", expose_value=False, hidden=True, callback=refuse)


@cli.command("search")
@renamed("--heads", "--keep-heads", "the fraction of each layer's heads kept, where prune's --heads is the fraction "
         "removed")
@renamed("--ffn", "--keep-ffn", "the fraction of each layer's FFN neurons kept")
@teacher_option
@task_options
@cli_options(SearchConfig)
@cli_options(KD)
@cli_options(TrainConfig, only=TRAINING)
@click.pass_obj
def search_command(obj, teacher_name, **params):
    """The most accurate student under --budget-ms on this machine: measure a latency table, rank what fits by a
    cheap proxy, train the best --trials, write the winner as a recipe (search-<task>-<budget>ms.toml)."""
    from compress.variant import command_line

    task, config, kd = task_of(params), take(SearchConfig, params), take(KD, params)
    stages.search(obj["workspace"], teacher_name, task, config, kd, TrainConfig(**params), command_line())


@cli.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(PRESETS), default="demo",
              help="The recipe to start from: demo (minutes on a laptop CPU), small-data (the chain that keeps "
                   "97% of the teacher on a few thousand examples: TinyBERT-class distillation, gradual pruning, QAT), "
                   "or embeddings (a sentence-transformers model distilled, pruned and int8, scored on STS-B).")
@click.pass_obj
def init_command(obj, directory, preset):
    """Make a workspace in DIRECTORY [default: --workspace, else here]: teachers/, students/, reports/ and
    recipe.toml (a preset, to edit)."""
    from compress.pipeline.recipe import init_workspace

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
