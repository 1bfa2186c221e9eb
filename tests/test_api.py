"""The Python API: the docstring's chain, run on the tiny teacher, gives the variants the CLI would."""

from compress.api import (
    DistillConfig,
    PruneConfig,
    QuantizeConfig,
    TrainConfig,
    bench,
    distill,
    find_variants,
    prune,
    quantize,
    report,
)


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
