"""Reliability across processes: SIGKILL and resume, concurrent writers on one workspace, same seed same result."""

import os
import shutil
import signal
import subprocess
import sys
import time

from compress.configs import DistillConfig, TrainConfig
from compress.stages.distill import distill
from compress.variant import Variant, find_variants
from compress.workspace import partial_dir

from conftest import FAST

STUDENT = ["--layers", "1", "--epochs", "4", "--lr", "1e-3", "--batch-size", "8", "--max-length", "32",
           "--precision", "fp32", "--seed", "3"]


def workspace_with_teacher(tiny_teacher, folder):
    teacher, task = tiny_teacher
    shutil.copytree(teacher.path, folder / "teachers" / "tiny" / task.name)
    return folder, task


def compress(workspace, *args, **kwargs):
    command = [sys.executable, "-m", "compress", "--workspace", str(workspace), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def distill_args(task, name):
    return ["distill", "--teacher", "tiny", "--task", task.spec["task"], "--text-column", "sentence",
            *STUDENT, "--name", name]


def test_sigkill_mid_epoch_then_the_same_command_resumes_to_the_same_result(tiny_teacher, tmp_path):
    workspace, task = workspace_with_teacher(tiny_teacher, tmp_path / "killed")
    checkpoints = partial_dir(workspace / "students" / "tiny" / task.name / "killed") / "checkpoints"
    process = compress(workspace, *distill_args(task, "killed"))
    deadline = time.time() + 300
    while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*/trainer_state.json"))):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # during epoch 2: nothing is cleaned up, nothing is renamed
    process.wait()
    assert not (checkpoints.parent.parent / "killed").exists()

    resumed = compress(workspace, *distill_args(task, "killed"))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming from" in out

    clean_ws, _ = workspace_with_teacher(tiny_teacher, tmp_path / "clean")
    clean = compress(clean_ws, *distill_args(task, "killed"))
    _, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err
    killed_meta = Variant.load(checkpoints.parent.parent / "killed").meta["metrics"]
    clean_meta = Variant.load(clean_ws / "students" / "tiny" / task.name / "killed").meta["metrics"]
    assert killed_meta["history"] == clean_meta["history"] and killed_meta["dev"] == clean_meta["dev"]


def test_two_processes_writing_one_workspace_leave_it_whole(tiny_teacher, tmp_path):
    workspace, task = workspace_with_teacher(tiny_teacher, tmp_path / "ws")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # two students at once, then two quantizations of one student into the same variant name
    first, second = (compress(workspace, *distill_args(task, name), env=env) for name in ("A", "B"))
    for process in (first, second):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    student = workspace / "students" / "tiny" / task.name / "A"
    subprocess.run([sys.executable, "-m", "compress", "--workspace", str(workspace), "export", str(student)],
                   check=True, capture_output=True)
    # two quantizations of one student at once (ORT's scratch files must not collide beside it),
    # then two into one name: one lands, the other says the name is taken and leaves no trace
    writers = [compress(workspace, "quantize", student, *flags, env=env) for flags in ([], ["--per-channel"])]
    for process in writers:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    same_name = [compress(workspace, "quantize", student, "--name", "A-int8", env=env) for _ in range(2)]
    results = [(process.communicate(timeout=600), process.returncode) for process in same_name]
    assert sorted(code for _, code in results) in ([0, 0], [0, 2]), results
    for (_, err), code in results:
        assert code == 0 or ("exists" in err and len(err.strip().splitlines()) == 1), err
    # two benches of one variant at once: both results land in its record
    benches = [compress(workspace, "bench", student, "--threads", threads, "--shapes", "1x8", "--runs", "30", env=env)
               for threads in ("1", "2")]
    for process in benches:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    assert sorted(key.split(" | ")[1] for key in Variant.load(student).benches) == ["1 threads", "2 threads"]
    names = sorted(v.meta["name"] for v in find_variants(workspace))
    assert names == ["A", "A-int8", "A-int8-dynamic", "A-int8-dynamic-pc", "B", "tiny"]
    leftovers = [p for p in (workspace / "students" / "tiny" / task.name).iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not list((student / "onnx").glob("*-inferred.onnx"))
    assert Variant.load(student.parent / "A-int8").meta["metrics"]["dev"]["accuracy"] > 0.5


def test_the_same_seed_gives_identical_metrics(tiny_teacher):
    teacher, task = tiny_teacher
    config = TrainConfig(**{**FAST.as_dict(), "epochs": 2})
    runs = [distill(teacher, task, DistillConfig(layers=1), config, name=f"repro-{i}", progress=False) for i in range(2)]
    first, second = (run.meta["metrics"] for run in runs)
    assert first["history"] == second["history"] and first["dev"] == second["dev"]
