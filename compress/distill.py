"""Stage 2: distil a teacher into an N-layer student initialised from the teacher's own layers.

Loss (Hinton et al. 2015; DistilBERT, Sanh et al. 2019), with teacher and student logits z:

    alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)
    [+ beta * hidden-state loss between each student layer and the teacher layer it came from]

Without a hidden-state loss the teacher logits come from the cached soft targets, so no teacher
forward runs at all. The config is data (DistillConfig) and hidden losses are looked up by name.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import torch
import torch.nn.functional as F
from transformers import set_seed

from compress import distributed
from compress.arch import keep_layers
from compress.checkpoint import load_classifier, load_config, load_tokenizer
from compress.configs import DistillConfig, TrainConfig, validate
from compress.data import data_record, encode
from compress.errors import UserError
from compress.inference import evaluate
from compress.machine import device
from compress.tasks import Task
from compress.teacher import soft_targets
from compress.train import Trainer, best_epoch, train_record, train_resumable
from compress.variant import Variant, derived_dir, relative_to_workspace, save_variant
from compress.workspace import check_target, partial_dir


def select_layers(teacher_depth: int, n: int, init: str) -> list[int]:
    """Teacher layer ids to copy into an n-layer student.

    `alternate` spreads them evenly, ends included: DistilBERT's [0, 2, 4, 7, 9, 11] for 6 of 12.
    """
    if not 1 <= n <= teacher_depth:
        raise UserError(f"--layers {n} is impossible: the teacher has {teacher_depth} layers (choose 1 to {teacher_depth})")
    if init == "alternate":
        return [int(i) for i in np.linspace(0, teacher_depth - 1, n).round()]
    if init == "first":
        return list(range(n))
    if init == "last":
        return list(range(teacher_depth - n, teacher_depth))
    try:
        ids = [int(part) for part in init.split(",")]
    except ValueError:
        raise UserError(f"--init must be alternate, first, last or a list like 0,2,4, not '{init}'") from None
    if len(ids) != n or len(set(ids)) != n or not all(0 <= i < teacher_depth for i in ids):
        raise UserError(f"--init {init} must name {n} distinct teacher layers from 0 to {teacher_depth - 1}")
    return ids


def make_student(teacher: torch.nn.Module, layer_ids: list[int]) -> torch.nn.Module:
    """A copy of the teacher (embeddings, pooler, head) keeping only the chosen layers, in order."""
    student = copy.deepcopy(teacher)
    keep_layers(student, layer_ids)
    return student


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton 2015).
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


HIDDEN_LOSSES = {
    # (student hidden, teacher hidden, attention mask [batch, seq, 1]) -> scalar
    "cosine": lambda s, t, m: _masked_mean(1 - F.cosine_similarity(s, t, dim=-1).unsqueeze(-1), m),
    "mse": lambda s, t, m: _masked_mean(F.mse_loss(s, t, reduction="none").mean(-1, keepdim=True), m),
}


class DistillTrainer(Trainer):
    """A Trainer whose loss is `kd_loss`, reading teacher logits from the batch or a live teacher."""

    def __init__(self, *args, distill: DistillConfig, layer_ids: list[int], teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill, self.layer_ids = distill, layer_ids
        # the live teacher runs where the student trains (cuda:LOCAL_RANK under torchrun)
        self.teacher = teacher.to(self.args.device).eval() if teacher is not None else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop("teacher_logits", None)
        hidden = self.distill.hidden_loss != "none" and model.training
        outputs = model(**inputs, output_hidden_states=hidden)
        if not self.distill.kd or (teacher_logits is None and not hidden):  # baseline, or eval
            loss = F.cross_entropy(outputs.logits.float(), labels)
            return (loss, outputs) if return_outputs else loss
        extra = 0.0
        if hidden:
            with torch.no_grad(), self.accelerator.autocast():  # in the training precision
                taught = self.teacher(**inputs, output_hidden_states=True)
            teacher_logits = taught.logits
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pairs = [(outputs.hidden_states[j + 1], taught.hidden_states[i + 1]) for j, i in enumerate(self.layer_ids)]
            measure = HIDDEN_LOSSES[self.distill.hidden_loss]
            extra = self.distill.hidden_weight * sum(measure(s.float(), t.float(), mask) for s, t in pairs) / len(pairs)
        loss = kd_loss(outputs.logits.float(), teacher_logits.float(), labels,
                       self.distill.temperature, self.distill.alpha) + extra
        return (loss, outputs) if return_outputs else loss


def default_name(distill: DistillConfig) -> str:
    name = f"L{distill.layers}-{'kd' if distill.kd else 'nokd'}"
    return name + (f"-{distill.hidden_loss}" if distill.kd and distill.hidden_loss != "none" else "")


def distill(
    teacher: Variant, task: Task, distill_config: DistillConfig, config: TrainConfig,
    name: str | None = None, progress: bool = True, replace: bool = False, reuse_teacher: bool = False,
) -> Variant:
    """Initialise a student from `teacher`'s layers and train it on the teacher's soft targets.

    A teacher fine-tuned on other data under the same task name is refused unless `reuse_teacher`.
    """
    if task.num_labels != teacher.record.num_labels:
        raise UserError(f"the teacher has {teacher.record.num_labels} labels but {task.name} has {task.num_labels}")
    trained_on = teacher.record.data.get("fingerprint")
    if trained_on != task.fingerprint and not reuse_teacher:
        raise UserError(
            f"teacher {teacher.record.name} was fine-tuned on other {task.name} data "
            f"({teacher.record.data.get('source', 'unknown source')}) than {task.source or 'this task'}: "
            "fine-tune it again (compress teacher --force), or pass --reuse-teacher")
    validate(distill_config)
    depth = load_config(teacher.path).num_hidden_layers
    layer_ids = select_layers(depth, distill_config.layers, distill_config.init)
    teacher_model = load_classifier(teacher.path)
    set_seed(config.seed)
    student = make_student(teacher_model, layer_ids)
    name = name or default_name(distill_config)
    return train_student(
        student, teacher, task, distill_config, config, teacher, derived_dir(teacher, name),
        meta={"name": name, "stage": "distill",
              "params": {**distill_config.as_dict(), "layer_ids": layer_ids, **config.as_dict()}},
        teacher_model=teacher_model, layer_ids=layer_ids, progress=progress, replace=replace,
    )


def train_student(
    student, teacher: Variant, task: Task, distill_config: DistillConfig, config: TrainConfig, parent: Variant,
    target, meta: dict, teacher_model=None, layer_ids: list[int] | None = None, progress: bool = True,
    metrics_before: dict | None = None, replace: bool = False,
) -> Variant:
    """Train `student`, made from `parent`, on `teacher`'s soft targets (labels alone for the baseline)
    and save it at `target`.

    Every stage that changes a student (distill, prune, layerdrop, share) ends here, so each
    variant records the same metrics: dev, the teacher's dev, agreement with it and retention.
    `config.epochs == 0` saves the student untrained. A stopped run resumes from its partial
    folder; `replace` (--force) starts afresh and replaces an existing `target`.
    """
    check_target(target, replace, (parent.path,))
    tokenizer = load_tokenizer(teacher.path)
    teacher_model = (teacher_model if teacher_model is not None else load_classifier(teacher.path)).to(device())
    train = encode(task.train, tokenizer, config.max_length)
    dev = encode(task.dev, tokenizer, config.max_length)
    if distill_config.kd and distill_config.hidden_loss == "none" and config.epochs > 0:
        logits = soft_targets(teacher, task, config.max_length, config.precision, model=teacher_model,
                              tokenizer=tokenizer, encoded=train)
        train = train.add_column("teacher_logits", logits.tolist())
    live_teacher = teacher_model.eval() if distill_config.hidden_loss != "none" and distill_config.kd else None

    partial = partial_dir(target)
    record = {}
    if config.epochs > 0:
        run_key = {"teacher": str(teacher.path), "parent": str(parent.path), "fingerprint": task.fingerprint, "meta": meta,
                   **distill_config.as_dict(), **config.as_dict()}
        trained = train_resumable(
            student, tokenizer, train, dev, config, partial, run_key, task.metrics, trainer_class=DistillTrainer,
            progress=progress, fresh=replace, distill=distill_config, layer_ids=layer_ids, teacher=live_teacher,
        )
        student = trained.model
        record = {"metrics": {"best_epoch": best_epoch(trained.history), "history": trained.history},
                  "train": train_record(trained, config)}
    metrics, student_logits = evaluate(student, dev, tokenizer, task.metrics)
    teacher_metrics, teacher_logits = evaluate(teacher_model, dev, tokenizer, task.metrics)
    metrics["agreement"] = float((student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())
    variant = save_variant(target, student, tokenizer, {
        **meta,
        "parent": relative_to_workspace(parent),
        "teacher": teacher.record.name,
        "task": task.name,
        "num_labels": task.num_labels,
        "data": data_record(task),
        **record,
        "metrics": {"dev": metrics, **({"dev_before_training": metrics_before} if metrics_before else {}),
                    "teacher_dev": teacher_metrics, "retention": metrics["accuracy"] / teacher_metrics["accuracy"],
                    **record.get("metrics", {})},
    }, replace=replace, reads=(parent.path,))
    if distributed.is_main():
        shutil.rmtree(partial, ignore_errors=True)
    return variant
