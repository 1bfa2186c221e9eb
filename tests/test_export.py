"""Export to ONNX (parity with PyTorch) and quantization (accuracy measured on the artifact)."""

import json
import shutil

import onnx
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DistilBertConfig,
    MPNetConfig,
    RobertaConfig,
)

import compress.runtime.export as export_stage
from compress.configs import DistillConfig, PruneConfig, QuantizeConfig, TrainConfig
from compress.data.batches import encode
from compress.errors import UserError
from compress.runtime import ort as runtime
from compress.runtime.export import export
from compress.stages.distill import distill
from compress.stages.prune import prune
from compress.stages.quantize import quantize
from compress.variant import Variant, parent_path, save_variant

from conftest import CONFIGS, student_dir, student_meta
from test_prune import prune_physically


@pytest.fixture
def teacher_copy(tiny_teacher):
    """The test's own copy of the tiny teacher (export writes into the variant)."""
    return tiny_teacher[0]


def assert_exported(variant: Variant):
    onnx_dir = variant.path / "onnx"
    assert {"model.onnx", "raw.onnx", "config.json", "tokenizer.json"} <= {p.name for p in onnx_dir.iterdir()}
    assert AutoConfig.from_pretrained(onnx_dir).num_labels == 2  # Optimum's layout: config beside model.onnx
    record = Variant.load(variant.path).export
    assert record == json.loads((onnx_dir / "export.json").read_text()) and "onnx" not in variant.meta
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["parity"]["agreement"] == 1.0
    graph = onnx.load(str(onnx_dir / "model.onnx"))
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    return record


def test_export_of_a_teacher_matches_pytorch_and_fuses_attention(teacher_copy):
    record = assert_exported(export(teacher_copy))
    assert record["fused_ops"]["Attention"] == 2  # both layers fused, whichever graph was faster
    assert set(record["latency_probe_ms"]) >= {"raw", "optimized"}


def test_export_of_a_distilled_student(tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    student = distill(teacher, task, DistillConfig(layers=1), TrainConfig(epochs=1, lr=1e-3, batch_size=16,
                      max_length=32, precision="fp32"), name="L1-export", progress=False)
    assert_exported(export(student))


@pytest.mark.parametrize("config", [
    RobertaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2),
    DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_heads=4, n_layers=2),
    MPNetConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2),
], ids=lambda c: c.model_type)
def test_export_parity_for_each_architecture(config, tiny_teacher, tmp_path):
    teacher, _ = tiny_teacher
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(teacher.path)
    variant = save_variant(student_dir(tmp_path, config.model_type), model, tokenizer,
                           student_meta(teacher, config.model_type, 0.5))
    assert_exported(export(variant, optimize=False))


def test_an_export_that_fails_parity_is_refused_and_leaves_nothing(teacher_copy, monkeypatch):
    monkeypatch.setattr(export_stage, "PARITY_ATOL", 0.0)  # no float graph matches exactly: must refuse
    with pytest.raises(UserError, match="export refused: ONNX logits differ from PyTorch"):
        export(teacher_copy, optimize=False)
    assert not (teacher_copy.path / "onnx").exists()
    assert [p.name for p in teacher_copy.path.iterdir() if p.name.startswith(".")] == []
    assert "onnx" not in Variant.load(teacher_copy.path).meta


def dev_accuracy_in_fresh_session(variant: Variant, task) -> float:
    tokenizer = AutoTokenizer.from_pretrained(variant.path)
    logits = runtime.logits(runtime.session(variant.path / variant.meta["artifact"]),
                            encode(task.dev, tokenizer, 32), tokenizer)
    return float((logits.argmax(-1) == torch.tensor(task.dev["label"])).float().mean())


def test_dynamic_int8_runs_in_a_fresh_session_with_its_accuracy_recorded(teacher_copy, tiny_teacher):
    _, task = tiny_teacher
    quantized = quantize(teacher_copy)  # exports first
    assert quantized.path.name == "tiny-int8-dynamic" and parent_path(quantized) == teacher_copy.path
    accuracy = dev_accuracy_in_fresh_session(quantized, task)
    assert quantized.meta["metrics"]["dev"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy >= 0.9
    assert quantized.meta["size_ratio"] < 0.27  # weights and embeddings in int8
    ops = {n.op_type for n in onnx.load(str(quantized.path / "onnx" / "model.onnx")).graph.node}
    assert ops & {"QAttention", "MatMulInteger", "DynamicQuantizeMatMul"}


def fp32_weight_matmuls(variant: Variant) -> list[str]:
    graph = onnx.load(str(variant.path / "onnx" / "model.onnx")).graph
    weights = {init.name for init in graph.initializer}
    return sorted(n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights)


def test_dynamic_int8_can_keep_the_ffn_outputs_in_fp32(teacher_copy, tiny_teacher):
    _, task = tiny_teacher
    assert fp32_weight_matmuls(quantize(teacher_copy)) == []
    kept = quantize(teacher_copy, QuantizeConfig(fp32_ffn_output=True))
    assert kept.path.name == "tiny-int8-dynamic-ffn-fp32" and kept.meta["params"]["fp32_ffn_output"]
    fp32 = fp32_weight_matmuls(kept)
    layers = json.loads((teacher_copy.path / "config.json").read_text())["num_hidden_layers"]
    assert len(fp32) == layers and all("/output/dense/" in n and "attention" not in n for n in fp32), fp32
    assert kept.meta["metrics"]["dev"]["accuracy"] == pytest.approx(dev_accuracy_in_fresh_session(kept, task))


def test_static_int8_and_the_torch_baseline(teacher_copy, tiny_teacher):
    _, task = tiny_teacher
    static = quantize(teacher_copy, QuantizeConfig(mode="static", calibration=32))
    graph = onnx.load(str(static.path / "onnx" / "model.onnx")).graph
    producers = {out: node for node in graph.node for out in node.output}
    dequantized = {t for t, node in producers.items() if node.op_type == "DequantizeLinear"}
    weights = {init.name for init in graph.initializer} | dequantized
    int8 = {n.name: n.input[0] in dequantized for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights}
    fp32 = sorted(name for name, quantized in int8.items() if not quantized)
    # every weight MatMul in int8 but the FFN output projections, which read the GELU's outliers
    layers = json.loads((teacher_copy.path / "config.json").read_text())["num_hidden_layers"]
    assert len(fp32) == layers and all("/output/dense/" in n and "attention" not in n for n in fp32), fp32
    assert sum(int8.values()) == 5 * layers  # q, k, v, attention output and FFN input of each layer
    assert any("word_embeddings" in n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in dequantized)
    assert static.meta["metrics"]["dev"]["accuracy"] == pytest.approx(dev_accuracy_in_fresh_session(static, task))
    baseline = quantize(teacher_copy, QuantizeConfig(backend="torch"))
    assert baseline.path.name == "tiny-torch-int8" and (baseline.path / "model_int8.pt").is_file()
    assert baseline.meta["metrics"]["dev"]["accuracy"] >= 0.9


def test_max_drop_refuses_and_writes_nothing(tiny_base, tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    # An untrained model (chance accuracy) recorded as perfect: its int8 copy must fall far below.
    model = AutoModelForSequenceClassification.from_pretrained(tiny_base)
    variant = save_variant(student_dir(tmp_path, "untrained"), model, AutoTokenizer.from_pretrained(tiny_base),
                           student_meta(teacher, "untrained", 1.0))
    with pytest.raises(UserError, match=r"untrained-int8-dynamic refused: accuracy .* points below .*--max-drop 1"):
        quantize(variant, QuantizeConfig(max_drop=1.0))
    assert sorted(p.name for p in variant.path.parent.iterdir()) == ["untrained"]


def test_corrupt_and_missing_models_are_clear_errors(teacher_copy, tmp_path):
    with pytest.raises(UserError, match="ONNX model not found"):
        runtime.session(tmp_path / "missing.onnx")
    export(teacher_copy, optimize=False)
    model = teacher_copy.path / "onnx" / "model.onnx"
    model.write_bytes(model.read_bytes()[:5000])
    with pytest.raises(UserError, match="cannot load ONNX model"):
        quantize(teacher_copy)
    assert not (teacher_copy.path.parents[2] / "students").exists()


def test_export_and_quantize_commands(run_cli, teacher_copy, tmp_path):
    code, out, err = run_cli("export", teacher_copy.path)
    assert code == 0, err
    assert "parity: max |logit diff|" in out
    code, out, err = run_cli("quantize", teacher_copy.path, "--per-channel")
    assert code == 0, err
    assert "tiny-int8-dynamic-pc" in out
    for args, message in (
        (("export", tmp_path / "nowhere"), "no variant folder"),
        (("quantize", teacher_copy.path, "--mode", "int4"), "Invalid value for '--mode'"),
        (("quantize", teacher_copy.path, "--backend", "torch", "--mode", "static"), "dynamic int8 only"),
        (("quantize", teacher_copy.path, "--mode", "fp16", "--fp32-ffn-output"), "ORT int8 only"),
        (("export", teacher_copy.path, "--opset", "9"), "--opset"),
    ):
        code, _, err = run_cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (args, err)


# int8 file over fp32 file for these tiny models, where the embeddings are most of the weights. ELECTRA's
# are half as wide, so the graph's fixed bytes weigh more; DeBERTa's export holds each query and key
# weight twice: for the tokens (int8) and for the relative-position table, a constant input that ORT's
# dynamic int8 leaves in fp32.
INT8_SIZE_RATIO = {"electra": 0.35, "deberta-v2": 0.4}


@pytest.mark.parametrize("arch", CONFIGS)
def test_pruned_models_export_with_parity_and_quantize(arch, tiny_teacher, tmp_path):
    """Non-uniform heads and widths, a layer without heads and one without FFN neurons."""
    teacher, _ = tiny_teacher
    model = AutoModelForSequenceClassification.from_config(
        CONFIGS[arch].__class__(**{**CONFIGS[arch].to_dict(), "vocab_size": 30522}), attn_implementation="eager")
    prune_physically(model)
    variant = save_variant(student_dir(tmp_path, arch), model, AutoTokenizer.from_pretrained(teacher.path),
                           student_meta(teacher, f"pruned-{arch}", 0.5))
    record = assert_exported(export(variant, optimize=arch in ("bert", "modernbert")))
    if arch == "modernbert":  # the tokenizer's token_type_ids are not an input ModernBERT takes
        assert record["inputs"] == ["input_ids", "attention_mask"]
    if arch == "bert":  # uneven head counts: attention stays unfused, the rest fuses
        assert "Attention" not in record["fused_ops"] and record["fused_ops"]["SkipLayerNormalization"]
    quantized = quantize(variant)
    assert quantized.meta["size_ratio"] < INT8_SIZE_RATIO.get(arch, 0.3)


def test_pruned_model_with_even_layers_keeps_fused_attention(tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    copy = Variant.load(shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name))
    pruned = prune(copy, PruneConfig(heads=0.5, scope="per-layer"), TrainConfig(epochs=0), name="half-heads")
    assert pruned.meta["structure"]["heads_per_layer"] == [2, 2]
    record = assert_exported(export(pruned))
    assert record["fused_ops"]["Attention"] == 2
