"""Stage 1: fine-tune a teacher on a task and cache its logits on the training set (soft targets).

teachers/<name>/<task>/ holds the best epoch's checkpoint, the tokenizer, variant.json and
soft_targets/. While training, teachers/<name>/.<task>.partial/ holds per-epoch checkpoints;
running the same command again resumes from there (--force starts afresh).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import set_seed

from compress import distributed
from compress.configs import TrainConfig
from compress.data.augment import augmented_rows, with_rows
from compress.data.batches import check_max_length, data_record, encode
from compress.data.tasks import Task
from compress.errors import UserError, as_path, require
from compress.machine import device
from compress.model.checkpoint import load_classifier, load_config, load_tokenizer
from compress.model.registry import BASES, resolve_base
from compress.runtime.inference import evaluate, predict_logits
from compress.training.trainer import best_epoch, train_record, train_resumable
from compress.variant import Variant, save_variant
from compress.workspace import check_name, check_target, clean_stale, inside, own_folder, partial_dir, scratch_path


def teacher_dir(workspace: Path, name: str, task: str) -> Path:
    """teachers/<name>/<task>/ of the workspace; both names must be one safe path component."""
    check_name(name, "teacher name")
    check_name(task, "task name")
    return inside(workspace, workspace / "teachers" / name / task)


def default_name(base: str) -> str:
    return base if base in BASES else Path(base.rstrip("/")).name


def fine_tune(
    base: str, task: Task, workspace: Path, config: TrainConfig, name: str | None = None,
    progress: bool = True, replace: bool = False,
) -> Variant:
    """Fine-tune `base` on `task` and write the teacher variant with its soft targets.

    An existing teacher of that name and task is replaced only with `replace` (--force).
    """
    base = os.fspath(require(base, (str, os.PathLike), "base"))
    require(task, Task, "task")
    require(config, TrainConfig, "config")
    workspace = as_path(workspace, "workspace")
    if not config.epochs:
        raise UserError("--epochs 0: a teacher must be trained; give more epochs")
    name = default_name(base) if name is None else name
    target = teacher_dir(workspace, name, task.name)
    check_target(target, replace)
    base_path = resolve_base(base)
    tokenizer, model_config = load_tokenizer(base_path), load_config(base_path)
    check_max_length(config.max_length, tokenizer, model_config)
    train = encode(task.train, tokenizer, config.max_length)
    dev = encode(task.dev, tokenizer, config.max_length)

    set_seed(config.seed)  # the new classification head's initialisation depends on it
    model = load_classifier(base_path, **task.kind.head(task.num_labels), ignore_mismatched_sizes=True)

    # Everything is validated: only now does the workspace change.
    partial = partial_dir(target)
    run_key = {"base": str(base_path), "task": task.name, "fingerprint": task.fingerprint, **config.as_dict()}
    trained = train_resumable(model, tokenizer, train, dev, config, partial, run_key, task.metrics, progress=progress,
                              fresh=replace, kind=task.kind)
    metrics, _ = evaluate(trained.model, dev, tokenizer, task.metrics, task.kind)
    variant = save_variant(target, trained.model, tokenizer, {
        "name": name,
        "stage": "teacher",
        "parent": None,
        "task": task.name,
        "num_labels": task.num_labels,
        "params": {"base": base, "base_path": str(base_path), **config.as_dict()},
        "data": data_record(task),
        "metrics": {"dev": metrics, "best_epoch": best_epoch(trained.history, task.kind.headline), "history": trained.history},
        "train": train_record(trained, config),
    }, replace=replace)
    soft_targets(variant, task, config.max_length, config.precision, model=trained.model, tokenizer=tokenizer, encoded=train)
    if distributed.is_main():
        shutil.rmtree(partial)
    return variant


def soft_targets_file(teacher: Variant, fingerprint: str, max_length: int) -> Path:
    name = f"train-{fingerprint[:16]}-len{max_length}.safetensors"
    return inside(teacher.workspace, teacher.path / "soft_targets" / name)  # read through no link either


def soft_targets(
    teacher: Variant, task: Task, max_length: int, precision: str = "fp32",
    model=None, tokenizer=None, encoded=None,
) -> torch.Tensor:
    """Teacher logits (not probabilities: T is applied when distilling) for every training row.

    Cached per data fingerprint and max length; a change in either computes them afresh.
    """
    path = soft_targets_file(teacher, task.fingerprint, max_length)
    if path.is_file():
        try:
            return load_file(path)["logits"]
        except (SafetensorError, OSError, KeyError) as exc:
            raise UserError(f"soft targets {path} are corrupt ({exc}); delete the file to recompute") from None
    tokenizer = tokenizer or load_tokenizer(teacher.path)
    model = model or load_classifier(teacher.path).to(device())
    encoded = encoded if encoded is not None else encode(task.train, tokenizer, max_length)
    mine = encoded.select(distributed.shard(len(encoded)))  # under torchrun, each process a shard
    logits = distributed.gather_rows(
        predict_logits(model, mine, tokenizer, precision, batch_size=128,
                       desc="soft targets" if distributed.is_main() else None), len(encoded))
    if distributed.is_main():
        _publish(teacher, path, lambda tmp: save_file({"logits": logits.contiguous()}, str(tmp), metadata={
            "fingerprint": task.fingerprint, "max_length": str(max_length), "precision": precision}))
    distributed.barrier()
    return logits


def augmented_task(teacher: Variant, task: Task, n: int, seed: int, tokenizer=None, model=None) -> Task:
    """`task` with n augmented copies of every training row (compress.data.augment), from the teacher's embeddings.

    Made once per task (its fingerprint), n and seed, then read from teachers/<name>/<task>/augmented/
    by every stage that trains with them; their soft targets are cached like the task's own.
    """
    name = f"train-{task.fingerprint[:16]}-n{n}-seed{seed}.json"
    path = inside(teacher.workspace, teacher.path / "augmented" / name)
    if path.is_file():
        try:
            return with_rows(task, json.loads(path.read_text()))
        except (ValueError, OSError, StopIteration, TypeError, KeyError, AttributeError) as exc:
            raise UserError(f"augmented rows {path} are corrupt ({exc}); delete the file to make them again") from None
    tokenizer = tokenizer or load_tokenizer(teacher.path)
    model = model or load_classifier(teacher.path)
    rows = augmented_rows(task, tokenizer, model.get_input_embeddings().weight, n, seed)
    if distributed.is_main():
        _publish(teacher, path, lambda tmp: tmp.write_text(json.dumps(rows)))
    distributed.barrier()
    return with_rows(task, rows)


def _publish(teacher: Variant, path: Path, write: Callable[[Path], object]) -> None:
    """Put a cache file into its folder inside the teacher's: `write` fills a temporary name, renamed once whole."""
    own_folder(teacher.workspace, teacher.path, path.parent.name)
    clean_stale(path.parent)
    tmp = scratch_path(path)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
