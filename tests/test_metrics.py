"""GLUE's metrics: CoLA read exactly and judged by Matthews correlation, MRPC by accuracy with F1 beside it."""

import math
from pathlib import Path

import numpy as np
import pytest

from compress.configs import TrainConfig
from compress.data.tasks import COLA_METRICS, load_task
from compress.errors import UserError
from compress.kinds import main_of
from compress.runtime.inference import matthews, task_metrics
from compress.stages import STAGES
from compress.stages.quantize import quantize
from compress.stages.report import build
from compress.stages.teacher import fine_tune
from compress.training.trainer import best_epoch, training_arguments
from compress.variant import main_metric, retention

from conftest import FAST


def test_cola_is_read_exactly(glue_dir):
    task = load_task("cola", str(glue_dir))
    assert (len(task.train), len(task.dev), task.num_labels) == (8551, 1043, 2)
    assert task.metrics == ("mcc", "accuracy") and not task.is_pair
    assert task.train[0] == {"text": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1}
    assert 0.68 < float(np.mean(task.dev["label"])) < 0.70  # 69% acceptable: why accuracy misleads here


def test_a_cola_file_with_a_missing_field_names_its_line(glue_dir, tmp_path):
    folder = tmp_path / "CoLA"
    folder.mkdir()
    (folder / "train.tsv").write_text("gj04\t1\t\tA fine sentence.\ngj04\t0\t*\n")
    (folder / "dev.tsv").write_text("gj04\t1\t\tAnother one.\n")
    with pytest.raises(UserError, match=r"train.tsv line 2: 3 fields, CoLA has 4"):
        load_task("cola", str(tmp_path))


def test_matthews_matches_its_definition():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0, 1])
    predictions = np.array([1, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    tp, tn, fp, fn = 5, 3, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews(predictions, labels, 2) == pytest.approx(expected)
    assert matthews(np.ones(10, dtype=int), labels, 2) == 0.0  # one predicted class: no correlation
    assert matthews(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 2]), 3) == pytest.approx(1.0)
    assert matthews(np.array([1, 0]), np.array([0, 1]), 2) == pytest.approx(-1.0)


def test_the_main_metric_is_mcc_where_measured_else_accuracy():
    logits = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([1, 0, 0, 1])
    cola = task_metrics(logits, labels, ("mcc", "accuracy"))
    mrpc = task_metrics(logits, labels, ("accuracy", "f1"))
    assert main_metric(cola) == "mcc" and main_metric(mrpc) == "accuracy"
    assert cola["accuracy"] == mrpc["accuracy"] == 0.75 and mrpc["f1"] == pytest.approx(0.8)
    assert retention({"mcc": 0.3, "accuracy": 0.8}, {"mcc": 0.6, "accuracy": 0.8}) == pytest.approx(0.5)
    assert retention({"mcc": 0.3, "accuracy": 0.8}, {"mcc": 0.0, "accuracy": 0.7}) is None  # no ratio to a zero


def test_the_best_epoch_is_the_best_by_the_main_metric():
    """CoLA's epochs are kept by MCC, which the issue judges it by: the more accurate epoch here says
    "acceptable" to more sentences and correlates less."""
    cola = [{"epoch": 1.0, "loss": 0.6, "mcc": 0.21, "accuracy": 0.69},
            {"epoch": 2.0, "loss": 0.6, "mcc": 0.17, "accuracy": 0.70}]
    mrpc = [{"epoch": 1.0, "loss": 0.6, "accuracy": 0.80, "f1": 0.87},
            {"epoch": 2.0, "loss": 0.6, "accuracy": 0.79, "f1": 0.88}]
    assert (best_epoch(cola), best_epoch(mrpc), best_epoch([])) == (1.0, 1.0, None)
    assert training_arguments(Path("unused"), TrainConfig(), best_by=main_of(COLA_METRICS)).metric_for_best_model == "mcc"


def test_the_report_plots_and_compares_the_main_metric(trained_teacher, tmp_path):
    import json
    import shutil

    teacher, task = trained_teacher
    copy = shutil.copytree(teacher.path, tmp_path / "ws" / "teachers" / "tiny" / task.name)
    record = json.loads((copy / "variant.json").read_text())
    record["metrics"]["dev"] = {"accuracy": 0.9, "mcc": 0.42}
    (copy / "variant.json").write_text(json.dumps(record))
    context = build(tmp_path / "ws")
    assert context["metric"] == "Matthews correlation x 100"
    assert context["table"][0]["score"] == 0.42


def test_a_cola_variants_int8_drop_is_in_mcc_points(tiny_base, glue_dir, tmp_path):
    """quantize's drop (and --max-drop) is in the main metric, as retention and the search's drop are."""
    folder = tmp_path / "glue" / "CoLA"
    folder.mkdir(parents=True)
    for split, rows in (("train.tsv", 300), ("dev.tsv", 200)):
        (folder / split).write_text("".join((glue_dir / "CoLA" / split).read_text().splitlines(True)[:rows]))
    task = load_task("cola", str(tmp_path / "glue"))
    teacher = fine_tune(str(tiny_base), task, tmp_path / "ws", FAST, name="tiny", progress=False)
    quantized = quantize(teacher)
    metrics = quantized.meta["metrics"]
    assert metrics["drop_metric"] == "mcc"
    assert f"dev mcc {metrics['dev']['mcc']:.4f} ({-metrics['drop_points']:+.2f} points against tiny)" \
        in STAGES["quantize"].line(quantized)
    assert metrics["drop_points"] == pytest.approx(100 * (teacher.meta["metrics"]["dev"]["mcc"] - metrics["dev"]["mcc"]),
                                                   abs=1e-3)
