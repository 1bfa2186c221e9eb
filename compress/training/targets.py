"""What a teacher gives its students to learn from, made once and cached under the teacher: soft targets
(its logits on the training set) and augmented rows labelled by it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from compress import distributed
from compress.data.augment import augmented_rows, with_rows
from compress.data.tasks import Task
from compress.errors import UserError
from compress.machine import device
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.runtime.inference import predict_logits
from compress.variant import Variant
from compress.workspace import clean_stale, inside, own_folder, scratch_path


def soft_targets_file(teacher: Variant, task: Task, max_length: int) -> Path:
    """Where `teacher`'s outputs on `task`'s training rows (its fingerprint, a reader's --doc-stride
    included), encoded at `max_length`, are cached."""
    name = f"train-{task.fingerprint[:16]}-len{max_length}.safetensors"
    return inside(teacher.workspace, teacher.path / "soft_targets" / name)  # read through no link either


def soft_targets(
    teacher: Variant, task: Task, max_length: int, precision: str = "fp32",
    model=None, tokenizer=None, encoded=None,
) -> torch.Tensor:
    """Teacher logits (not probabilities: T is applied when distilling) for every training row.

    Cached per data fingerprint and max length (soft_targets_file); a change in either computes them afresh.
    """
    path = soft_targets_file(teacher, task, max_length)
    if path.is_file():
        try:
            return load_file(path)["logits"]
        except (SafetensorError, OSError, KeyError) as exc:
            raise UserError(f"soft targets {path} are corrupt ({exc}); delete the file to recompute") from None
    tokenizer = tokenizer or load_tokenizer(teacher.path)
    model = model or load_classifier(teacher.path).to(device())
    encoded = encoded if encoded is not None else task.encode(task.train, tokenizer, max_length)
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
