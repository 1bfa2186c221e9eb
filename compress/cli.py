"""The command line: one verb per stage, each a thin layer over that stage's entry point."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from compress.errors import UserError

DEFAULT_BASE, DEFAULT_TASK = "minilm-l6", "rotten-tomatoes"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: os.environ.get("COMPRESS_WORKSPACE", "."),
              help="Folder holding teachers/, students/ and reports/ (env COMPRESS_WORKSPACE).")
@click.pass_context
def cli(ctx, workspace):
    """compress: fine-tune a teacher, distil and shrink it, export, measure and report."""
    ctx.obj = {"workspace": workspace}


def task_options(fn):
    """The flags every verb that reads task data shares."""
    for option in reversed([
        click.option("--task", default=DEFAULT_TASK,
                     help="sst2, mrpc, rotten-tomatoes, or a CSV/TSV/JSONL file or folder (train.* and dev.*)."),
        click.option("--data-dir", envvar="COMPRESS_DATA", help="GLUE folder holding SST-2/ and MRPC/ (env COMPRESS_DATA)."),
        click.option("--text-column", help="For your own files: the text column, or two as a,b for pairs."),
        click.option("--label-column", default="label", help="For your own files: the integer label column."),
    ]):
        fn = option(fn)
    return fn


@cli.command()
@click.option("--base", default=DEFAULT_BASE,
              help="bert-base, minilm-l6, mpnet-base, a local model folder or a hub id.")
@task_options
@click.option("--name", help="Teacher name in the workspace [default: the base's name].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=3.0)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-5, help="Peak learning rate (linear warm-up over 10%, then decay).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@click.option("--max-length", type=click.IntRange(min=1), default=128, help="Tokens per example; longer ones are truncated.")
@click.option("--seed", type=int, default=42)
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
              help="auto: bf16 autocast where the CPU or GPU has it, else fp32 (CPU) or fp16 (GPU).")
@click.option("--force", is_flag=True, help="Train again even if this teacher exists.")
@click.pass_obj
def teacher(obj, base, task, data_dir, text_column, label_column, name, epochs, lr, batch_size,
            max_length, seed, precision, force):
    """Fine-tune a teacher and cache its soft targets in teachers/<name>/<task>/."""
    from compress import teacher as stage
    from compress.machine import training_precision
    from compress.tasks import load_task
    from compress.train import TrainConfig
    from compress.variant import Variant

    name = name or stage.default_name(base)
    data = load_task(task, data_dir, text_column, label_column)
    existing = stage.teacher_dir(obj["workspace"], name, data.name)
    if existing.exists() and not force:
        variant = Variant.load(existing)
        click.echo(f"{existing} exists (dev {variant.meta['metrics']['dev']}); --force trains it again")
        return
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
                         precision=training_precision(precision))
    variant = stage.fine_tune(base, data, obj["workspace"], config, name)
    dev = ", ".join(f"{k} {v:.4f}" for k, v in variant.meta["metrics"]["dev"].items())
    click.echo(f"teacher {variant.path}: dev {dev}, {variant.meta['train']['wall_s']:.0f} s")


def main() -> None:
    """Entry point: bad input ends in one line on stderr and exit code 2, never a traceback."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        cli.main(standalone_mode=False)
    except (UserError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"compress: error: {message}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.Abort):
        click.echo("compress: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
