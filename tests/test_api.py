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
    export,
    find_variants,
    fine_tune,
    layerdrop,
    load_task,
    prune,
    quantize,
    report,
    share,
)
from compress.configs import BenchConfig, ExportConfig
from compress.errors import UserError

from conftest import write_recipe


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
    (lambda: TrainConfig(epochs=-1), "--epochs -1 is outside [0, 1000]"),
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


def test_api_arguments_of_the_wrong_kind_are_one_line_and_nothing_is_written(tiny_teacher, tiny_base):
    teacher, task = tiny_teacher
    workspace = teacher.path.parents[2]
    before = sorted(workspace.rglob("*"))
    training = TrainConfig(epochs=1, max_length=32, precision="fp32")
    calls = [
        (lambda: distill(teacher, None, DistillConfig(layers=1), training), "task must be a Task, not NoneType"),
        (lambda: distill(teacher, task, DistillConfig(layers=1), {"epochs": 1}), "config must be a TrainConfig"),
        (lambda: distill(teacher, task, DistillConfig(layers=1), training, name=""), "--name '' is not a valid name"),
        (lambda: prune(123, PruneConfig(heads=0.5), training), "variant must be a Variant or the path of its folder"),
        (lambda: prune(teacher, "heads=0.5", training), "config must be a PruneConfig, not str"),
        (lambda: prune(str(workspace / "nowhere"), PruneConfig(heads=0.5), training), "is not a variant"),
        (lambda: share(teacher, ShareConfig(groups=1), None), "train_config must be a TrainConfig"),
        (lambda: layerdrop(teacher, PruneConfig(heads=0.5), training), "config must be a LayerDropConfig"),
        (lambda: quantize(teacher, QuantizeConfig(), name=""), "--name '' is not a valid name"),
        (lambda: bench(teacher, [(0, 128)]), "shape 0x128 is out of range"),
        (lambda: bench(teacher, "100000x8"), "shape 100000x8 is out of range"),
        (lambda: bench(teacher, [128]), "is not a (batch, sequence) pair"),
        (lambda: export(teacher, opset=5), "--opset 5 is outside [14, 21]"),
        (lambda: load_task(task.spec["task"], text_column=123), "text_column must be a str or None, not int"),
        (lambda: load_task(task.spec["task"], text_column="label"), "names the label column 'label'"),
        (lambda: fine_tune(str(tiny_base), task, 42, training), "workspace must be a str or PathLike"),
        (lambda: fine_tune(str(tiny_base), task, workspace, TrainConfig(epochs=0)), "a teacher must be trained"),
        (lambda: report(workspace, task=3), "task must be a str or None"),
    ]
    for call, message in calls:
        with pytest.raises(UserError) as refused:
            call()
        assert message in str(refused.value) and "\n" not in str(refused.value), (message, str(refused.value))
    assert sorted(workspace.rglob("*")) == before  # not a folder, not a .partial


def test_the_api_takes_paths_as_str_and_shapes_as_the_flag_text(tiny_teacher):
    teacher, _ = tiny_teacher
    workspace = str(teacher.path.parents[2])
    untrained = TrainConfig(epochs=0, max_length=32, precision="fp32")
    pruned = prune(str(teacher.path), PruneConfig(heads=0.5), untrained, progress=False)
    measured = bench(str(pruned.path), "1x16", threads=1)
    (entry,) = measured.benches.values()
    assert list(entry["latency_ms"]["torch-cpu"]) == ["1x16"]
    assert len(find_variants(workspace)) == 2 and report(workspace).is_file()


RUN_AND_SEARCH = """
import sys
from pathlib import Path
from compress import api

workspace, csv, base = map(Path, sys.argv[1:])
variants = api.run(workspace / "recipe.toml", workspace=workspace)
task = api.TaskConfig(task=str(csv), text_column="sentence")
train = api.TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, precision="fp32")
config = api.SearchConfig(budget_ms=1000, trials=1, depths="1", heads="1", ffn="1", precisions="fp32", shape="1x16",
                          recover_epochs=0, proxy_examples=32, runs=30)
record = api.search("tiny", task, config, train, workspace=workspace)
print("RESULT", [v.record.stage for v in variants], record["winner"]["candidate"], "click" in sys.modules)
"""


def test_a_recipe_and_a_search_run_through_the_api_without_the_command_line(tmp_path, tiny_base, learnable_csv):
    import subprocess
    import sys
    from pathlib import Path

    workspace = tmp_path / "ws"
    workspace.mkdir()
    write_recipe(workspace / "recipe.toml", tiny_base, learnable_csv, shrink=False)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", RUN_AND_SEARCH, str(workspace), str(learnable_csv), str(tiny_base)],
                            capture_output=True, text=True, timeout=900, cwd=root,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    assert "RESULT ['teacher', 'distill'] L1-h4-f128-fp32 False" in result.stdout, result.stdout
    assert "$ compress distill --teacher tiny" in result.stdout and "winner L1-h4-f128-fp32" in result.stdout
    assert (workspace / "search-reviews-1000ms.toml").is_file()
