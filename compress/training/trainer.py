"""Training, shared by every stage that trains: the Trainer set-up, resumable runs, their records.

Training goes through the transformers Trainer: it gives per-epoch eval, best-epoch selection,
checkpoints with RNG state (exact resume), bf16/fp16 autocast and progress bars with ETA.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from torch.utils.data import SequentialSampler
from transformers import TrainingArguments
from transformers.trainer_callback import ProgressCallback, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from compress import distributed
from compress.configs import TrainConfig
from compress.data.batches import Collator
from compress.errors import UserError, first_line, says_disk_full
from compress.kinds import CLASSIFICATION, main_of
from compress.machine import device, kernels_for_many_shapes
from compress.workspace import write_json


def training_arguments(output_dir: Path, config: TrainConfig, progress: bool = True,
                       keep_best: bool = True, best_by: str = "accuracy") -> TrainingArguments:
    """The Trainer's settings. On a GPU, a step of a small encoder costs less than launching it, so
    nothing may stop the host from running ahead: batches are pinned and copied without blocking,
    and the per-step NaN check (a device-to-host sync) is off. Evaluation takes bigger batches there.
    `keep_best=False` keeps the last epoch (a phase whose loss is not the dev metric's); otherwise the
    epoch with the highest dev `best_by` (the task's main metric) is kept."""
    gpu = device() == "cuda"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=256 if gpu else 64,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=keep_best,
        metric_for_best_model=best_by,
        greater_is_better=True,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        use_cpu=not gpu,
        train_sampling_strategy="group_by_length",
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,  # measured on an H200: 2 workers were slower than collating in-process
        dataloader_pin_memory=gpu,
        accelerator_config={"non_blocking": gpu},
        logging_nan_inf_filter=False,  # we record no training loss; the check syncs with the GPU each step
        ddp_backend=("nccl" if gpu else "gloo") if distributed.world_size() > 1 else None,
    )


class Trainer(transformers.Trainer):
    """The transformers Trainer, reading the length column once: datasets 5 hands it a lazy column,
    which the length-grouped sampler would index row by row (16 s per SST-2 run, measured). It knows
    the task's kind (compress.kinds), for the losses of the trainers built on it."""

    def __init__(self, *args, kind=CLASSIFICATION, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        if not kind.model_loss:  # transformers would look for the model's own label arguments (a reader's positions)
            self.label_names = ["labels"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's own loss, or for a kind whose model has none for its labels (a reader) the kind's
        `hard_loss` on the model's logits."""
        if self.kind.model_loss or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.kind.hard_loss(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=list(dataset["length"]))

    def _get_eval_sampler(self, eval_dataset):
        """The dev split in its own order (the Trainer groups it by length too): an embedding task's metrics
        read each pair from two consecutive rows (compress.kinds.Embeddings)."""
        return SequentialSampler(eval_dataset)


SHOWN = ("accuracy", "f1", "mcc", "pearson", "spearman", "stsb_spearman", "entity_f1", "qa_f1", "loss")  # of the dev metrics, those an epoch's line shows


class EpochLines(ProgressCallback):
    """The Trainer's progress bar, with one readable line per evaluated epoch instead of its raw log dicts."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "eval_loss" in logs:
            scores = ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in logs.items()
                               if k.startswith("eval_") and k.removeprefix("eval_") in SHOWN)
            self.training_bar.write(f"epoch {logs.get('epoch', state.epoch):g}: dev {scores}")


class StepClock(TrainerCallback):
    """Time spent in training epochs, evaluation and checkpointing left out: the examples/s a bare
    training loop would be compared with."""

    def __init__(self):
        self.seconds, self.steps = 0.0, 0

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the host runs ahead of the GPU: count work done, not launched
        return time.perf_counter()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds += self._now() - self.started


@dataclass
class Trained:
    model: torch.nn.Module
    history: list[dict]  # dev metrics per epoch
    wall_s: float
    train_runtime_s: float
    examples_per_s: float  # the Trainer's: the whole run, evaluation and checkpoints included
    step_examples_per_s: float | None  # training steps alone (StepClock)
    processes: int = 1  # data-parallel processes (torchrun), as the Trainer saw them


def train_resumable(
    model, tokenizer, train: datasets.Dataset, dev: datasets.Dataset, config: TrainConfig, work_dir: Path,
    run_key: dict, metric_names: tuple[str, ...], trainer_class=Trainer, progress: bool = True, fresh: bool = False,
    keep_best: bool = True, kind=CLASSIFICATION, **trainer_kwargs,
) -> Trained:
    """Train with per-epoch eval and checkpoints in `work_dir`, resuming a run with the same `run_key`.

    Returns the best epoch's model by the task's main metric among `metric_names` (MCC for CoLA; the last
    epoch's without `keep_best`). A run with other settings in `work_dir` is discarded, and so
    is any run with `fresh` (--force starts clean).
    """
    if distributed.is_main():
        if work_dir.is_dir() and (fresh or _recorded_run(work_dir) != run_key):
            if not fresh:
                print(f"{work_dir} holds a run with other settings; starting afresh")
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        write_json(work_dir / "run.json", run_key)
    distributed.barrier()
    checkpoints = work_dir / "checkpoints"
    trainer = trainer_class(
        model=model,
        args=training_arguments(checkpoints, config, progress, keep_best, main_of(metric_names)),
        train_dataset=train,
        eval_dataset=dev,
        processing_class=tokenizer,
        data_collator=Collator(tokenizer, pad_to_multiple_of=8 if device() == "cuda" else None),
        compute_metrics=metrics_fn(metric_names, kind),
        kind=kind,
        **trainer_kwargs,
    )
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(EpochLines)
    clock = StepClock()
    trainer.add_callback(clock)
    last = resume_point(checkpoints) if distributed.is_main() else None
    distributed.barrier()  # the other ranks look once rank 0 has removed half-written checkpoints
    if not distributed.is_main():
        last = resume_point(checkpoints)
    if last:
        print(f"resuming from {last}")
    started = time.perf_counter()
    kernels_for_many_shapes()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    except Exception as exc:  # noqa: BLE001 - torch.save reports a full disk as a RuntimeError without errno
        if isinstance(exc, UserError) or not (says_disk_full(exc) or out_of_room(work_dir, model)):
            raise
        raise UserError(f"the disk holding {work_dir.parent} is full: a training checkpoint did not fit "
                        f"({first_line(exc)[:120]}); free space, then run the same command again"
                        + (" (it resumes)" if cleaned_after_full_disk(work_dir, checkpoints) else "")) from None
    history = [  # per-epoch dev metrics, without the timings that differ from run to run
        {"epoch": log["epoch"], **{m: log[f"eval_{m}"] for m in ("loss", *metric_names)}}
        for log in trainer.state.log_history
        if f"eval_{kind.headline}" in log
    ]
    return Trained(
        # without accelerate's mixed-precision wrapper: evaluation afterwards runs in fp32
        model=trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).float().eval(),
        history=history,
        wall_s=round(time.perf_counter() - started, 1),
        train_runtime_s=result.metrics.get("train_runtime"),
        examples_per_s=result.metrics.get("train_samples_per_second"),
        step_examples_per_s=(round(clock.steps * config.batch_size * trainer.args.world_size / clock.seconds, 1)
                             if clock.seconds else None),
        processes=trainer.args.world_size,
    )


def _recorded_run(work_dir: Path) -> dict | None:
    try:
        return json.loads((work_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None


def out_of_room(folder: Path, model) -> bool:
    """Whether `folder`'s disk lacks room for `model`'s weights: a checkpoint that failed there hit a full disk."""
    return shutil.disk_usage(folder).free < sum(p.numel() * p.element_size() for p in model.parameters())


def cleaned_after_full_disk(work_dir: Path, checkpoints: Path) -> bool:
    """Remove the checkpoint a full disk cut off, and the whole run if no finished checkpoint is left;
    returns whether one is left to resume from."""
    if distributed.is_main() and resume_point(checkpoints) is None:
        shutil.rmtree(work_dir, ignore_errors=True)
        return False
    return True


def resume_point(checkpoints: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing; newer, half-written ones are removed.

    The Trainer writes trainer_state.json last, so a checkpoint without a readable one was cut off
    mid-save (a kill, a full disk): resuming from it would fail on every run.
    """
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()]
    for checkpoint in sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")), reverse=True):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
            return str(checkpoint)
        except (OSError, ValueError):
            if distributed.is_main():
                print(f"{checkpoint} was cut off while saving; removing it")
                shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def best_epoch(history: list[dict]) -> float | None:
    """The epoch whose dev scores best on the task's main metric: the one a run with keep_best keeps."""
    return max(history, key=lambda h: h[main_of(h)])["epoch"] if history else None


def train_record(trained: Trained, config: TrainConfig) -> dict:
    gpu = {"gpu": torch.cuda.get_device_name()} if device() == "cuda" else {}
    return {"wall_s": trained.wall_s, "device": device(), **gpu, "precision": config.precision,
            "processes": trained.processes, "effective_batch_size": config.batch_size * trained.processes,
            "train_runtime_s": trained.train_runtime_s, "examples_per_s": trained.examples_per_s,
            "step_examples_per_s": trained.step_examples_per_s}


def metrics_fn(names: tuple[str, ...], kind):
    def compute(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return kind.metrics(np.asarray(logits), np.asarray(prediction.label_ids), names)

    return compute
