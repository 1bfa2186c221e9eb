"""Regression, the second task kind: GLUE STS-B through every stage on the tiny model, and `compress eval`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compress.configs import DistillConfig, LayerDropConfig, PruneConfig, QuantizeConfig, ShareConfig, TrainConfig
from compress.data.tasks import load_task
from compress.errors import UserError
from compress.kinds import KINDS, ranks
from compress.runtime.export import export
from compress.stages.bench import bench
from compress.stages.distill import distill
from compress.stages.evaluation import evaluate_file
from compress.stages.layerdrop import layerdrop
from compress.stages.prune import prune
from compress.stages.quantize import quantize
from compress.stages.report import build
from compress.stages.share import share
from compress.stages.teacher import fine_tune
from compress.variant import Variant, main_metric, retention

REGRESSION = KINDS["regression"]
FAST = TrainConfig(epochs=2, lr=1e-3, batch_size=16, max_length=32, seed=7, precision="fp32")
ROWS = {"train": 320, "dev": 80, "test": 60}


@pytest.fixture(scope="module")
def stsb_dir(glue_dir, tmp_path_factory):
    """A small STS-B in GLUE's layout: the real files' header and first rows; test.tsv from dev's later rows."""
    root = tmp_path_factory.mktemp("glue")
    (root / "STS-B").mkdir()
    train = (glue_dir / "STS-B" / "train.tsv").read_text(encoding="utf-8").splitlines()
    dev = (glue_dir / "STS-B" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    (root / "STS-B" / "train.tsv").write_text("\n".join(train[:ROWS["train"] + 1]) + "\n")
    (root / "STS-B" / "dev.tsv").write_text("\n".join(dev[:ROWS["dev"] + 1]) + "\n")
    (root / "test.tsv").write_text("\n".join([dev[0], *dev[-ROWS["test"]:]]) + "\n")
    return root


@pytest.fixture(scope="module")
def stsb_teacher(tiny_base, stsb_dir, tmp_path_factory):
    task = load_task("stsb", str(stsb_dir))
    teacher = fine_tune(str(tiny_base), task, tmp_path_factory.mktemp("stsb") / "ws", FAST, name="tiny",
                        progress=False)
    return teacher, task


def test_stsb_is_read_exactly_as_scores(glue_dir):
    task = load_task("stsb", str(glue_dir))
    assert (len(task.train), len(task.dev), task.num_labels, task.kind.name) == (5749, 1500, 1, "regression")
    assert task.is_pair and task.metrics == ("pearson", "spearman")
    assert task.train[0] == {"text": "A plane is taking off.", "label": 5.0, "text_pair": "An air plane is taking off."}
    assert 0 <= min(task.dev["label"]) and max(task.dev["label"]) <= 5


def test_pearson_and_spearman_match_their_definitions():
    labels = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    predictions = np.array([0.1, 0.0, 2.5, 2.5, 10.0, 4.0])  # monotone but for one swap; a tie
    assert ranks(predictions).tolist() == [2, 1, 3.5, 3.5, 6, 5]
    expected = np.corrcoef(ranks(predictions), labels)[0, 1]
    metrics = REGRESSION.metrics(predictions[:, None], labels, ("pearson", "spearman"))
    assert metrics["spearman"] == pytest.approx(expected)
    assert metrics["pearson"] == pytest.approx(np.corrcoef(predictions, labels)[0, 1])
    assert REGRESSION.metrics(np.ones((6, 1)), labels, ("pearson",)) == {"pearson": 0.0}  # constant: no correlation
    assert main_metric(metrics) == "spearman"
    assert retention({"spearman": 0.4}, {"spearman": 0.8, "pearson": 0.9}) == pytest.approx(0.5)


def test_regression_kd_mixes_the_teachers_prediction_and_the_label():
    student, teacher = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[2.0], [2.0], [2.0]])
    labels = torch.tensor([0.0, 3.0, math.nan])  # the last row is augmented: no gold score
    soft = ((1 - 2) ** 2 + 0 + (4 - 2) ** 2) / 3
    hard = ((1 - 0) ** 2 + (2 - 3) ** 2) / 2
    for temperature in (1.0, 5.0):  # no softmax: the temperature changes nothing
        got = REGRESSION.kd_loss(student, teacher, labels, temperature, 0.25)
        assert got.item() == pytest.approx(0.25 * soft + 0.75 * hard)


@pytest.mark.parametrize("content, message", [
    ("sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\thigh\n", r"train.tsv line 3: score 'high' is not a number"),
    ("sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\tnan\n", r"score 'nan' is not a finite number"),
    ("sentence1\tsentence2\tscore\na\tb\t3\nc\td\t3\n", r"every training score is 3.0: there is nothing to learn"),
])
def test_bad_scores_are_one_line(tmp_path, content, message):
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "train.tsv").write_text(content)
    (tmp_path / "STS-B" / "dev.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\n")
    with pytest.raises(UserError, match=message):
        load_task("stsb", str(tmp_path))


def test_classification_only_flags_are_refused_on_a_regression_task(run_cli, stsb_dir, stsb_teacher, tmp_path):
    from conftest import refused

    refused(run_cli, "--workspace", tmp_path, "teacher", "--task", "stsb", "--data-dir", stsb_dir, "--num-labels", "3",
            message="--num-labels counts classes: stsb is a regression task")
    teacher, _ = stsb_teacher
    workspace = teacher.workspace
    refused(run_cli, "--workspace", workspace, "distill", "--teacher", "tiny", "--task", "stsb", "--data-dir", stsb_dir,
            "--layers", "1", "--temperature", "3", "--max-length", "32", message="--temperature softens a softmax")
    assert not (workspace / "students").exists()


def test_stsb_through_every_stage(stsb_teacher, stsb_dir, run_cli):
    teacher, task = stsb_teacher
    assert teacher.meta["data"]["kind"] == "regression" and teacher.meta["num_labels"] == 1
    dev = teacher.meta["metrics"]["dev"]
    assert set(dev) == {"pearson", "spearman"} and dev["spearman"] > 0.1  # it learned something in two epochs
    assert teacher.meta["metrics"]["best_epoch"] == max(teacher.meta["metrics"]["history"],
                                                        key=lambda h: h["spearman"])["epoch"]

    student = distill(teacher, task, DistillConfig(layers=1), FAST, progress=False)
    live = distill(teacher, task, DistillConfig(layers=2, intermediate="hidden,attention"), FAST, progress=False)
    for made in (student, live):
        metrics = made.meta["metrics"]
        assert metrics["retention"] == pytest.approx(metrics["dev"]["spearman"] / metrics["teacher_dev"]["spearman"])
        assert -1 <= metrics["dev"]["teacher_pearson"] <= 1 and "accuracy" not in metrics["dev"]
        assert made.meta["kd"]["temperature"] == {"value": None, "from": "not used by regression"}
        assert made.meta["params"]["temperature"] is None

    recover = TrainConfig(epochs=1, lr=1e-3, batch_size=16, seed=7, precision="fp32")
    pruned = prune(student, PruneConfig(heads=0.5, neurons=0.5), recover, progress=False)
    assert pruned.meta["structure"]["heads_per_layer"] == [2]
    dropped = layerdrop(live, LayerDropConfig(rate=0.5, keep="1"), recover, progress=False)
    assert [v.meta["stage"] for v in dropped] == ["layerdrop", "keep-layers", "keep-layers"]
    shared = share(live, ShareConfig(groups=1), recover, progress=False)
    assert shared.meta["unique_parameters"] < live.meta["unique_parameters"]

    export(student)
    parity = student.export["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and "agreement" not in parity
    int8 = {mode: quantize(student, QuantizeConfig(mode=mode)) for mode in ("dynamic", "static")}
    int8["qat"] = quantize(student, QuantizeConfig(qat_epochs=0.5))
    for variant in int8.values():  # the drop is in Spearman points from the variant asked (QAT's too)
        assert set(variant.meta["metrics"]["dev"]) == {"pearson", "spearman"}
        assert variant.meta["metrics"]["drop_points"] == pytest.approx(
            100 * (student.meta["metrics"]["dev"]["spearman"] - variant.meta["metrics"]["dev"]["spearman"]), abs=1e-3)
    assert int8["qat"].meta["parent"].endswith(f"{student.record.name}-qat")
    for variant in (teacher, student, int8["dynamic"]):
        measured = bench(variant, [(1, 16)], threads=1, runs=30)
        entry = next(iter(measured.benches.values()))
        assert set(entry["dev"]) == {"pearson", "spearman"}
    assert next(iter(int8["dynamic"].benches.values()))["dev"] == int8["dynamic"].meta["metrics"]["dev"]

    code, out, err = run_cli("eval", student.path, "--data", stsb_dir / "test.tsv")
    assert code == 0, err
    (recorded,) = Variant.load(student.path).evaluations
    assert recorded["rows"] == ROWS["test"] and recorded["scored_by"] == "onnx (model.onnx)"
    assert f"spearman {recorded['metrics']['spearman']:.4f}" in out

    context = build(teacher.workspace, "stsb")
    assert context["metric"] == "Spearman correlation x 100"
    row = next(r for r in context["table"] if r["name"] == student.record.name)
    assert row["evaluations"][0]["score"] == recorded["metrics"]["spearman"]
    code, out, err = run_cli("--workspace", teacher.workspace, "report", "--task", "stsb")
    assert code == 0, err


def test_augmented_rows_of_a_regression_task_have_no_score(stsb_dir):
    from compress.data.augment import with_rows

    task = load_task("stsb", str(stsb_dir))
    bigger = with_rows(task, {"text": ["a new one"], "text_pair": ["its pair"]})
    assert len(bigger.train) == len(task.train) + 1 and math.isnan(bigger.train[-1]["label"])
    assert bigger.train[0]["label"] == task.train[0]["label"] == 5.0


def test_eval_scores_a_classifier_on_a_held_out_file_and_refuses_bad_files(run_cli, tiny_teacher, tmp_path):
    from conftest import refused, write_learnable_csv

    teacher, task = tiny_teacher
    held_out = write_learnable_csv(tmp_path / "held-out.csv", 50, seed=5)
    code, out, err = run_cli("eval", teacher.path, "--data", held_out)
    assert code == 0, err
    (recorded,) = Variant.load(teacher.path).evaluations
    assert recorded["rows"] == 50 and recorded["scored_by"] == "pytorch fp32 (cpu)" and recorded["kind"] == "classification"
    assert set(recorded["metrics"]) == {"accuracy", "f1"} and f"accuracy {recorded['metrics']['accuracy']:.4f}" in out
    assert list((teacher.path / "eval").iterdir()) == [teacher.path / "eval" / f"held-out-{recorded['fingerprint'][:16]}.json"]
    made = teacher.made
    assert evaluate_file(teacher, held_out)["metrics"] == recorded["metrics"]  # the same file again: the same entry
    assert len(Variant.load(teacher.path).evaluations) == 1 and Variant.load(teacher.path).made == made

    (tmp_path / "bad.csv").write_text("sentence,label\ngood film,1\nbad film,two\n")
    refused(run_cli, "eval", teacher.path, "--data", tmp_path / "bad.csv",
            message="bad.csv line 3: label 'two' is not an integer class id")
    (tmp_path / "unseen.csv").write_text("sentence,label\ngood film,1\nbad film,7\n")
    refused(run_cli, "eval", teacher.path, "--data", tmp_path / "unseen.csv",
            message="label 7 is not one of the model's classes (0 to 1)")
    refused(run_cli, "eval", teacher.path, "--data", tmp_path / "missing.csv", message="data file not found")
    dev = tmp_path / "dev.csv"
    dev.write_text("sentence,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in task.dev))
    refused(run_cli, "eval", teacher.path, "--data", dev, message="holds the dev rows")
    assert len(Variant.load(teacher.path).evaluations) == 1
