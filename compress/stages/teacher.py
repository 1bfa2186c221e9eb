"""Stage 1: fine-tune a teacher on a task and cache its logits on the training set (soft targets).

A kind without labels (sentence embeddings) takes its teacher as it is: the base is measured and
recorded, and its embeddings of the corpus are cached as the soft targets.

teachers/<name>/<task>/ holds the best epoch's checkpoint, the tokenizer, variant.json and
soft_targets/. While training, teachers/<name>/.<task>.partial/ holds per-epoch checkpoints;
running the same command again resumes from there (--force starts afresh).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transformers import set_seed

from compress import distributed
from compress.configs import TrainConfig
from compress.data.batches import check_max_length, data_record
from compress.data.tasks import Task
from compress.errors import UserError, as_path, require
from compress.model.checkpoint import load_classifier, load_config, load_embedder, load_tokenizer
from compress.model.embedding import POOLING_KEY
from compress.model.registry import BASES, resolve_base
from compress.runtime.inference import evaluate
from compress.training.targets import soft_targets
from compress.training.trainer import best_epoch, train_record, train_resumable
from compress.variant import Variant, save_variant
from compress.workspace import check_name, check_target, inside, partial_dir


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
    if not task.kind.labelled:
        return adopt(base, task, workspace, config, name, replace)
    if not config.epochs:
        raise UserError("--epochs 0: a teacher must be trained; give more epochs")
    name = default_name(base) if name is None else name
    target = teacher_dir(workspace, name, task.name)
    check_target(target, replace)
    base_path = resolve_base(base)
    tokenizer, model_config = load_tokenizer(base_path, **task.kind.tokenizer_options), load_config(base_path)
    check_max_length(config.max_length, tokenizer, model_config)
    train = task.encode(task.train, tokenizer, config.max_length)
    dev = task.encode(task.dev, tokenizer, config.max_length)

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
        "metrics": {"dev": metrics, "best_epoch": best_epoch(trained.history), "history": trained.history},
        "train": train_record(trained, config),
    }, replace=replace)
    soft_targets(variant, task, config.max_length, config.precision, model=trained.model, tokenizer=tokenizer, encoded=train)
    if distributed.is_main():
        shutil.rmtree(partial)
    return variant


def adopt(base: str, task: Task, workspace: Path, config: TrainConfig, name: str | None = None,
          replace: bool = False) -> Variant:
    """`base`, a sentence-transformers model, as the teacher of an unlabelled task: its pooling read from its
    files, its dev metrics measured, its embeddings of the corpus cached; nothing trained (epochs unused)."""
    name = default_name(base) if name is None else name
    target = teacher_dir(workspace, name, task.name)
    check_target(target, replace)
    base_path = resolve_base(base)
    tokenizer, model = load_tokenizer(base_path), load_embedder(base_path)
    check_max_length(config.max_length, tokenizer, model.config)
    metrics, _ = evaluate(model, task.encode(task.dev, tokenizer, config.max_length), tokenizer, task.metrics, task.kind)
    pooling = getattr(model.config, POOLING_KEY)
    variant = save_variant(target, model, tokenizer, {
        "name": name,
        "stage": "teacher",
        "parent": None,
        "task": task.name,
        "num_labels": task.num_labels,
        "params": {"base": base, "base_path": str(base_path), "fine_tuned": False, "pooling": pooling,
                   **{key: getattr(config, key) for key in ("max_length", "precision", "seed")}},
        "data": data_record(task),
        "metrics": {"dev": metrics},
    }, replace=replace)
    soft_targets(variant, task, config.max_length, config.precision, model=model, tokenizer=tokenizer)
    return variant
