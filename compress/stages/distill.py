"""Stage 2: distil a teacher into an N-layer student initialised from the teacher's own layers.

Loss (Hinton et al. 2015; DistilBERT, Sanh et al. 2019), with teacher and student logits z:

    alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)
    [+ the weighted intermediate losses of compress.training.losses: hidden states, attention, value relations]

Without intermediate losses the teacher logits come from the cached soft targets, so no teacher
forward runs at all. TinyBERT's two phases (intermediate layers first, then the logits) and its
data augmentation (compress.data.augment) are options of the same config, which is data (DistillConfig).
"""

from __future__ import annotations

from transformers import set_seed

from compress.configs import DistillConfig, TrainConfig
from compress.data.batches import check_max_length
from compress.data.tasks import Task
from compress.errors import UserError, require
from compress.model.arch import make_student, select_layers
from compress.model.checkpoint import load_classifier, load_config, load_tokenizer
from compress.training.distillation import check_kd_options, choose_kd, train_student
from compress.training.kd import with_fallbacks
from compress.training.losses import (
    parse_intermediate,
)
from compress.variant import Variant, as_variant, derived_dir


def default_name(teacher: Variant, distill: DistillConfig) -> str:
    """L<N>-kd or L<N>-nokd, then what was added: the intermediate losses, two phases, augmentation. The
    student's folder lies under its teacher's, so the teacher's name is not repeated in it."""
    distill = with_fallbacks(distill)  # a teacher has no KD settings to inherit
    name = f"L{distill.layers}-{'kd' if distill.kd else 'nokd'}"
    if distill.kd:
        name += "".join(f"-{loss}" for loss in parse_intermediate(distill.intermediate))
        name += "-2phase" if distill.intermediate_epochs else ""
        name += f"-aug{distill.augment}" if distill.augment else ""
    return name


def distill(
    teacher: Variant, task: Task, distill_config: DistillConfig, config: TrainConfig,
    name: str | None = None, progress: bool = True, replace: bool = False, reuse_teacher: bool = False,
) -> Variant:
    """Initialise a student from `teacher`'s layers and train it on the teacher's soft targets.

    A teacher fine-tuned on other data under the same task name is refused unless `reuse_teacher`.
    """
    teacher = as_variant(teacher, "teacher")
    require(task, Task, "task")
    require(distill_config, DistillConfig, "distill_config")
    require(config, TrainConfig, "config")
    if task.num_labels != teacher.record.num_labels:
        raise UserError(f"the teacher has {teacher.record.num_labels} labels but {task.name} has {task.num_labels}")
    trained_on = teacher.record.data.get("fingerprint")
    # an unlabelled kind's teacher was not trained on its data: any corpus will do (its outputs are cached per corpus)
    if trained_on != task.fingerprint and task.kind.labelled and not reuse_teacher:
        stride = teacher.record.data.get("spec", {}).get("doc_stride")
        if stride != task.doc_stride:  # the same rows, other windows: the fingerprint holds a set stride
            raise UserError(f"teacher {teacher.record.name} was fine-tuned with --doc-stride {stride or 'default'}, "
                            f"not {task.doc_stride or 'default'}: pass the teacher's, or --reuse-teacher")
        raise UserError(
            f"teacher {teacher.record.name} was fine-tuned on other {task.name} data "
            f"({teacher.record.data.get('source', 'unknown source')}) than {task.source or 'this task'}: "
            "fine-tune it again (compress teacher --force), or pass --reuse-teacher")
    check_kd_options(with_fallbacks(distill_config))
    teacher_config = load_config(teacher.path)
    check_max_length(config.max_length, load_tokenizer(teacher.path), teacher_config)
    depth = teacher_config.num_hidden_layers
    layer_ids = select_layers(depth, distill_config.layers, distill_config.init)
    teacher_model = load_classifier(teacher.path)
    set_seed(config.seed)
    student = make_student(teacher_model, layer_ids)
    chosen = choose_kd(distill_config, teacher, student, depth, config.seed)
    distill_config = chosen[0]
    name = default_name(teacher, distill_config) if name is None else name
    return train_student(
        student, teacher, task, distill_config, config, teacher, derived_dir(teacher, name),
        meta={"name": name, "stage": "distill",
              "params": {**distill_config.as_dict(), "layer_ids": layer_ids, **config.as_dict()}},
        chosen=chosen, teacher_model=teacher_model, progress=progress, replace=replace,
    )


