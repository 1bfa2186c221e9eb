"""variant.json as a typed record: old records load, nothing a stage wrote is lost, new ones carry the schema."""

import json

import pytest

from compress.errors import UserError
from compress.variant import SCHEMA, Record, Variant, parent_path, write_record

SCHEMA_0 = {  # as sessions before the schema wrote it: parent as typed, export and measurements inside
    "name": "L1-kd", "stage": "distill", "parent": "/old/place/teachers/tiny/reviews", "teacher": "tiny",
    "task": "reviews", "num_labels": 2, "params": {"max_length": 32, "layers": 1},
    "metrics": {"dev": {"accuracy": 0.75}, "retention": 0.8}, "structure": {"heads_per_layer": [4]},
    "onnx": {"size_mb": 1.5, "optimized": True}, "bench": {"cpu | 1 threads | cpu": {"latency_ms": {"ort-cpu": {"1x8": {"p50": 1.0, "p90": 1.2}}},
                                         "dev": {"accuracy": 0.75}, "machine": {}, "accuracy_from": "onnx"}},
}


def test_a_schema_0_record_loads_and_round_trips(tmp_path):
    folder = tmp_path / "ws" / "students" / "tiny" / "reviews" / "L1-kd"
    folder.mkdir(parents=True)
    (folder / "variant.json").write_text(json.dumps(SCHEMA_0))
    variant = Variant.load(folder)
    record = variant.record
    assert (record.schema, record.name, record.max_length, record.accuracy) == (0, "L1-kd", 32, 0.75)
    assert record.extra == {"structure": {"heads_per_layer": [4]}, "onnx": SCHEMA_0["onnx"], "bench": SCHEMA_0["bench"]}
    assert variant.export == SCHEMA_0["onnx"] and list(variant.benches) == ["cpu | 1 threads | cpu"]
    # absolute, from where the workspace once was: the same place in the workspace it is in now
    assert parent_path(variant) == tmp_path / "ws" / "teachers" / "tiny" / "reviews"
    assert {k: v for k, v in variant.meta.items() if k in SCHEMA_0} == SCHEMA_0


def test_a_new_record_carries_the_schema_and_the_mark(tmp_path):
    written = write_record(tmp_path, {**{k: v for k, v in SCHEMA_0.items() if k not in ("onnx", "bench")},
                                      "parent": "teachers/tiny/reviews"})
    on_disk = json.loads((tmp_path / "variant.json").read_text())
    assert on_disk["schema"] == SCHEMA and on_disk["made_by"] == "compress" and on_disk["command"]
    assert Record.from_json(on_disk) == written.record


@pytest.mark.parametrize("broken, reason", [
    ({**SCHEMA_0, "params": {}}, "'params.max_length' is missing"),
    ({**SCHEMA_0, "metrics": {"dev": {}}}, "'metrics.dev.accuracy' is missing"),
    ({**SCHEMA_0, "name": 3}, "'name' is missing or not a string"),
])
def test_a_record_missing_what_every_stage_needs_is_refused_in_one_line(tmp_path, broken, reason):
    (tmp_path / "variant.json").write_text(json.dumps(broken))
    with pytest.raises(UserError, match=f"is not a variant record: {reason}"):
        Variant.load(tmp_path)


def test_a_derived_record_carries_its_parents_lineage_and_the_stage_keys_win(tmp_path):
    folder = tmp_path / "ws" / "students" / "tiny" / "reviews" / "L1-kd"
    folder.mkdir(parents=True)
    (folder / "variant.json").write_text(json.dumps(SCHEMA_0))
    parent = Variant.load(folder)
    child = Record.derived(parent, name="L1-kd-int8", stage="quantize", params={"max_length": 32},
                           metrics={"dev": {"accuracy": 0.7}})
    assert child["parent"] == "students/tiny/reviews/L1-kd"  # its place in the workspace, not the typed path
    assert (child["teacher"], child["task"], child["num_labels"]) == ("tiny", "reviews", 2)
    assert Record.derived(parent, teacher="other", name="x")["teacher"] == "other"
    written = write_record(tmp_path, child)
    assert (written.record.name, written.record.parent, written.record.accuracy) == (
        "L1-kd-int8", "students/tiny/reviews/L1-kd", 0.7)
    teacher_folder = tmp_path / "ws" / "teachers" / "tiny" / "reviews"
    teacher_folder.mkdir(parents=True)
    (teacher_folder / "variant.json").write_text(json.dumps({**SCHEMA_0, "name": "tiny", "stage": "teacher",
                                                             "parent": None, "teacher": None}))
    assert Record.derived(Variant.load(teacher_folder), name="L1")["teacher"] == "tiny"  # a teacher's child
