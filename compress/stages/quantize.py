"""Stage: int8 (ORT dynamic, ORT static QDQ, or PyTorch dynamic) and fp16, measured on the artifact.

Each result is a new variant beside its parent (<parent>-int8-dynamic, ...). Accuracy comes from
running the quantized artifact itself on the dev split; --max-drop refuses a variant that loses
more than that many points, and nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import fields
from pathlib import Path

import onnx
import torch

from compress.configs import KD, RECOVERY_TRAINING, QuantizeConfig, TrainConfig
from compress.console import hushed
from compress.data.batches import label_array
from compress.data.tasks import task_of
from compress.errors import UserError, first_line, require
from compress.machine import device
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.runtime import ort as runtime
from compress.runtime.artifacts import torch_int8
from compress.runtime.export import MODEL, RAW, dedupe_initializers, export, needs_export
from compress.runtime.inference import predict_logits
from compress.training.kd import given
from compress.training.recovery import planned_params, trained_with
from compress.variant import Record, Variant, as_variant, derived_dir, main_metric, write_record
from compress.workspace import EXPORT_FILE, ONNX_DIR, atomic_dir, check_target


def default_name(variant: Variant, config: QuantizeConfig) -> str:
    if config.backend == "torch":
        return f"{variant.record.name}-torch-int8"
    ffn = "-ffn-fp32" if config.fp32_ffn_output and config.mode == "dynamic" else ""  # static always keeps them fp32
    kind = "fp16" if config.mode == "fp16" else f"int8-{config.mode}"
    qat = "-qat" if config.qat_epochs else ""
    return f"{variant.record.name}{qat}-{kind}{ffn}" + ("-pc" if config.per_channel else "")


# Tanh: the approximate GELU. The pooler's tanh matches too: its classifier staying fp32 costs nothing.
GELU_OPS = {"Erf", "Gelu", "FastGelu", "BiasGelu", "Tanh"}
ELEMENTWISE_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Cast", "Sqrt"}


def _fed_by_gelu(tensor: str, producers: dict) -> bool:
    """Whether `tensor` is a GELU's output, looking back through elementwise ops only."""
    node = producers.get(tensor)
    if node is None:
        return False
    if node.op_type in GELU_OPS:
        return True
    return node.op_type in ELEMENTWISE_OPS and any(_fed_by_gelu(t, producers) for t in node.input)


def ffn_outputs(model: onnx.ModelProto) -> set[str]:
    """The FFN output projections: the MatMuls with a weight that read a GELU's output.

    The GELU's few large values stretch a per-tensor uint8 range until the rest round to zero.
    Static QDQ's calibrated range suffers most: quantized, these cost a 6-layer MPNet student
    13 points on SST-2 (92.09% -> 78.90%; symmetric int8 activations were worse, 66.9%), so
    static always leaves them in fp32 (0.46 points). Dynamic int8 takes each call's own range
    and loses less (1.72 points on SST-2, but 9.31 on MRPC); --fp32-ffn-output trades some of
    its speed for most of that (0.23 and 1.47 points).
    """
    weights = {init.name for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    return {n.name for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in weights and _fed_by_gelu(n.input[0], producers)}


def _static_nodes(model: onnx.ModelProto) -> list[str]:
    """What static QDQ should quantize: the embedding tables, and the MatMuls with a weight but the FFN outputs.

    Embedding lookups (Gather on a table) cost nothing in accuracy on the MPNet student.
    """
    weights = {init.name for init in model.graph.initializer}
    keep_fp32 = ffn_outputs(model)
    return [n.name for n in model.graph.node
            if (n.op_type == "Gather" and n.input[0] in weights)
            or (n.op_type == "MatMul" and n.input[1] in weights and n.name not in keep_fp32)]


class _Calibration:
    """Feeds N training examples, one at a time, to ORT's calibrator."""

    def __init__(self, encoded, tokenizer, input_names, n: int):
        self.rows = iter(range(min(n, len(encoded))))
        self.encoded, self.tokenizer, self.names = encoded, tokenizer, input_names

    def get_next(self):
        i = next(self.rows, None)
        if i is None:
            return None
        row = self.encoded[i]
        return {k: torch.tensor([row[k]]).numpy() for k in self.names}

    def rewind(self):  # part of ORT's CalibrationDataReader protocol; one pass is all it needs
        pass


def calibration_reader(raw: Path, task, tokenizer, max_length: int, n: int) -> _Calibration:
    """Static int8's calibration data: the first `n` training rows, as the inputs the graph at `raw` takes."""
    rows = task.train.select(range(min(n, len(task.train))))
    return _Calibration(task.encode(rows, tokenizer, max_length), tokenizer, onnx_inputs(raw), n)


@contextlib.contextmanager
def _working_directory(path: Path):
    """ORT's calibrator writes large scratch files into the working directory: keep them in `path`."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def ort_quantize(source: Path, out: Path, scratch: Path, mode: str, per_channel: bool, calibration,
                  fp32_ffn_output: bool) -> None:
    """Quantize the export in `source` into `out`; ORT's scratch files go to `scratch`, never beside the input.

    ORT writes `<model>-inferred.onnx` next to the file it is given, and the static calibrator
    writes into the working directory: both are pointed at `scratch`, the stage's own folder.
    """
    source, out, scratch = source.resolve(), out.resolve(), scratch.resolve()
    # ORT advises pre-processing when a graph lacks its metadata; ours is already optimised by ORT's
    # transformer optimizer (and static mode pre-processes), so the advice is noise
    with hushed(loggers=("",), log_messages=("consider to run pre-processing",)):
        _run_quantizer(source, out, scratch, mode, per_channel, calibration, fp32_ffn_output)
    dedupe_initializers(out)  # shared layers: one quantized copy of each tied weight


def _run_quantizer(source: Path, out: Path, scratch: Path, mode: str, per_channel: bool, calibration,
                   fp32_ffn_output: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode == "dynamic":
        model = scratch / MODEL
        model.symlink_to(source / MODEL)
        exclude = sorted(ffn_outputs(onnx.load(str(model)))) if fp32_ffn_output else []
        quantize_dynamic(model, out, weight_type=QuantType.QInt8, per_channel=per_channel,
                         nodes_to_exclude=exclude, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    elif mode == "static":
        prepared = scratch / "prepared.onnx"
        quant_pre_process(str(source / RAW), str(prepared), skip_symbolic_shape=True)
        nodes = _static_nodes(onnx.load(str(prepared)))
        with _working_directory(scratch):
            quantize_static(str(prepared), str(out), calibration, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                            op_types_to_quantize=["MatMul", "Gather"])
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(source / MODEL)), keep_io_types=True)
        onnx.save(model, str(out))


def quantize(variant: Variant, config: QuantizeConfig = QuantizeConfig(), name: str | None = None,
             replace: bool = False) -> Variant:
    """Quantize `variant` into a new variant and measure its dev accuracy on the artifact itself.

    An existing variant of that name is replaced only with `replace` (--force).
    """
    variant = as_variant(variant)
    require(config, QuantizeConfig, "config")
    check_settings(variant, config)
    name = default_name(variant, config) if name is None else name
    target = derived_dir(variant, name)
    # the drop is in the task's main metric (MCC for CoLA), as the search's, with QAT too from the variant asked
    asked, metric, parent_score = variant, main_metric(variant.record.metrics["dev"]), variant.record.score
    if config.qat_epochs:
        check_target(target, replace, (variant.path,))  # both outputs are checked before QAT trains
        variant = quantization_aware(variant, config, target, replace)
    tokenizer = load_tokenizer(variant.path)
    task = task_of(variant.record)
    max_length = variant.record.params["max_length"]
    dev = task.encode(task.dev, tokenizer, max_length)
    if config.backend == "ort" and needs_export(variant):
        print(f"{variant.path} has no ONNX export yet; exporting it first")
        export(variant)
    if config.backend == "ort":
        runtime.session(variant.path / "onnx" / MODEL)  # a corrupt export fails here, in one line

    with atomic_dir(target, replace, reads=(variant.path,)) as tmp:
        if config.backend == "torch":
            artifact, logits = torch_artifact(variant, tmp, dev, tokenizer)
        else:
            artifact, logits = ort_artifact(variant, config, tmp, task, dev, tokenizer)
        tokenizer.save_pretrained(tmp)
        shutil.copy(variant.path / "config.json", tmp / "config.json")
        metrics = task.scores(logits.numpy(), label_array(dev))
        drop = 100 * (parent_score - metrics[metric])
        if config.max_drop is not None and drop > config.max_drop:
            raise UserError(f"{name} refused: {metric} {metrics[metric]:.4f} is {drop:.2f} points below "
                            f"{asked.record.name}'s {parent_score:.4f} (--max-drop {config.max_drop})")
        parent_size = (variant.export or {}).get("size_mb") if config.backend == "ort" else variant.record.size_mb
        size = round(artifact.stat().st_size / 1e6, 2)
        write_record(tmp, Record.derived(
            variant, name=name, stage="quantize",
            params={"mode": config.mode, "backend": config.backend, "per_channel": config.per_channel,
                    "fp32_ffn_output": config.backend == "ort" and (config.mode == "static" or config.fp32_ffn_output),
                    "calibration": config.calibration if config.mode == "static" else None, "max_length": max_length,
                    "qat_epochs": config.qat_epochs},
            metrics={"dev": metrics, "parent_dev": variant.record.metrics["dev"],
                     "drop_points": round(drop, 3), "drop_metric": metric, "drop_from": asked.record.name},
            artifact=str(artifact.relative_to(tmp)), parameters=variant.record.parameters, size_mb=size,
            size_ratio=round(size / parent_size, 4) if parent_size else None,
        ))
    return Variant.load(target)


def check_settings(variant: Variant, config: QuantizeConfig) -> None:
    """What `config` cannot do to `variant`, refused before anything is trained or written."""
    if variant.is_quantized:
        raise UserError(f"{variant.path} is already quantized ({variant.record.params.get('mode')}): "
                        "quantize the variant it was made from instead")
    if config.backend == "torch" and config.mode != "dynamic":
        raise UserError("--backend torch offers dynamic int8 only")
    if config.mode != "fp16" and device() == "cuda" and config.backend == "ort":
        print("note: int8 runs on ORT's CPU kernels even under the CUDA provider (onnxruntime issue 10267); "
              "use --mode fp16 for the GPU")
    if config.fp32_ffn_output and (config.backend == "torch" or config.mode == "fp16"):
        raise UserError("--fp32-ffn-output applies to ORT int8 only")
    if (kd_flags := given(config)) and not config.qat_epochs:
        raise UserError(f"{', '.join(kd_flags)} set the KD of quantization-aware training: give --qat-epochs too")


def torch_artifact(variant: Variant, tmp: Path, dev, tokenizer) -> tuple[Path, torch.Tensor]:
    """PyTorch dynamic int8 (the baseline) written into `tmp`, and its dev logits."""
    model = torch_int8(load_classifier(variant.path))
    artifact = tmp / "model_int8.pt"
    try:
        torch.save(model.state_dict(), artifact)
    except RuntimeError as exc:  # torch's writer reports a full disk as an internal enforce failure
        raise UserError(f"cannot write {artifact.name}: {first_line(exc)[:200]}; is the disk full?") from None
    return artifact, predict_logits(model, dev, tokenizer)


def ort_artifact(variant: Variant, config: QuantizeConfig, tmp: Path, task, dev, tokenizer) -> tuple[Path, torch.Tensor]:
    """ONNX Runtime's int8 or fp16 graph of `variant`'s export written into `tmp`, with the export's config
    and tokenizer beside it (Optimum's layout), and its dev logits."""
    (tmp / "onnx").mkdir()
    artifact = tmp / "onnx" / MODEL
    reader = calibration_reader(variant.path / ONNX_DIR / RAW, task, tokenizer, variant.record.params["max_length"],
                                config.calibration) if config.mode == "static" else None
    scratch = tmp / ".scratch"
    scratch.mkdir()
    try:
        ort_quantize(variant.path / ONNX_DIR, artifact, scratch, config.mode, config.per_channel, reader,
                     config.fp32_ffn_output)
    except (UserError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT and onnx raise their own types
        cut_off = type(exc).__name__ == "DecodeError"  # onnx's C++ writer does not report a full disk
        raise UserError(f"ONNX Runtime could not quantize {variant.path / ONNX_DIR / MODEL}: "
                        f"{first_line(exc)[:200]}" + ("; a file was cut off: is the disk full?" if cut_off else "")
                        ) from None
    shutil.rmtree(scratch)
    for extra in variant.path.joinpath(ONNX_DIR).iterdir():
        if extra.is_file() and extra.suffix != ".onnx" and extra.name != EXPORT_FILE:
            shutil.copy(extra, tmp / "onnx" / extra.name)
    return artifact, runtime.logits(runtime.session(artifact), dev, tokenizer)


def quantization_aware(variant: Variant, config: QuantizeConfig, target: Path, replace: bool) -> Variant:
    """`variant` recovered by KD while seeing ORT dynamic int8's rounding (compress.training.qat): the variant
    to quantize into `target` instead. Its KD settings are `config`'s, else those `variant` was trained
    with (compress.training.kd). One made before with the same settings is reused unless `replace`; it stays a
    variant of its own even if --max-drop then refuses the int8 artifact."""
    from compress.training import qat

    if config.mode != "dynamic" or config.backend != "ort":
        raise UserError("--qat-epochs simulates ORT dynamic int8: use it with --mode dynamic --backend ort")
    made = derived_dir(variant, qat.default_name(variant))
    if made == target:
        raise UserError(f"--name {target.name} is the name of the QAT variant quantize writes first: choose another")
    kd = KD(**{f.name: getattr(config, f.name) for f in fields(KD)})
    seed = variant.record.params.get("seed")  # QAT continues the variant's training: its seed, not the default
    train = TrainConfig(**{**RECOVERY_TRAINING, "epochs": config.qat_epochs,
                           **({"seed": seed} if seed is not None else {})})
    if made.is_dir() and not replace:
        if not trained_with(made, planned_params(variant, kd, {"per_channel": config.per_channel}, train)):
            raise UserError(f"{made} was trained with other settings (QAT epochs, per channel or KD); "
                            "--force trains it again")
        print(f"{made} exists; quantizing it (--force trains it again)")
        return Variant.load(made)
    check_target(made, replace, (variant.path,))
    return qat.qat(variant, config.per_channel, train, kd, replace=replace)


def onnx_inputs(path: Path) -> list[str]:
    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
