"""Stage: LayerDrop (Fan et al. 2019): distil with whole layers dropped at random, then keep a subset.

Trained with structured dropout of layers, a model survives losing some of them, so a shallower
one can be cut out afterwards without retraining ("every other layer" works best in the paper).
It is applied while distilling from the teacher: fairseq notes that LayerDrop at fine-tuning
alone helps less. HF encoders have no LayerDrop, so each layer's forward is wrapped; in eval mode
(and in export) every kept layer runs.

One command makes three variants beside the parent:
  <name>-full      the parent after KD training with LayerDrop, all layers (reusable for any cut);
  <name>           that model cut to the kept layers, not trained further;
  <name>-baseline  the parent cut to the same layers, recovered by KD for the same epochs.
"""

from __future__ import annotations

import contextlib

import torch

from compress.configs import LayerDropConfig, TrainConfig
from compress.errors import UserError
from compress.model.arch import encoder_layers, keep_layers, layer_id_list, layout, select_layers
from compress.model.checkpoint import load_classifier, load_config
from compress.training.distillation import choose_kd, train_student
from compress.training.recovery import kd_for, planned_params, recovery_setup, shrink, stage_inputs, trained_with
from compress.variant import Variant, derived_dir
from compress.workspace import check_target


def kept_layers(depth: int, keep: str) -> list[int]:
    """Layer ids to keep: every other one (0, 2, ...), N evenly spread, or a list."""
    if keep == "every-other":
        ids = list(range(0, depth, 2))
    elif keep.isdigit():
        if not 1 <= int(keep) <= depth:
            raise UserError(f"--keep {keep} is impossible: the variant has {depth} layers (choose 1 to {depth})")
        ids = select_layers(depth, int(keep), "alternate")
    elif "," in keep:
        ids = layer_id_list(keep, "--keep", depth)
    else:
        raise UserError(f"--keep must be every-other, a count N or layer ids like 0,2,4, not '{keep}'")
    if len(ids) == depth:
        raise UserError(f"--keep {keep} keeps all {depth} layers: nothing would be dropped")
    return ids


class DropSchedule:
    """Seeded draws of which layers to skip in each training forward pass; `log` keeps them."""

    def __init__(self, depth: int, rate: float, seed: int):
        self.depth, self.rate = depth, rate
        self.generator = torch.Generator().manual_seed(seed)
        self.current: list[bool] = [False] * depth
        self.log: list[list[int]] = []

    def draw(self, model, args, kwargs) -> None:  # forward pre-hook of the whole model
        if model.training and self.rate > 0:
            self.current = (torch.rand(self.depth, generator=self.generator) < self.rate).tolist()
            self.log.append([i for i, drop in enumerate(self.current) if drop])
        else:
            self.current = [False] * self.depth


class DroppableForward:
    """A layer's forward that returns its input unchanged when the schedule drops the layer."""

    def __init__(self, layer, index: int, schedule: DropSchedule, returns_tuple: bool):
        self.forward, self.layer, self.index = layer.forward, layer, index
        self.schedule, self.returns_tuple = schedule, returns_tuple

    def __call__(self, hidden_states, *args, **kwargs):
        if self.layer.training and self.schedule.current[self.index]:
            return (hidden_states, None) if self.returns_tuple else hidden_states  # (states, attention)
        return self.forward(hidden_states, *args, **kwargs)


@contextlib.contextmanager
def layer_drop(model, rate: float, seed: int):
    """Within the block, training forward passes skip each layer with probability `rate`."""
    layers = encoder_layers(model)
    schedule = DropSchedule(len(layers), rate, seed)
    returns_tuple = layout(model.config).returns_tuple
    for i, layer in enumerate(layers):
        layer.forward = DroppableForward(layer, i, schedule, returns_tuple)
    handle = model.register_forward_pre_hook(schedule.draw, with_kwargs=True)
    try:
        yield schedule
    finally:
        handle.remove()
        for layer in layers:
            del layer.forward


def default_name(variant: Variant, config: LayerDropConfig) -> str:
    return f"{variant.record.name}-ld{round(100 * config.rate)}-keep-{config.keep.strip(',').replace(',', '_')}"


def layerdrop(variant: Variant, config: LayerDropConfig, train_config: TrainConfig, name: str | None = None,
              baseline: bool = True, progress: bool = True, replace: bool = False) -> list[Variant]:
    """Train `variant` with LayerDrop by KD, cut it to the kept layers; and the baseline. Returns the variants.

    The LayerDrop-trained model does not depend on the cut: one trained with the same settings is
    reused for another --keep, unless `replace` (--force) asks to train it again.
    """
    variant = stage_inputs(variant, config, LayerDropConfig, train_config)
    keep = kept_layers(load_config(variant.path).num_hidden_layers, config.keep)
    task, teacher, train_config = recovery_setup(variant, train_config)
    name = default_name(variant, config) if name is None else name
    full_name = f"{variant.record.name}-ld{round(100 * config.rate)}-full"
    targets = {"full": derived_dir(variant, full_name), "cut": derived_dir(variant, name)}
    if baseline:
        targets["baseline"] = derived_dir(variant, f"{name}-baseline")
    full_params = planned_params(variant, config, {k: v for k, v in config.as_dict().items() if k != "keep"},
                                 train_config)
    reuse_full = not replace and trained_with(targets["full"], full_params)
    for key, target in targets.items():
        if not (key == "full" and reuse_full):
            check_target(target, replace, (variant.path,))
    params = {**config.as_dict(), "kept_layers": keep}

    if reuse_full:
        print(f"reusing {targets['full']}: trained with LayerDrop at the same settings")
        full = Variant.load(targets["full"])
    else:
        model = load_classifier(variant.path)
        chosen = choose_kd(config, variant, model, load_config(teacher.path).num_hidden_layers, train_config.seed)
        with layer_drop(model, config.rate, train_config.seed):
            full = train_student(model, teacher, task, kd_for(model, chosen[0]), train_config, variant,
                                 targets["full"], meta={"name": full_name, "stage": "layerdrop", "params": full_params},
                                 chosen=chosen, progress=progress, replace=replace)

    def cut(model, *_) -> dict:
        keep_layers(model, keep)
        return {}

    untrained = TrainConfig(**{**train_config.as_dict(), "epochs": 0})
    made = [full, shrink(full, "keep-layers", name, cut, config, params, untrained, progress, replace)]
    if baseline:  # a --layer-map names the variant's layers: each kept layer keeps its own
        made.append(shrink(variant, "keep-layers", f"{name}-baseline", cut, config, {**params, "rate": 0.0},
                           train_config, progress, replace))
    return made
