"""Training a student against its teacher, which every stage that trains shares: the KD loss of one
phase (logits, intermediate layers), the choice of KD settings along the chain, and the resumable run."""

from __future__ import annotations

import dataclasses
import shutil

import torch

from compress import distributed
from compress.configs import KD, DistillConfig, TrainConfig
from compress.data.augment import NEIGHBOURS, REPLACE_PROBABILITY
from compress.data.batches import data_record
from compress.data.tasks import Task
from compress.errors import UserError
from compress.kinds import kind_of
from compress.machine import device
from compress.model.arch import LAYER_MAP_KEY
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.runtime.inference import evaluate
from compress.training.kd import kd_record, kd_settings, with_fallbacks
from compress.training.losses import (
    Taps,
    head_dim,
    intermediate_loss,
    layer_map,
    parse_intermediate,
    projections_needed,
    tapped,
)
from compress.training.targets import augmented_task, soft_targets
from compress.training.trainer import Trainer, best_epoch, train_record, train_resumable
from compress.variant import Record, Variant, retention, save_variant
from compress.workspace import check_target, partial_dir


class DistillTrainer(Trainer):
    """A Trainer whose loss is the distillation loss of one phase:

    - joint: the task kind's KD loss on the outputs (`losses.kd_loss` for classification) plus the
      weighted intermediate losses;
    - intermediate: the intermediate losses alone (TinyBERT's first phase);
    - prediction: the KD loss alone (its second phase).

    Teacher logits come from the cached soft targets in the batch unless the teacher runs live
    (any intermediate loss); the live teacher runs where the student trains (cuda:LOCAL_RANK
    under torchrun), in the training precision, without gradients.
    """

    def __init__(self, *args, distill: DistillConfig, phase: str = "joint", teacher=None,
                 layer_map: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        distill = with_fallbacks(distill)  # the stages give it settings chosen already (choose_kd)
        self.distill, self.phase, self.layer_map = distill, phase, layer_map
        self.weights = parse_intermediate(distill.intermediate) if phase != "prediction" else {}
        self.teacher = teacher.to(self.args.device).eval() if teacher is not None and self.weights else None
        self.parts = projections_needed(self.weights)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop("teacher_logits", None)
        live = self.teacher is not None and model.training
        if not self.distill.kd or not (live or teacher_logits is not None):  # the baseline, or evaluation
            outputs = model(**inputs)
            loss = self.kind.hard_loss(outputs.logits, labels)
            return (loss, outputs) if return_outputs else loss
        extra = 0.0
        if live:
            student_model = self.accelerator.unwrap_model(model)
            with tapped(student_model, list(range(len(self.layer_map))), self.parts) as student_parts:
                outputs = model(**inputs, output_hidden_states=True)
            with torch.no_grad(), self.accelerator.autocast(), \
                    tapped(self.teacher, self.layer_map, self.parts) as teacher_parts:
                taught = self.teacher(**inputs, output_hidden_states=True)
            teacher_logits = taught.logits
            extra = intermediate_loss(
                self.weights,
                Taps(outputs.hidden_states, student_parts, head_dim(student_model.config)),
                Taps(taught.hidden_states, teacher_parts, head_dim(self.teacher.config)),
                list(enumerate(self.layer_map)), inputs["attention_mask"])
        else:
            outputs = model(**inputs)
        if self.phase == "intermediate":
            loss = extra
        else:
            loss = self.kind.kd_loss(outputs.logits, teacher_logits, labels,
                                     self.distill.temperature, self.distill.alpha) + extra
        return (loss, outputs) if return_outputs else loss


def check_kd_options(kd: KD) -> dict[str, float]:
    """The intermediate losses' weights, once the options are known to make sense together."""
    weights = parse_intermediate(kd.intermediate)
    if not getattr(kd, "kd", True) and (weights or kd.augment or kd.intermediate_epochs):
        raise UserError("--no-kd trains on labels alone: --intermediate, --intermediate-epochs and --augment "
                        "need the teacher")
    if kd.intermediate_epochs and not weights:
        raise UserError("--intermediate-epochs trains on the intermediate losses first: name them with --intermediate")
    if kd.layer_map and not weights:
        raise UserError("--layer-map pairs layers for the intermediate losses: name them with --intermediate")
    return weights


def choose_kd(kd: KD, parent: Variant, model, teacher_depth: int, seed: int) -> tuple[KD, dict]:
    """The KD settings `model`, still `parent`'s model (before any cut), trains with, and where each
    came from (compress.training.kd). A --layer-map names this model's layers: it is pinned on them now, so a
    cut keeps each kept layer's teacher layer. A kind whose KD has no softmax (regression) takes no
    temperature: one given is refused, and none is recorded."""
    kind = kind_of(parent.meta)
    if not kind.labelled and not getattr(kd, "kd", True):
        raise UserError(f"--no-kd trains on labels alone, and a {kind.name} corpus has none: the student learns "
                        "from its teacher")
    if not kind.uses_temperature:
        if kd.temperature is not None:
            raise UserError(f"--temperature softens a softmax over classes: this is a {kind.name} task, whose KD is "
                            "the MSE to the teacher's prediction (--alpha weighs it against the label's)")
    chosen, sources = kd_settings(kd, parent.meta, seed)
    if not kind.uses_temperature:
        chosen = dataclasses.replace(chosen, temperature=None)
        sources = {**sources, "temperature": {"from": f"not used by {kind.name}"}}
    check_kd_options(chosen)
    if chosen.layer_map:
        setattr(model.config, LAYER_MAP_KEY, layer_map(model.config, teacher_depth, chosen.layer_map))
    return chosen, sources


def train_student(
    student, teacher: Variant, task: Task, distill_config: DistillConfig, config: TrainConfig, parent: Variant,
    target, meta: dict, chosen: tuple[KD, dict], teacher_model=None, progress: bool = True, metrics_before: dict | None = None,
    replace: bool = False, work=None,
) -> Variant:
    """Train `student`, made from `parent`, on `teacher`'s soft targets (labels alone for the baseline)
    and save it at `target`.

    Every stage that changes a student (distill, prune, layerdrop, share, qat) ends here, so each
    variant records the same metrics: dev, the teacher's dev, agreement with it and retention, and
    the KD settings it trained with and where each came from (`chosen`, as `choose_kd` returns them;
    `distill_config` is what this one run trains with: a gradual pruning round's share of the epochs).
    `config.epochs == 0` saves the student untrained. A stopped run resumes from its partial
    folder (`work`, a folder inside it, for one of several runs); `replace` (--force) starts afresh
    and replaces an existing `target`.
    """
    check_target(target, replace, (parent.path,))
    tokenizer = load_tokenizer(teacher.path)
    teacher_model = (teacher_model if teacher_model is not None else load_classifier(teacher.path)).to(device())
    run_key = {"teacher": str(teacher.path), "parent": str(parent.path), "meta": meta}
    student, record = fit(student, teacher, task, distill_config, config, work or partial_dir(target), run_key,
                          teacher_model, tokenizer, progress, replace)
    dev = task.encode(task.dev, tokenizer, config.max_length)
    metrics, student_logits = evaluate(student, dev, tokenizer, task.metrics, task.kind)
    teacher_metrics, teacher_logits = evaluate(teacher_model, dev, tokenizer, task.metrics, task.kind)
    metrics.update(task.kind.agreement(student_logits, teacher_logits))
    if distill_config.kd:
        learned = getattr(student.config, LAYER_MAP_KEY, None) if parse_intermediate(distill_config.intermediate) else None
        record["kd"] = kd_record(*chosen, learned)
    variant = save_variant(target, student, tokenizer, Record.derived(parent, **{
        **meta, "teacher": teacher.record.name, "task": task.name, "num_labels": task.num_labels,
        "data": data_record(task), **record,
        "metrics": {"dev": metrics, **({"dev_before_training": metrics_before} if metrics_before else {}),
                    "teacher_dev": teacher_metrics, "retention": retention(metrics, teacher_metrics),
                    **record.get("metrics", {})},
    }), replace=replace, reads=(parent.path,))
    if distributed.is_main():
        shutil.rmtree(partial_dir(target), ignore_errors=True)
    return variant


def fit(student, teacher: Variant, task: Task, distill_config: DistillConfig, config: TrainConfig, work,
        run_key: dict, teacher_model, tokenizer, progress: bool = True, fresh: bool = False) -> tuple[object, dict]:
    """Train `student` by `distill_config` for `config.epochs` (0: not at all), checkpointing in `work`.

    Returns the trained model and what to record about the run: the layer map, the augmentation,
    the dev history and the training's figures. The layer map is the student's own (`choose_kd`
    pinned a given one); the student's config keeps it for what is made from it later.
    """
    weights = check_kd_options(distill_config)
    trains = config.epochs > 0
    pairs = layer_map(student.config, teacher_model.config.num_hidden_layers) if weights and trains else None
    if pairs:
        setattr(student.config, LAYER_MAP_KEY, pairs)
    record = {"layer_map": pairs} if pairs else {}
    if distill_config.augment and trains:
        original = task
        task = augmented_task(teacher, task, distill_config.augment, distill_config.augment_seed, tokenizer,
                              teacher_model)
        record["augmentation"] = {"per_example": distill_config.augment, "seed": distill_config.augment_seed,
                                  "added": len(task.train) - len(original.train),
                                  "replace_probability": REPLACE_PROBABILITY, "neighbours": NEIGHBOURS}
    if not trains:
        return student, record
    train = task.encode(task.train, tokenizer, config.max_length)
    dev = task.encode(task.dev, tokenizer, config.max_length)
    phases = [("intermediate", TrainConfig(**{**config.as_dict(), "epochs": distill_config.intermediate_epochs})),
              ("prediction", config)] if distill_config.intermediate_epochs else [("joint", config)]
    if distill_config.kd and (not weights or distill_config.intermediate_epochs):
        logits = soft_targets(teacher, task, config.max_length, config.precision, model=teacher_model,
                              tokenizer=tokenizer, encoded=train)
        train = train.add_column("teacher_logits", logits.tolist())
    run_key = {**run_key, "fingerprint": task.fingerprint, **distill_config.as_dict(), **config.as_dict()}
    histories, wall_s = [], 0.0
    for phase, phase_config in phases:
        trained = train_resumable(
            student, tokenizer, train, dev, phase_config, work / phase if len(phases) > 1 else work,
            {**run_key, "phase": phase},
            task.metrics, trainer_class=DistillTrainer, progress=progress, fresh=fresh, kind=task.kind,
            keep_best=phase != "intermediate", distill=distill_config, phase=phase,
            teacher=teacher_model if weights else None, layer_map=pairs,
        )
        student, wall_s = trained.model, wall_s + trained.wall_s
        histories += [{**h, "phase": phase} for h in trained.history] if len(phases) > 1 else trained.history
    record.update({"metrics": {"best_epoch": best_epoch(trained.history), "history": histories},
                   "train": {**train_record(trained, config), "wall_s": round(wall_s, 1)}})
    return student, record
