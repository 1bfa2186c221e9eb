"""The write policy (docs/cli.md, "Where compress writes"): each case of the audit of issue 30.

Inside a workspace compress follows no link; the one path a user may point outside it is a report's
--out, into a folder that already exists, never replacing a file compress did not write.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from compress import api
from compress.errors import UserError
from compress.stages.report import GENERATOR_MARK
from compress.variant import Variant, merge_bench

from conftest import TASK, refused, snapshot


def test_a_report_goes_outside_only_into_a_folder_that_exists(run_cli, ws, tmp_path):
    workspace, _, victim, _ = ws
    deep = tmp_path / "some" / "where" / "new" / "deep" / "r.html"
    refused(run_cli, "--workspace", workspace, "report", "--out", deep, message="does not exist")
    assert not (tmp_path / "some").exists()
    with pytest.raises(UserError, match="does not exist"):
        api.report(workspace, out=deep)
    assert not (tmp_path / "some").exists()

    outside = tmp_path / "out.html"
    code, out, err = run_cli("--workspace", workspace, "report", "--out", outside)
    assert code == 0 and f"report: {outside}" in out, err  # says where it went, as an absolute path
    assert GENERATOR_MARK in outside.read_text()
    code, _, err = run_cli("--workspace", workspace, "report", "--out", outside)  # its own report: replaced
    assert code == 0, err
    (victim / "notes.html").write_text("mine")
    refused(run_cli, "--workspace", workspace, "report", "--out", victim / "notes.html", message="not a report")
    assert (victim / "notes.html").read_text() == "mine"


def test_a_relative_out_is_taken_from_where_the_command_runs(run_cli, ws, monkeypatch):
    workspace, _, _, _ = ws
    monkeypatch.chdir(workspace)
    code, out, err = run_cli("report", "--out", "../escape.html")
    assert code == 0, err
    written = workspace.parent / "escape.html"
    assert f"report: {written}" in out and GENERATOR_MARK in written.read_text()


def test_a_report_is_never_written_through_a_linked_folder(run_cli, ws):
    workspace, _, victim, _ = ws
    (workspace / "reports").mkdir(exist_ok=True)
    (workspace / "reports" / "sub").symlink_to(victim)
    before = snapshot(victim)
    refused(run_cli, "--workspace", workspace, "report", "--out", workspace / "reports" / "sub" / "r.html",
            message="reports/sub in the workspace")
    # nor outside the workspace through a link that leads back into it
    outside_link = victim.parent / "back"
    outside_link.symlink_to(workspace / "reports")
    refused(run_cli, "--workspace", workspace, "report", "--out", outside_link / "r.html",
            message="leads into the workspace")
    assert snapshot(victim) == before


def test_the_default_report_folder_may_not_be_a_link(run_cli, ws):
    workspace, _, victim, _ = ws
    shutil.rmtree(workspace / "reports", ignore_errors=True)
    (workspace / "reports").symlink_to(victim)
    before = snapshot(victim)
    refused(run_cli, "--workspace", workspace, "report", message="reports in the workspace")
    assert snapshot(victim) == before


def test_a_recipe_report_stays_in_the_workspace(run_cli, ws, tmp_path):
    workspace, _, _, task = ws
    recipe = tmp_path / "r.toml"
    head = f'[teacher]\nbase = "x"\nname = "tiny"\ntask = "{task.spec["task"]}"\ntext-column = "sentence"\n'
    recipe.write_text(head + f'[report]\nout = "{tmp_path / "abs.html"}"\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="lies outside the workspace")
    recipe.write_text(head + '[report]\nout = "../r.html"\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="lies outside the workspace")
    recipe.write_text(head + '[report]\nout = "reports/mine.html"\n')
    code, _, err = run_cli("--workspace", workspace, "run", recipe, "--dry-run")
    assert code == 0, err


def test_no_variant_is_written_when_students_is_a_link(run_cli, ws, tmp_path):
    workspace, student, _, task = ws
    elsewhere = tmp_path / "elsewhere" / "students"
    shutil.move(workspace / "students", elsewhere)
    (workspace / "students").symlink_to(elsewhere)
    before = snapshot(elsewhere.parent)
    refused(run_cli, "--workspace", workspace, "quantize", student, "--name", "q1",
            message="students in the workspace")
    refused(run_cli, "--workspace", workspace, "distill", "--teacher", "tiny", "--task", task.spec["task"],
            "--text-column", "sentence", "--layers", "1",
            message="students in the workspace")
    assert snapshot(elsewhere.parent) == before


def test_a_whole_workspace_behind_a_link_is_the_user_s_layout(run_cli, ws, tmp_path):
    """The documented way to use another disk: the workspace itself is the link."""
    workspace, student, _, _ = ws
    link = tmp_path / "on-another-disk"
    link.symlink_to(workspace)
    code, _, err = run_cli("--workspace", link, "quantize", link / student.relative_to(workspace), "--name", "q1")
    assert code == 0, err
    made = Variant.load(workspace / "students" / "tiny" / TASK / "q1")
    assert made.record.parent == f"students/tiny/{TASK}/A"


def test_bench_never_writes_through_a_linked_variant(run_cli, ws, tmp_path):
    workspace, student, _, _ = ws
    outside = shutil.copytree(student, tmp_path / "outside" / "A")
    (student.parent / "A-ext").symlink_to(outside)
    before = snapshot(outside)
    refused(run_cli, "--workspace", workspace, "bench", student.parent / "A-ext", "--shapes", "1x8",
            message=f"students/tiny/{TASK}/A-ext in the workspace")
    assert snapshot(outside) == before
    code, out, err = run_cli("--workspace", workspace, "list")
    assert code == 0 and "A-ext  BROKEN:" in out and "is a link" in out, (out, err)


def test_a_parent_outside_the_workspace_is_refused(run_cli, ws, tmp_path):
    workspace, student, victim, _ = ws
    record = json.loads((student / "variant.json").read_text())
    for parent in (str(victim), "../../../../victim"):
        (student / "variant.json").write_text(json.dumps({**record, "parent": parent}))
        code, out, err = run_cli("--workspace", workspace, "list")
        assert code == 0 and f"students/tiny/{TASK}/A  BROKEN:" in out and "not a place inside" in out, (out, err)
    # an older record (schema 0) may name its parent as typed, but not one outside the workspace
    (student / "variant.json").write_text(json.dumps({**record, "schema": 0, "parent": str(victim)}))
    code, out, err = run_cli("--workspace", workspace, "list")
    assert code == 0 and "parent outside its workspace" in out, (out, err)


def test_init_leaves_no_empty_recipe_when_the_disk_is_full(run_cli, tmp_path, monkeypatch):
    real_write = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.startswith(".recipe.toml."):
            real_write(self, "")  # the temporary file is made, then the disk runs out
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    code, _, err = run_cli("init", tmp_path / "ws")
    assert code == 2 and "No space left on device" in err
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["reports", "students", "teachers"]
    monkeypatch.setattr(Path, "write_text", real_write)
    code, out, err = run_cli("init", tmp_path / "ws")
    assert code == 0 and "left as it is" not in out, err
    assert "[teacher]" in (tmp_path / "ws" / "recipe.toml").read_text()


def test_measurements_accumulate(run_cli, ws):
    workspace, student, _, _ = ws
    for shapes in ("1x8", "1x16", "1x8"):
        code, _, err = run_cli("--workspace", workspace, "bench", student, "--shapes", shapes, "--threads", "1")
        assert code == 0, err
    (entry,) = Variant.load(student).benches.values()
    for runtime in ("ort-cpu", "torch-cpu"):
        assert set(entry["latency_ms"][runtime]) == {"1x8", "1x16"}, entry["latency_ms"]
    replaced = [h for h in entry["history"] if "shape" in h]
    assert sorted((h["runtime"], h["shape"]) for h in replaced) == [("ort-cpu", "1x8"), ("torch-cpu", "1x8")]
    assert all(h["measured_at"] <= entry["latency_ms"]["ort-cpu"]["1x8"]["measured_at"] for h in replaced)
    # another thread count is a measurement of its own
    code, _, err = run_cli("--workspace", workspace, "bench", student, "--shapes", "1x8", "--threads", "2")
    assert code == 0, err
    assert len(Variant.load(student).benches) == 2


def test_merge_keeps_what_a_new_measurement_does_not_cover():
    timing = {"p50": 1.0, "p90": 2.0, "measured_at": "t0"}
    earlier = {"latency_ms": {"ort-cpu": {"1x8": timing, "1x16": timing}}, "dev": {"accuracy": 0.5},
               "accuracy_from": "onnx", "history": []}
    newer = {"latency_ms": {"ort-cpu": {"1x8": {**timing, "p50": 3.0}}, "torch-cpu": {"1x8": timing}},
             "dev": {"accuracy": 0.75}, "accuracy_from": "onnx"}
    merged = merge_bench(earlier, newer)
    assert merged["latency_ms"] == {"ort-cpu": {"1x8": {**timing, "p50": 3.0}, "1x16": timing},
                                    "torch-cpu": {"1x8": timing}}
    assert merged["dev"] == {"accuracy": 0.75}
    assert merged["history"] == [{"runtime": "ort-cpu", "shape": "1x8", **timing},
                                 {"dev": {"accuracy": 0.5}, "accuracy_from": "onnx", "measured_at": None}]


def test_a_full_disk_while_a_variant_is_saved_is_one_line_and_leaves_nothing(run_cli, ws, monkeypatch):
    from safetensors import SafetensorError
    from transformers import PreTrainedModel

    workspace, _, _, task = ws

    real_save = PreTrainedModel.save_pretrained

    def full_disk(self, folder, *args, **kwargs):  # training's checkpoints fit; the variant itself does not
        if not Path(folder).name.startswith(".full."):
            return real_save(self, folder, *args, **kwargs)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 64)  # cut off mid-file
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    students = workspace / "students" / "tiny" / TASK
    before = sorted(p.name for p in students.iterdir())
    code, out, err = run_cli("--workspace", workspace, "distill", "--teacher", "tiny", "--task", task.spec["task"],
                             "--text-column", "sentence", "--layers", "1", "--epochs", "1", "--max-length", "32",
                             "--name", "full")
    assert code == 2 and "Traceback" not in out + err and err.count("compress: error: ") == 1, err
    assert "is full: full did not fit; free space" in err
    # no half-written variant; the training run stays, to resume from once there is room
    assert sorted(p.name for p in students.iterdir()) == sorted([*before, ".full.partial"])


# Found by the hostile pass over this policy: reads through links, a FIFO, a recipe's non-HTML out, init's folder.

def test_a_variant_s_export_or_a_teacher_s_cache_is_not_read_through_a_link(run_cli, ws, tmp_path):
    workspace, student, _, task = ws
    moved = shutil.move(student / "onnx", tmp_path / "onnx-elsewhere")
    (student / "onnx").symlink_to(moved)
    refused(run_cli, "--workspace", workspace, "bench", student, "--shapes", "1x8", message="A/onnx in the workspace")
    teacher = workspace / "teachers" / "tiny" / TASK
    cache = shutil.move(teacher / "soft_targets", tmp_path / "targets-elsewhere")
    (teacher / "soft_targets").symlink_to(cache)
    code, out, err = run_cli("--workspace", workspace, "distill", "--teacher", "tiny", "--task", task.spec["task"],
                             "--text-column", "sentence", "--layers", "1", "--epochs", "1", "--max-length", "32",
                             "--name", "B")
    assert code == 2 and f"teachers/tiny/{TASK}/soft_targets in the workspace" in err, err


def test_a_report_is_never_written_to_a_special_file(run_cli, ws, tmp_path):
    workspace, _, _, _ = ws
    os.mkfifo(tmp_path / "r.html")  # reading it for the report's mark would block forever
    refused(run_cli, "--workspace", workspace, "report", "--out", tmp_path / "r.html", message="a special file")


def test_a_recipe_report_must_be_an_html_file(run_cli, ws, tmp_path):
    workspace, _, _, task = ws
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[teacher]\nbase = "x"\nname = "tiny"\ntask = "{task.spec["task"]}"\n'
                      'text-column = "sentence"\n[report]\nout = 5\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="out '5' is not an .html file")


def test_init_makes_the_workspace_named_by_workspace(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("--workspace", tmp_path / "X", "init")
    assert code == 0, err
    assert (tmp_path / "X" / "recipe.toml").is_file() and not (tmp_path / "recipe.toml").exists()


def test_the_api_replaces_only_when_told_so_with_a_bool(ws):
    workspace, student, _, _ = ws
    made = api.quantize(student, api.QuantizeConfig(), name="B")
    before = (made.path / "variant.json").read_bytes()
    with pytest.raises(UserError, match="replace must be True or False, not 'no'"):
        api.quantize(student, api.QuantizeConfig(), name="B", replace="no")
    assert (made.path / "variant.json").read_bytes() == before
