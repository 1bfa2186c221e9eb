"""Quantization-aware recovery: its simulated rounding is ORT dynamic int8's, it applies in training
only, and `quantize --qat-epochs` makes the QAT variant and its int8 artifact."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification

from compress.configs import QuantizeConfig
from compress.stages.distill import distill
from compress.stages.quantize import quantize
from compress.training.qat import int8_linear, simulate_int8

from conftest import CONFIGS, FAST


@pytest.mark.parametrize("per_channel", [False, True])
def test_simulated_rounding_matches_ort_dynamic_int8(tmp_path, per_channel):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 24)
    with torch.no_grad():
        linear.weight[3] *= 8  # a row with a wider range: per-channel scales differ from the tensor's
    x = torch.randn(2, 5, 48) * 3 + 1  # an asymmetric range, as GELU outputs have
    fp32 = tmp_path / "linear.onnx"
    torch.onnx.export(linear, (x,), str(fp32), input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    int8 = tmp_path / "linear-int8.onnx"
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=per_channel)
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in onnx.load(str(int8)).graph.node)
    ort_out = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        simulated = int8_linear(linear, x, per_channel).numpy()
        exact = linear(x).numpy()
    rounding = np.abs(exact - ort_out).max()
    assert rounding > 1e-3  # int8 does change the result...
    assert np.abs(simulated - ort_out).max() < 1e-4 * np.abs(ort_out).max()  # ...exactly as simulated


def test_int8_rounding_applies_in_training_only_and_lets_gradients_through():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(CONFIGS["bert"])
    ids = torch.randint(5, 100, (2, 8))
    model.eval()
    before = model(input_ids=ids).logits
    assert simulate_int8(model, per_channel=False) == 6 * 6  # q, k, v, attention out, FFN in and out per layer
    assert torch.equal(model(input_ids=ids).logits, before)  # evaluation stays fp32
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    rounded = model(input_ids=ids).logits
    assert not torch.allclose(rounded, before, atol=1e-4)
    rounded.sum().backward()
    weight = model.bert.encoder.layer[0].attention.self.query.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0  # straight through the rounding
    assert set(model.state_dict()) == set(AutoModelForSequenceClassification.from_config(CONFIGS["bert"]).state_dict())


def test_quantize_with_qat_makes_the_qat_variant_then_its_int8_artifact(tiny_teacher):
    teacher, task = tiny_teacher
    from compress.configs import DistillConfig

    student = distill(teacher, task, DistillConfig(layers=1), FAST, progress=False)
    int8 = quantize(student, QuantizeConfig(qat_epochs=1))
    assert int8.path.name == "L1-kd-qat-int8-dynamic"
    qat = int8.path.parent / "L1-kd-qat"
    assert int8.meta["parent"].endswith("students/tiny/reviews/L1-kd-qat")
    assert (qat / "variant.json").is_file() and (int8.path / "onnx" / "model.onnx").is_file()
    from compress.variant import Variant

    made = Variant.load(qat).meta
    assert made["stage"] == "qat" and made["parent"].endswith("L1-kd") and made["qat"]["simulated_linear_layers"] == 6
    assert 0.0 <= int8.meta["metrics"]["dev"]["accuracy"] <= 1.0
    assert int8.meta["params"]["qat_epochs"] == 1 and int8.meta["metrics"]["drop_from"] == "L1-kd"
    for config, says in ((QuantizeConfig(qat_epochs=2), "trained with other settings"),
                         (QuantizeConfig(qat_epochs=1, mode="static"), "--mode dynamic"),
                         (QuantizeConfig(qat_epochs=1, backend="torch"), "--mode dynamic --backend ort")):
        from compress.errors import UserError

        with pytest.raises(UserError, match=says):
            quantize(student, config, name="never")
        assert not (student.path.parent / "never").exists()


def test_qat_trains_with_the_students_kd_and_a_flag_overrides_it(tiny_teacher):
    from compress.configs import DistillConfig, TrainConfig
    from compress.variant import Variant

    teacher, task = tiny_teacher
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, seed=1, precision="fp32")
    student = distill(teacher, task, DistillConfig(layers=1, intermediate="hidden", augment=1, temperature=3.0),
                      config, progress=False)
    quantize(student, QuantizeConfig(qat_epochs=0.5, alpha=0.8))
    made = Variant.load(student.path.parent / f"{student.path.name}-qat").meta
    assert made["kd"]["intermediate"] == {"value": "hidden", "from": "inherited", "variant": student.path.name}
    assert made["kd"]["temperature"]["value"] == 3.0 and made["kd"]["alpha"] == {"value": 0.8, "from": "given"}
    assert made["layer_map"] == [0] and made["augmentation"]["per_example"] == 1  # it trained with them
    assert made["params"]["seed"] == 1  # and with the student's seed
    from compress.errors import UserError

    with pytest.raises(UserError, match="trained with other settings"):  # other KD: not the QAT variant made
        quantize(student, QuantizeConfig(qat_epochs=0.5, alpha=0.6), name="never")
    with pytest.raises(UserError, match="--temperature set the KD of quantization-aware training: give --qat-epochs"):
        quantize(student, QuantizeConfig(temperature=4.0), name="never")
    assert not (student.path.parent / "never").exists()


def test_quantize_checks_both_names_before_qat_trains(run_cli, tiny_teacher, monkeypatch):
    teacher, task = tiny_teacher
    from compress.configs import DistillConfig
    from compress.training import qat as stage

    student = distill(teacher, task, DistillConfig(layers=1), FAST, progress=False)
    monkeypatch.setattr(stage, "shrink", lambda *a, **k: pytest.fail("QAT trained before the names were checked"))
    code, _, err = run_cli("quantize", student.path, "--qat-epochs", "1", "--name", "L1-kd-qat")
    assert code == 2 and err.strip() == ("compress: error: --name L1-kd-qat is the name of the QAT variant quantize "
                                         "writes first: choose another")
    assert not (student.path.parent / "L1-kd-qat").exists()
    taken = student.path.parent / "taken"
    taken.mkdir()  # not a variant compress made
    code, _, err = run_cli("quantize", student.path, "--qat-epochs", "1", "--name", "taken", "--force")
    assert code == 2 and "compress did not make it" in err
    assert not (student.path.parent / "L1-kd-qat").exists()
