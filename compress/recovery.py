"""What every shrink stage shares: load a variant, change its model, measure, recover by KD, save beside it.

A shrink stage (prune, share, LayerDrop's baseline cut) is then only its model change: a function
that edits the model in place and returns what to record about it. Recovery is KD from the
variant's own teacher at the variant's own max length, so the cached soft targets still apply.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable

from compress.checkpoint import load_classifier, load_tokenizer
from compress.configs import KD, DistillConfig, TrainConfig
from compress.data import encode
from compress.distill import train_student
from compress.errors import UserError, require
from compress.inference import evaluate
from compress.machine import device
from compress.tasks import Task, task_of
from compress.variant import Variant, as_variant, derived_dir, teacher_of
from compress.workspace import check_target

# (model, task, tokenizer, training settings) -> what to record in variant.json about the change
Change = Callable[..., dict]


def recovery_setup(variant: Variant, config: TrainConfig) -> tuple[Task, Variant, TrainConfig]:
    """What a stage that shrinks `variant` recovers with: its task, its teacher, and `config` at the
    variant's own max length."""
    if variant.is_quantized:
        raise UserError(f"{variant.path} is a quantized artifact, not a trainable model: "
                        "shrink its parent, then quantize the result")
    config = TrainConfig(**{**config.as_dict(), "max_length": variant.record.params["max_length"]})
    return task_of(variant.record), teacher_of(variant), config


def stage_inputs(variant, config, config_class: type, train_config) -> Variant:
    """A shrink stage's API arguments, checked: the settings' kinds, and the variant (or its folder's path)."""
    require(config, config_class, "config")
    require(train_config, TrainConfig, "train_config")
    return as_variant(variant)


def kd_for(model, kd: KD) -> DistillConfig:
    """KD for the whole of `model` with the stage's KD settings (logits, and any intermediate losses,
    two phases or augmentation): recovery keeps the student's own layers."""
    return DistillConfig(layers=model.config.num_hidden_layers, **{f.name: getattr(kd, f.name) for f in fields(KD)})


def shrink(variant: Variant, stage: str, name: str, change: Change, kd: KD, params: dict, train_config: TrainConfig,
           progress: bool = True, replace: bool = False) -> Variant:
    """Apply `change` to `variant`'s model, measure it, recover it by KD for `train_config.epochs`
    (0: none) and save it as `name` beside `variant`; `params` are the stage's own settings."""
    task, teacher, train_config = recovery_setup(variant, train_config)
    target = derived_dir(variant, name)
    check_target(target, replace, (variant.path,))
    tokenizer = load_tokenizer(variant.path)
    model = load_classifier(variant.path).to(device())  # scoring and measuring run where training will
    record = change(model, task, tokenizer, train_config)
    before, _ = evaluate(model, encode(task.dev, tokenizer, train_config.max_length), tokenizer, task.metrics)
    return train_student(
        model, teacher, task, kd_for(model, kd), train_config, variant, target,
        meta={"name": name, "stage": stage, "params": {**params, **train_config.as_dict()}, **record},
        metrics_before=before, progress=progress, replace=replace,
    )
