"""Stage: export a variant to ONNX under its onnx/ folder, optimised where that is faster, parity-checked.

The TorchScript exporter (dynamo=False) of an eager-attention model writes one file whose
attention ORT's transformer optimizer can fuse. The optimised graph is kept only if it is at
least as fast, timed against the plain one in alternating rounds.
The folder follows Optimum's layout: model.onnx beside config.json and the tokenizer.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import statistics
from collections import Counter
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from compress.configs import ExportConfig
from compress.console import hushed
from compress.data.tasks import task_of
from compress.errors import UserError
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.model.structure import STRUCTURE_KEY
from compress.runtime import ort as runtime
from compress.runtime.inference import predict_logits
from compress.runtime.latency import alternating
from compress.variant import Variant, as_variant
from compress.workspace import EXPORT_FILE, ONNX_DIR, atomic_dir, inside, write_json

PARITY_ATOL = 1e-4
FUSED_OPS = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu")
RAW, MODEL = "raw.onnx", "model.onnx"  # the plain export (static quantization starts there), the kept graph


def _torch_export(model, tokenizer, path: Path, opset: int, outputs: tuple[str, ...] = ("logits",)) -> list[str]:
    """Export with the tokenizer's inputs that the model takes (ModernBERT takes no token_type_ids), its
    outputs named `outputs` (the task kind's: an embedder's graph ends in the pooled, normalised embedding;
    a reader's gives its stacked logits, then start and end logits apart); a tagger's or a reader's
    logits (one row per token) vary along the sequence too."""
    takes = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
             if n in tokenizer.model_input_names and n in takes]
    sample = tokenizer(["a sample sentence to trace the graph with"] * 2, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad():
        per_token = model(**{n: sample[n] for n in names}).logits.dim() == 3
    # the tracer's notes on shape-dependent branches and mask indexing: the parity check tests the graph
    with hushed(categories=(torch.jit.TracerWarning,), messages=("Exporting aten::index operator",)):
        torch.onnx.export(
            model, (), str(path), kwargs={n: sample[n] for n in names}, input_names=names, output_names=list(outputs),
            dynamic_axes={**axes, **{o: axes[names[0]] if per_token else {0: "batch"} for o in outputs}},
            opset_version=opset,
            dynamo=False,
        )
    return names


def _optimize(raw: Path, out: Path, config) -> dict:
    """ORT's transformer fusions; returns how many fused nodes of each kind the graph now has.

    The optimizer cannot detect head counts on this exporter's graph, and a wrong count fuses
    attention wrongly, so it is told them: the config's for uniform models, the kept count and
    width for pruned models whose layers all kept the same number of heads. Pruned models with
    uneven layers keep unfused attention (num_heads=0); every other fusion still applies.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    num_heads, width = config.num_attention_heads, config.hidden_size
    structure = getattr(config, STRUCTURE_KEY, None)
    if structure:
        counts = {len(heads) for heads in structure["heads"] if heads}
        num_heads = counts.pop() if len(counts) == 1 else 0
        width = num_heads * structure["head_size"]
    # num_heads 0 means unfused attention is intended: the fusion's "Failed to detect num_heads" is noise; and
    # the attention width it is told differs from the input width on purpose when heads were pruned
    with hushed(loggers=("fusion_attention",), log_messages=("Failed to detect num_heads",  # ORT names it so
                                                             "Input hidden size")):
        optimized = optimize_model(str(raw), model_type="bert", num_heads=num_heads, hidden_size=width)
    optimized.save_model_to_file(str(out))
    ops = Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    return {op: ops[op] for op in FUSED_OPS if ops[op]}


def _probe(graphs: dict[str, Path], rounds: int = 5, runs: int = 8) -> dict:
    """Median 1x128 latency of each graph over `rounds` alternating rounds of `runs` each (with one
    block of runs per graph, a slow spell on shared cores decided which graph was kept)."""
    rounds_ms = alternating({name: runtime.session(path) for name, path in graphs.items()}, 1, 128, rounds, runs)
    return {**{name: round(statistics.median(ms), 2) for name, ms in rounds_ms.items()},
            "shape": "1x128", "rounds": rounds, "runs": runs}


def dedupe_initializers(path: Path) -> int:
    """Keep one initializer per distinct tensor and point every use at it; returns how many went.

    Tied (shared) layers export as one tensor each, but ORT's fusions (a concatenated QKV weight
    per layer) and quantization copy them per layer again. Without this a shared model's file
    would not shrink with its unique parameters. Equal values compute equally, so it is safe
    for any graph.
    """
    model = onnx.load(str(path))
    graph = model.graph
    inputs = {i.name for i in graph.input}
    first, rename, kept = {}, {}, []
    for tensor in graph.initializer:
        digest = hashlib.sha1(numpy_helper.to_array(tensor).tobytes()).hexdigest()
        key = (tensor.data_type, tuple(tensor.dims), digest)
        if key in first and tensor.name not in inputs:
            rename[tensor.name] = first[key]
        else:
            first.setdefault(key, tensor.name)
            kept.append(tensor)
    if rename:
        for node in graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = rename.get(name, name)
        del graph.initializer[:]
        graph.initializer.extend(kept)
        onnx.save(model, str(path))
    return len(rename)


def parity(model, sess, encoded, tokenizer, kind) -> dict:
    """PyTorch fp32 against ORT on every row, as the task's kind compares outputs: max |difference|,
    and for classifiers argmax agreement off knife edges."""
    return kind.parity(predict_logits(model, encoded, tokenizer), runtime.logits(sess, encoded, tokenizer), PARITY_ATOL)


def write_graphs(model, tokenizer, folder: Path, opset: int = ExportConfig.opset,
                 optimize: bool = ExportConfig.optimize, outputs: tuple[str, ...] = ("logits",)) -> dict:
    """Write folder/raw.onnx and folder/model.onnx, the faster of the plain and the optimised graph;
    returns how (opset, inputs, outputs, fusions, the timings behind the choice). `compress search` times
    random-weight candidates built by this same function."""
    inputs = _torch_export(model, tokenizer, folder / RAW, opset, outputs)
    record = {"opset": opset, "inputs": inputs, "outputs": list(outputs), "optimized": False}
    if optimize:
        fused = _optimize(folder / RAW, folder / "optimized.onnx", model.config)
        dedupe_initializers(folder / "optimized.onnx")
        probe = _probe({"raw": folder / RAW, "optimized": folder / "optimized.onnx"})
        keep = probe["optimized"] <= probe["raw"]
        record.update(optimized=keep, fused_ops=fused, latency_probe_ms=probe)
        if keep:
            (folder / "optimized.onnx").rename(folder / MODEL)
        else:
            (folder / "optimized.onnx").unlink()
    if not (folder / MODEL).exists():
        shutil.copyfile(folder / RAW, folder / MODEL)
    return record


def needs_export(variant: Variant) -> bool:
    """Whether `variant` must be exported before ONNX Runtime can run it: it has no artifact of its own (int8,
    fp16) and no complete export (the record and the graph). The one place that decides "export first"."""
    return "artifact" not in variant.record.extra and (
        variant.export is None or not (variant.path / ONNX_DIR / MODEL).is_file())


def export(variant: Variant, opset: int = ExportConfig.opset, optimize: bool = ExportConfig.optimize) -> Variant:
    """Write variant/onnx/ (replacing an earlier export) with its record, onnx/export.json: the
    fusion, the timings behind the graph kept, and the parity check."""
    variant = as_variant(variant)
    ExportConfig(opset=opset, optimize=optimize)  # checks them as the flags are checked
    if variant.is_quantized:
        raise UserError(f"{variant.path} is quantized: its ONNX file is its artifact; export the variant it was made from")
    inside(variant.workspace, variant.path / ONNX_DIR)  # it writes into the variant: only into one in a workspace
    tokenizer = load_tokenizer(variant.path)
    model = load_classifier(variant.path, attn_implementation="eager").eval()
    task = task_of(variant.record)
    dev = task.encode(task.dev, tokenizer, variant.record.params["max_length"])
    with atomic_dir(variant.path / ONNX_DIR, replace=True) as tmp:
        record = write_graphs(model, tokenizer, tmp, opset, optimize, task.kind.outputs)
        check = parity(model, runtime.session(tmp / MODEL), dev, tokenizer, task.kind)
        if check["max_abs_diff"] > PARITY_ATOL or check.get("disagreements_off_ties") \
                or check.get("min_cosine", 1.0) < 1 - PARITY_ATOL:
            raise UserError(
                f"export refused: ONNX {task.kind.outputs[0]} differ from PyTorch by up to {check['max_abs_diff']:.2e} "
                f"(limit {PARITY_ATOL:.0e})" + (f" and disagree on {check['disagreements_off_ties']} dev rows"
                                                 if "disagreements_off_ties" in check else "")
                + (f", cosine down to {check['min_cosine']:.6f}" if "min_cosine" in check else "")
            )
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record.update(parity=check, size_mb=round((tmp / MODEL).stat().st_size / 1e6, 2))
        write_json(tmp / EXPORT_FILE, record)
    return variant
