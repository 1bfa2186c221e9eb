"""Never lose a user's data: names that cannot escape the workspace, writes that cannot destroy.

Each case is a reproduction from the audit: run the command, expect exit 2 with one line on
stderr (or the stated success), and check by hashing that nothing outside the stage's own
output changed, neither in the workspace nor in a folder beside it.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress.configs import DistillConfig, TrainConfig
from compress.errors import UserError
from compress.stages.distill import distill
from compress.training.trainer import resume_point
from compress.variant import Variant
from compress.workspace import HOST, check_name, partial_dir

from conftest import TASK, refused, snapshot


@pytest.mark.parametrize("name", ["/tmp/victim", ".", "..", "../../../../x", "a/b", ".hidden", "x" * 101, "a b"])
def test_quantize_refuses_a_name_that_is_not_one_safe_folder_name(run_cli, ws, name):
    workspace, student, victim, _ = ws
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, "quantize", student, "--name", str(victim) if name == "/tmp/victim" else name,
            message="is not a valid name")
    assert snapshot(workspace, victim) == before


def test_every_verb_checks_its_names_before_anything_runs(run_cli, ws, tmp_path):
    workspace, student, victim, task = ws
    before = snapshot(workspace, victim)
    data = ["--task", task.spec["task"], "--text-column", "sentence"]
    for args in (
        ["teacher", "--base", "minilm-l6", "--name", "../../x", *data],
        ["distill", "--teacher", "tiny", "--name", str(tmp_path / "x"), *data],
        ["distill", "--teacher", "../tiny", *data],
        ["prune", student, "--heads", "0.5", "--name", "../x"],
        ["share", student, "--groups", "1", "--name", ".."],
        ["layerdrop", student, "--name", "/tmp/x"],
    ):
        refused(run_cli, "--workspace", workspace, *args, message="is not a valid name")
    assert snapshot(workspace, victim) == before


@pytest.mark.parametrize("stage", ['name = "../../../../x"', 'name = "a/b"', 'from = "teacher"\nname = "."'])
def test_recipes_refuse_unsafe_stage_names(run_cli, ws, tmp_path, stage):
    workspace, _, victim, task = ws
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[teacher]\nbase = "x"\nname = "tiny"\ntask = "{task.spec["task"]}"\ntext-column = "sentence"\n'
                      f'[[stages]]\nverb = "quantize"\nfrom = "teacher"\n' + stage.replace('from = "teacher"\n', "") + "\n")
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="is not a valid name")
    recipe.write_text(f'[teacher]\nbase = "x"\nname = "../t"\ntask = "{task.spec["task"]}"\ntext-column = "sentence"\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="is not a valid name")
    assert snapshot(workspace, victim) == before


def test_a_name_may_not_be_the_input_variant_itself(run_cli, ws):
    workspace, student, victim, _ = ws
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, "quantize", student, "--name", "A", "--force",
            message="--name A is the name of the variant it is made from")
    assert snapshot(workspace, victim) == before


def test_a_folder_compress_did_not_make_is_never_replaced(run_cli, ws):
    workspace, student, victim, _ = ws
    mine = student.parent / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, "quantize", student, "--name", "mine",
            message="exists and is not a variant compress made")
    refused(run_cli, "--workspace", workspace, "quantize", student, "--name", "mine", "--force",
            message="compress did not make it")
    assert snapshot(workspace, victim) == before


def test_force_replaces_a_variant_compress_made_and_leaves_nothing_aside(run_cli, ws):
    workspace, student, victim, _ = ws
    code, _, err = run_cli("--workspace", workspace, "quantize", student, "--name", "A-q")
    assert code == 0, err
    code, out, _ = run_cli("--workspace", workspace, "quantize", student, "--name", "A-q")
    assert code == 0 and "exists" in out and "--force" in out
    first = Variant.load(student.parent / "A-q").meta["command"]
    code, _, err = run_cli("--workspace", workspace, "quantize", student, "--name", "A-q", "--per-channel", "--force")
    assert code == 0, err
    replaced = Variant.load(student.parent / "A-q")
    assert replaced.meta["params"]["per_channel"] and replaced.meta["command"] != first
    assert [p.name for p in student.parent.iterdir() if p.name.startswith(".")] == []


def test_quantize_leaves_its_input_untouched_and_refuses_an_int8_input(run_cli, ws):
    workspace, student, victim, _ = ws
    before = snapshot(student, victim)
    code, _, err = run_cli("--workspace", workspace, "quantize", student)
    assert code == 0, err
    assert snapshot(student, victim) == before  # ORT's scratch model-inferred.onnx went to the stage's own folder
    refused(run_cli, "--workspace", workspace, "quantize", student.parent / "A-int8-dynamic",
            message="is already quantized (dynamic): quantize the variant it was made from instead")
    refused(run_cli, "--workspace", workspace, "prune", student.parent / "A-int8-dynamic", "--heads", "0.5",
            message="is a quantized artifact, not a trainable model")


def test_stale_temporary_files_of_dead_processes_are_removed_by_the_next_run(run_cli, ws):
    workspace, student, _, _ = ws
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dir = student.parent / f".A-int8-dynamic.{HOST}-{dead.pid}-0123abcd.tmp"
    stale_file = student / f".variant.json.{HOST}-{dead.pid}-0123abcd.tmp"
    alive_dir = student.parent / f".other.{HOST}-{os.getpid()}-0123abcd.tmp"  # ours: in use
    for folder in (stale_dir, alive_dir):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    stale_file.write_text("{")
    code, _, err = run_cli("--workspace", workspace, "quantize", student)
    assert code == 0, err
    run_cli("--workspace", workspace, "bench", student, "--shapes", "1x8", "--runs", "30")
    assert not stale_dir.exists() and not stale_file.exists() and alive_dir.exists()


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step, complete in ((3, True), (6, True), (9, False)):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (checkpoints / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')  # truncated: a full disk
    assert resume_point(checkpoints) == str(checkpoints / "checkpoint-3")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-3"]
    assert resume_point(tmp_path / "none") is None


def test_a_kill_while_saving_a_checkpoint_does_not_wedge_the_stage(ws, monkeypatch):
    from transformers import Trainer

    workspace, _, _, task = ws
    teacher = Variant.load(workspace / "teachers" / "tiny" / TASK)
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=16, max_length=32, seed=3, precision="fp32")
    straight = distill(teacher, task, DistillConfig(layers=1), config, name="straight", progress=False)
    real_save = Trainer._save_optimizer_and_scheduler
    saves = []

    def killed_in_second_save(self, *args, **kwargs):  # the model is written, trainer_state.json is not
        saves.append(self.state.global_step)
        if len(saves) == 2:
            raise KeyboardInterrupt
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", killed_in_second_save)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, task, DistillConfig(layers=1), config, name="killed", progress=False)
    partial = partial_dir(straight.path.with_name("killed"))
    assert len(list((partial / "checkpoints").iterdir())) == 2  # one complete, one cut off
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", real_save)
    resumed = distill(teacher, task, DistillConfig(layers=1), config, name="killed", progress=False)
    assert resumed.meta["metrics"]["history"] == straight.meta["metrics"]["history"]
    assert not partial.exists()


def test_a_full_disk_during_training_is_one_line_and_leaves_no_partial_run(run_cli, ws, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without errno (55 lines from save_pretrained before)."""
    from collections import namedtuple

    from transformers import Trainer

    import compress.training.trainer

    workspace, _, _, task = ws

    def disk_full(self, *args, **kwargs):  # the optimizer state cut off, as on a full tmpfs
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 7819904 vs 7819792")

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", disk_full)
    monkeypatch.setattr(compress.training.trainer.shutil, "disk_usage", lambda _: namedtuple("Usage", "total used free")(1, 1, 0))
    code, out, err = run_cli("--workspace", workspace, "distill", "--teacher", "tiny", "--task", task.spec["task"],
                             "--text-column", "sentence", "--layers", "1", "--epochs", "1", "--max-length", "32",
                             "--name", "full")
    assert code == 2 and "Traceback" not in out + err and err.count("compress: error: ") == 1, err
    (error,) = re.findall(r"compress: error: [^\r\n]*", err)  # among the progress bars' lines
    assert "is full: a training checkpoint did not fit (" in error, error
    assert not partial_dir(workspace / "students" / "tiny" / TASK / "full").exists()


@pytest.mark.parametrize("args, message", [
    (["share", "{student}"], "Missing option '--groups'"),
    (["search", "--teacher", "tiny", "--task", "{task}", "--text-column", "sentence"], "Missing option '--budget-ms'"),
    (["bench", "{student}", "--threads", "100000"], "--threads"),
    (["bench", "{student}", "--shapes", "100000x8"], "shape 100000x8 is out of range"),
    (["quantize", "{student}", "--name", ""], "--name '' is not a valid name"),
    (["teacher", "--base", "{student}", "--name", ""], "--name '' is not a valid name"),
    (["prune", "{student}", "--layers", "0,0"], "--layers 0,0 names a layer twice"),
    (["distill", "--teacher", "tiny", "--task", "{task}", "--text-column", "label"], "names the label column"),
])
def test_missing_and_unbounded_flags_are_one_line(run_cli, ws, args, message):
    workspace, student, victim, task = ws
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, *(a.format(student=student, task=task.spec["task"]) for a in args),
            message=message)
    assert snapshot(workspace, victim) == before


def test_force_starts_training_afresh(ws, capsys):
    workspace, _, _, task = ws
    teacher = Variant.load(workspace / "teachers" / "tiny" / TASK)
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, seed=3, precision="fp32")
    target = workspace / "students" / "tiny" / TASK / "fresh"
    stale = partial_dir(target) / "checkpoints" / "checkpoint-1"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    distill(teacher, task, DistillConfig(layers=1), config, name="fresh", progress=False, replace=True)
    assert "resuming" not in capsys.readouterr().out and not partial_dir(target).exists()


def test_wrong_data_is_refused_in_one_line(run_cli, ws, tmp_path):
    workspace, student, victim, task = ws
    (tmp_path / "one-class.csv").write_text("sentence,label\n" + "a film,1\n" * 20)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(task.spec["task"], other / Path(task.spec["task"]).name)
    with open(other / Path(task.spec["task"]).name, "a") as f:
        f.write("a dev row,1\nan extra training row,1\n")
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, "teacher", "--base", "minilm-l6", "--task", tmp_path / "one-class.csv",
            "--text-column", "sentence", message="training has one class only")
    refused(run_cli, "--workspace", workspace, "distill", "--teacher", "tiny", "--task", other / Path(task.spec["task"]).name,
            "--text-column", "sentence", "--layers", "1", message="was fine-tuned on other reviews data")
    refused(run_cli, "--workspace", workspace, "prune", student, "--heads", "0.999",
            message="--heads 0.999 would remove all 4 attention heads of the model")
    assert snapshot(workspace, victim) == before


def test_corrupt_files_in_a_variant_are_one_line(run_cli, ws):
    workspace, student, victim, _ = ws
    for broken, message in (("config.json", "config.json' is not a valid JSON file"),
                            ("tokenizer.json", "cannot load a tokenizer from")):
        (student / broken).write_text("{not json")
        refused(run_cli, "--workspace", workspace, "quantize", student, "--name", "q", message=message)
        refused(run_cli, "--workspace", workspace, "bench", student, message=message)
        shutil.copy(workspace / "teachers" / "tiny" / TASK / broken, student / broken)


@pytest.mark.parametrize("record, reason", [
    ("[1, 2]", "it holds a list, not an object"),
    ('{"name": "A"}', "'stage' is missing or not a string"),
])
def test_a_broken_record_is_listed_as_broken_and_the_rest_still_shown(run_cli, ws, record, reason):
    workspace, student, _, _ = ws
    (student / "variant.json").write_text(record)
    code, out, err = run_cli("--workspace", workspace, "list")
    assert code == 0, err
    assert "teachers/tiny/reviews" in out and f"students/tiny/{TASK}/A  BROKEN:" in out and reason in out
    refused(run_cli, "--workspace", workspace, "quantize", student, message=f"is not a variant record: {reason}")


def test_a_recipe_whose_stages_are_not_tables_is_one_line(run_cli, ws, tmp_path):
    workspace, _, _, _ = ws
    recipe = tmp_path / "r.toml"
    recipe.write_text('stages = [1, 2]\n[teacher]\nbase = "minilm-l6"\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, message="a stage is a table")


def test_dry_run_checks_bench_and_report_values(run_cli, ws, tmp_path):
    workspace, _, _, task = ws
    recipe = tmp_path / "r.toml"
    head = f'[teacher]\nbase = "x"\nname = "tiny"\ntask = "{task.spec["task"]}"\ntext-column = "sentence"\n'
    recipe.write_text(head + '[bench]\nshapes = "1x0"\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="shape 1x0 is out of range")
    recipe.write_text(head + '[bench]\nthreads = 0\n')
    refused(run_cli, "--workspace", workspace, "run", recipe, "--dry-run", message="--threads")


def test_an_os_error_is_one_line(run_cli, ws, monkeypatch):
    """A read-only workspace (root ignores permissions here, so the error is raised where the write happens)."""
    workspace, student, victim, _ = ws
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(workspace)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    before = snapshot(workspace, victim)
    refused(run_cli, "--workspace", workspace, "quantize", student, message="Read-only file system: ")
    assert snapshot(workspace, victim) == before


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(ws):
    workspace, student, _, _ = ws
    before = snapshot(workspace)
    # 1 MB per file: the int8 model (several MB) cannot be written; Python ignores SIGXFSZ, so write() fails
    command = f"ulimit -f 1024; exec {sys.executable} -m compress --workspace {workspace} quantize {student}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("compress: error: "), result.stderr
    assert "is the disk full?" in lines[0] or "File too large" in lines[0], lines[0]
    assert snapshot(workspace) == before


def test_a_torch_int8_variant_benches_from_any_directory(run_cli, ws, tmp_path, monkeypatch):
    workspace, student, _, _ = ws
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("--workspace", "ws", "quantize", Path("ws") / student.relative_to(workspace), "--backend", "torch")
    assert code == 0, err
    quantized = student.parent / "A-torch-int8"
    assert Variant.load(quantized).meta["parent"] == f"students/tiny/{TASK}/A"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli("bench", quantized, "--shapes", "1x8", "--runs", "30")
    assert code == 0, err


@pytest.mark.parametrize("name", ["A", "L6-kd", "a.b_c-1", "_x"])
def test_ordinary_names_pass(name):
    assert check_name(name) == name


# Found by a hostile review of the first version: links inside a variant, variants outside any
# workspace, hand-edited records and measurement files, and recipe keys that move a stage's output.

def test_links_inside_a_variant_are_never_written_through(run_cli, ws):
    workspace, student, victim, task = ws
    (student / "bench").symlink_to(victim)
    teacher = Variant.load(workspace / "teachers" / "tiny" / TASK)
    shutil.rmtree(teacher.path / "soft_targets")
    (teacher.path / "soft_targets").symlink_to(victim)
    before = snapshot(victim)
    refused(run_cli, "--workspace", workspace, "bench", student, "--shapes", "1x8", message="is a link")
    from compress.training.targets import soft_targets

    with pytest.raises(UserError, match="is a link"):
        soft_targets(teacher, task, max_length=16)
    assert snapshot(victim) == before


def test_a_variant_outside_any_workspace_or_behind_a_link_is_not_written_into(run_cli, ws, tmp_path):
    workspace, student, victim, _ = ws
    stray = shutil.copytree(student, tmp_path / "stray" / "A")
    shutil.rmtree(stray / "onnx")
    (student.parent / "link").symlink_to(stray)
    before = snapshot(stray, victim)
    for target, message in ((stray, "is not in a workspace"), (student.parent / "link", "is a link")):
        refused(run_cli, "--workspace", workspace, "export", target, message=message)
        refused(run_cli, "--workspace", workspace, "bench", target, "--shapes", "1x8", message=message)
    assert snapshot(stray, victim) == before


def test_export_never_replaces_an_onnx_folder_compress_did_not_write(run_cli, ws):
    workspace, student, _, _ = ws
    shutil.rmtree(student / "onnx")
    (student / "onnx").mkdir()
    (student / "onnx" / "my_model.onnx").write_text("mine")
    refused(run_cli, "--workspace", workspace, "export", student, message="compress did not make it")
    assert (student / "onnx" / "my_model.onnx").read_text() == "mine"


def test_init_does_not_write_through_a_dangling_link(run_cli, tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "recipe.toml").symlink_to(tmp_path / "elsewhere.toml")
    code, out, _ = run_cli("init", tmp_path / "ws")
    assert code == 0 and "left as it is" in out and not (tmp_path / "elsewhere.toml").exists()


@pytest.mark.parametrize("field, value", [("parameters", [1]), ("size_mb", "big"), ("parent", ["x"]), ("data", "x"),
                                          ("params", {"max_length": -5}), ("params", {"max_length": 10**9}),
                                          ("num_labels", True)])
def test_a_record_with_a_wrong_type_is_listed_as_broken(run_cli, ws, field, value):
    workspace, student, _, _ = ws
    record = json.loads((student / "variant.json").read_text())
    (student / "variant.json").write_text(json.dumps({**record, field: value}))
    code, out, err = run_cli("--workspace", workspace, "list")
    assert code == 0 and f"students/tiny/{TASK}/A  BROKEN:" in out, (out, err)
    refused(run_cli, "--workspace", workspace, "quantize", student, message="is not a variant record")


def test_a_data_spec_that_loads_no_task_is_one_line(run_cli, ws):
    workspace, student, _, _ = ws
    record = json.loads((student / "variant.json").read_text())
    (student / "variant.json").write_text(json.dumps({**record, "data": {**record["data"], "spec": {"foo": 1}}}))
    refused(run_cli, "--workspace", workspace, "bench", student, "--shapes", "1x8", message="cannot load a task")


def test_malformed_measurement_and_export_files_are_skipped_not_fatal(run_cli, ws):
    workspace, student, _, _ = ws
    code, _, err = run_cli("--workspace", workspace, "bench", student, "--shapes", "1x8", "--threads", "1")
    assert code == 0, err
    (good,) = (student / "bench").iterdir()
    (student / "bench" / "bad.json").write_text(json.dumps({"key": "x | 1 threads | cpu", "latency_ms": []}))
    code, out, err = run_cli("--workspace", workspace, "list")
    assert code == 0 and "skipping" in err and "bad.json" in err, (out, err)
    assert list(Variant.load(student).benches) == [json.loads(good.read_text())["key"]]  # the good one stays
    (student / "onnx" / "export.json").write_text(json.dumps({"size_mb": "x"}))
    assert Variant.load(student).export is None
    code, _, err = run_cli("--workspace", workspace, "report")
    assert code == 0, err


def test_a_config_field_of_the_wrong_type_is_one_line(run_cli, ws):
    workspace, student, _, _ = ws
    config = json.loads((student / "config.json").read_text())
    (student / "config.json").write_text(json.dumps({**config, "num_hidden_layers": "x"}))
    refused(run_cli, "--workspace", workspace, "bench", student, "--shapes", "1x8", message="cannot load a model config")


def test_infinite_or_nan_numbers_are_refused(run_cli, ws):
    workspace, student, _, task = ws
    for value, message in (("inf", "inf is not in the range 0<=x<=1000"), ("nan", "nan is not a finite number")):
        refused(run_cli, "--workspace", workspace, "prune", student, "--heads", "0.5", "--recover-epochs", value,
                message=message)
        refused(run_cli, "--workspace", workspace, "distill", "--teacher", "tiny", "--task", task.spec["task"],
                "--text-column", "sentence", "--epochs", value, message=message)
    assert not list((student.parent).glob(".*partial"))


def test_a_recipe_stage_cannot_move_its_output_or_force_itself(run_cli, ws, tmp_path):
    workspace, _, _, task = ws
    head = f'[teacher]\nbase = "x"\nname = "tiny"\ntask = "{task.spec["task"]}"\ntext-column = "sentence"\n'
    for stage, message in (('teacher = "t2"', "teacher cannot be set per stage"),
                           (f'task = "{task.spec["task"]}"', "task cannot be set per stage"),
                           ("force = true", "unknown parameter 'force'")):
        (tmp_path / "r.toml").write_text(head + f'[[stages]]\nverb = "distill"\nname = "mm"\n{stage}\n')
        refused(run_cli, "--workspace", workspace, "run", tmp_path / "r.toml", "--dry-run", message=message)


def test_distill_refuses_a_max_length_beyond_the_teacher_s_positions(run_cli, ws):
    workspace, _, _, task = ws  # the tiny teacher has 128 positions
    refused(run_cli, "--workspace", workspace, "distill", "--teacher", "tiny", "--task", task.spec["task"],
            "--text-column", "sentence", "--layers", "1", "--max-length", "200", "--name", "long",
            message="--max-length 200 is outside what this model takes")
    assert not (workspace / "students" / "tiny" / TASK / ".long.partial").exists()
