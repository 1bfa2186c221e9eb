"""The Python API: the docstring's chain, run on the tiny teacher, gives the variants the CLI would."""

import pytest

from compress.api import (
    DistillConfig,
    PruneConfig,
    QuantizeConfig,
    ShareConfig,
    TrainConfig,
    bench,
    distill,
    find_variants,
    prune,
    quantize,
    report,
)
from compress.configs import BenchConfig, ExportConfig
from compress.errors import UserError


def test_the_api_runs_the_chain_from_a_teacher_to_a_report(tiny_teacher):
    teacher, task = tiny_teacher
    training = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, precision="fp32")
    student = distill(teacher, task, DistillConfig(layers=1), training, progress=False)
    pruned = prune(student, PruneConfig(heads=0.5, neurons=0.5), training, progress=False)
    int8 = quantize(pruned, QuantizeConfig(mode="dynamic"))
    measured = bench(int8, [(1, 16)], threads=1)
    page = report(teacher.path.parents[2])
    assert [v.meta["name"] for v in (student, pruned, int8)] == ["L1-kd", "L1-kd-prune-h50n50-taylor",
                                                                "L1-kd-prune-h50n50-taylor-int8-dynamic"]
    assert pruned.meta["structure"]["heads_per_layer"] == [2] and int8.meta["stage"] == "quantize"
    (entry,) = measured.benches.values()
    assert entry["latency_ms"]["ort-cpu"]["1x16"]["p50"] > 0
    assert len(find_variants(teacher.path.parents[2])) == 4 and "L1-kd-prune-h50n50-taylor-int8-dynamic" in page.read_text()


@pytest.mark.parametrize("build, flag", [
    (lambda: TrainConfig(epochs="abc"), "--epochs must be a number"),
    (lambda: TrainConfig(epochs=float("nan")), "--epochs nan is not a finite number"),
    (lambda: TrainConfig(epochs=-1), "--epochs -1 is outside (0, 1000]"),
    (lambda: TrainConfig(batch_size=0), "--batch-size 0 is outside [1, 4096]"),
    (lambda: TrainConfig(batch_size=True), "--batch-size must be an integer, not True"),
    (lambda: TrainConfig(lr=-1), "--lr -1 is outside (0, 1]"),
    (lambda: TrainConfig(precision="bogus"), "--precision must be one of auto, bf16, fp16, fp32, not 'bogus'"),
    (lambda: TrainConfig(seed=-3), "--seed -3 is outside"),
    (lambda: TrainConfig(warmup=-5), "TrainConfig.warmup -5 is outside [0, 1)"),
    (lambda: TrainConfig(weight_decay=-0.1), "TrainConfig.weight_decay -0.1 is outside"),
    (lambda: PruneConfig(heads="half"), "--heads must be a number, not 'half'"),
    (lambda: DistillConfig(kd=1), "--no-kd must be True or False"),
    (lambda: ShareConfig(groups=2.5), "--groups must be an integer"),
    (lambda: QuantizeConfig(calibration=None), "--calibration must be an integer, not None"),
    (lambda: ExportConfig(opset=5), "--opset 5 is outside [14, 21]"),
    (lambda: BenchConfig(threads=100_000), "--threads 100000 is outside [1, "),
])
def test_settings_built_by_hand_are_refused_as_their_flags_are(build, flag):
    with pytest.raises(UserError) as refused:
        build()
    assert flag in str(refused.value) and "\n" not in str(refused.value)


def test_valid_settings_pass_and_auto_precision_is_resolved():
    assert TrainConfig(epochs=1, warmup=0.0).precision in ("bf16", "fp16", "fp32")
    assert BenchConfig(threads=None).threads is None and QuantizeConfig(max_drop=0.5).max_drop == 0.5
