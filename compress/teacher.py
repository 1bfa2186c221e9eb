"""Stage 1: fine-tune a teacher on a task and cache its logits on the training set (soft targets).

teachers/<name>/<task>/ holds the best epoch's checkpoint, the tokenizer, variant.json and
soft_targets/. While training, teachers/<name>/<task>.partial/ holds per-epoch checkpoints;
running the same command again resumes from there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoTokenizer, DataCollatorWithPadding, Trainer, set_seed

from compress.errors import UserError
from compress.machine import device, machine
from compress.registry import BASES, resolve_base
from compress.tasks import Task
from compress.train import (
    TrainConfig,
    check_max_length,
    encode,
    load_classifier,
    metrics_fn,
    predict_logits,
    run_trainer,
    task_metrics,
    training_arguments,
)
from compress.variant import Variant, atomic_dir, command_line, folder_size_mb, write_json


def teacher_dir(workspace: Path, name: str, task: str) -> Path:
    return workspace / "teachers" / name / task


def default_name(base: str) -> str:
    return base if base in BASES else Path(base.rstrip("/")).name


def fine_tune(
    base: str, task: Task, workspace: Path, config: TrainConfig, name: str | None = None,
    progress: bool = True,
) -> Variant:
    """Fine-tune `base` on `task` and write the teacher variant with its soft targets."""
    name = name or default_name(base)
    target = teacher_dir(workspace, name, task.name)
    base_path = resolve_base(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        model_config = AutoConfig.from_pretrained(base_path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer and config from {base_path}: {str(exc).splitlines()[0]}") from None
    check_max_length(config.max_length, tokenizer, model_config)
    train = encode(task.train, tokenizer, config.max_length)
    dev = encode(task.dev, tokenizer, config.max_length)

    set_seed(config.seed)  # the new classification head's initialisation depends on it
    model = load_classifier(base_path, num_labels=task.num_labels, ignore_mismatched_sizes=True)

    # Everything is validated: only now does the workspace change.
    partial = target.with_name(target.name + ".partial")
    run_key = {"base": str(base_path), "task": task.name, "fingerprint": task.fingerprint, **config.as_dict()}
    if (partial / "run.json").is_file() and json.loads((partial / "run.json").read_text()) != run_key:
        print(f"{partial} holds a run with other settings; starting afresh")
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(partial / "run.json", run_key)

    trainer = Trainer(
        model=model,
        args=training_arguments(partial / "checkpoints", config, progress),
        train_dataset=train,
        eval_dataset=dev,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_fn(task.metrics),
    )
    started = time.perf_counter()
    result = run_trainer(trainer, partial / "checkpoints")
    wall = time.perf_counter() - started
    model = trainer.model.float().eval()
    history = [  # per-epoch dev metrics, without the timings that differ from run to run
        {"epoch": log["epoch"], **{m: log[f"eval_{m}"] for m in ("loss", *task.metrics)}}
        for log in trainer.state.log_history
        if "eval_accuracy" in log
    ]
    dev_logits = predict_logits(model, dev, tokenizer)
    metrics = task_metrics(dev_logits.numpy(), np.asarray(dev["label"]), task.metrics)

    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        variant = Variant(tmp, {
            "name": name,
            "stage": "teacher",
            "parent": None,
            "task": task.name,
            "num_labels": task.num_labels,
            "params": {"base": base, "base_path": str(base_path), **config.as_dict()},
            "data": {"source": task.source, "fingerprint": task.fingerprint,
                     "train_examples": len(task.train), "dev_examples": len(task.dev)},
            "metrics": {"dev": metrics, "best_epoch": _best_epoch(history), "history": history},
            "train": {"wall_s": round(wall, 1), "device": device(), "precision": config.precision,
                      "train_runtime_s": result.metrics.get("train_runtime"),
                      "examples_per_s": result.metrics.get("train_samples_per_second")},
            "parameters": sum(p.numel() for p in model.parameters()),
            "size_mb": round(folder_size_mb(tmp), 2),
            "machine": machine(),
            "command": command_line(),
        })
        variant.save_meta()
        soft_targets(variant, task, config.max_length, config.precision, model=model, tokenizer=tokenizer, encoded=train)
    shutil.rmtree(partial)
    return Variant.load(target)


def _best_epoch(history: list[dict]) -> float | None:
    return max(history, key=lambda h: h["accuracy"])["epoch"] if history else None


def soft_targets_file(teacher: Variant, fingerprint: str, max_length: int) -> Path:
    return teacher.path / "soft_targets" / f"train-{fingerprint[:16]}-len{max_length}.safetensors"


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
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(teacher.path)
    model = model or load_classifier(teacher.path).to(device())
    encoded = encoded if encoded is not None else encode(task.train, tokenizer, max_length)
    logits = predict_logits(model, encoded, tokenizer, precision, batch_size=128, desc="soft targets")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"logits": logits.contiguous()}, str(tmp), metadata={
        "fingerprint": task.fingerprint, "max_length": str(max_length), "precision": precision,
    })
    tmp.replace(path)
    return logits
