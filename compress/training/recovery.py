"""What every shrink stage shares: load a variant, change its model, measure, recover by KD, save beside it.

A shrink stage (prune, share, LayerDrop's baseline cut) is then only its model change: a function
that edits the model in place and returns what to record about it. Recovery is KD from the
variant's own teacher at the variant's own max length, so the cached soft targets still apply, with
the KD settings the variant was trained with unless the stage is given others (compress.training.kd).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from compress.configs import KD, DistillConfig, TrainConfig
from compress.data.tasks import Task, task_of
from compress.errors import UserError, require
from compress.machine import device
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.runtime.inference import evaluate
from compress.training.distillation import choose_kd, fit, train_student
from compress.training.kd import kd_settings
from compress.variant import Variant, as_variant, derived_dir, teacher_of
from compress.workspace import check_target, partial_dir

# (model, task, tokenizer, training settings) -> what to record in variant.json about the change
Change = Callable[..., dict]


def recovery_setup(variant: Variant, config: TrainConfig) -> tuple[Task, Variant, TrainConfig]:
    """What a stage that shrinks `variant` recovers with: its task, its teacher, and `config` at the
    variant's own max length."""
    if variant.is_quantized:
        raise UserError(f"{variant.path} is a quantized artifact, not a trainable model: "
                        "shrink its parent, then quantize the result")
    return task_of(variant.record), teacher_of(variant), at_own_length(variant, config)


def at_own_length(variant: Variant, config: TrainConfig) -> TrainConfig:
    return TrainConfig(**{**config.as_dict(), "max_length": variant.record.params["max_length"]})


def stage_inputs(variant, config, config_class: type, train_config) -> Variant:
    """A shrink stage's API arguments, checked: the settings' kinds, and the variant (or its folder's path)."""
    require(config, config_class, "config")
    require(train_config, TrainConfig, "train_config")
    return as_variant(variant)


def kd_for(model, kd: KD) -> DistillConfig:
    """KD for the whole of `model` with the stage's KD settings (logits, and any intermediate losses,
    two phases or augmentation): recovery keeps the student's own layers."""
    return DistillConfig(layers=model.config.num_hidden_layers, **{f.name: getattr(kd, f.name) for f in fields(KD)})


def recovery_params(kd: KD, params: dict, train_config: TrainConfig) -> dict:
    """What a recovered variant records as its parameters: the stage's own, the KD settings it trained
    with (compress.training.kd) and the training's."""
    return {**params, **{f.name: getattr(kd, f.name) for f in fields(KD)}, **train_config.as_dict()}


def planned_params(variant: Variant, kd: KD, params: dict, train_config: TrainConfig) -> dict:
    """The parameters a recovery of `variant` with these settings will record, known before it runs."""
    train_config = at_own_length(variant, train_config)
    return recovery_params(kd_settings(kd, variant.meta, train_config.seed)[0], params, train_config)


def trained_with(folder: Path, params: dict) -> bool:
    """Whether `folder` holds a variant trained with exactly `params` (one to reuse, not train again)."""
    try:
        return Variant.load(folder).record.params == params
    except UserError:
        return False


def shrink(variant: Variant, stage: str, name: str, change: Change, kd: KD, params: dict, train_config: TrainConfig,
           progress: bool = True, replace: bool = False, steps: int = 1) -> Variant:
    """Apply `change` to `variant`'s model, measure it, recover it by KD for `train_config.epochs`
    (0: none) and save it as `name` beside `variant`; `params` are the stage's own settings, and KD
    settings not given in `kd` are `variant`'s (compress.training.kd).

    With `steps` > 1, `change` is applied that many times (gradual pruning's rounds), each time
    followed by 1/steps of the recovery's epochs and intermediate epochs; the record keeps each
    round's change and dev metrics before and after its recovery (the last one's "after" is the variant's).
    """
    task, teacher, train_config = recovery_setup(variant, train_config)
    target = derived_dir(variant, name)
    check_target(target, replace, (variant.path,))
    tokenizer = load_tokenizer(variant.path)
    model = load_classifier(variant.path).to(device())  # scoring and measuring run where training will
    teacher_model = load_classifier(teacher.path).to(device())
    chosen = choose_kd(kd, variant, model, teacher_model.config.num_hidden_layers, train_config.seed)
    meta = {"name": name, "stage": stage, "params": recovery_params(chosen[0], params, train_config)}
    per_round = TrainConfig(**{**train_config.as_dict(), "epochs": train_config.epochs / steps})
    round_kd = dataclasses.replace(chosen[0], intermediate_epochs=chosen[0].intermediate_epochs / steps)
    dev = task.encode(task.dev, tokenizer, train_config.max_length)
    rounds = []
    for t in range(1, steps + 1):
        record = change(model, task, tokenizer, train_config)
        before, _ = evaluate(model, dev, tokenizer, task.metrics, task.kind)
        rounds.append({"round": t, **record, "dev_before_recovery": before})
        if t < steps:
            model, _ = fit(model, teacher, task, kd_for(model, round_kd), per_round, partial_dir(target) / f"round-{t}",
                           {"teacher": str(teacher.path), "parent": str(variant.path), "meta": meta, "round": t},
                           teacher_model, tokenizer, progress, replace)
            rounds[-1]["dev_after_recovery"], _ = evaluate(model, dev, tokenizer, task.metrics, task.kind)
    return train_student(
        model, teacher, task, kd_for(model, round_kd), per_round, variant, target,
        meta={**meta, **record, **({"rounds": rounds} if steps > 1 else {})}, chosen=chosen,
        teacher_model=teacher_model, metrics_before=before, progress=progress, replace=replace,
        work=partial_dir(target) / f"round-{steps}" if steps > 1 else None,
    )
